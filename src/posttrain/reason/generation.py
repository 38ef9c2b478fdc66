"""Batched sampling of step-by-step solutions: n samples per problem.

Every (problem, sample index) pair is one row; rows are ordered by prompt length
(less padding per batch), cut into batches of `batch_size` and generated with left
padding. The RNG is reseeded from (seed, batch number) before each batch, so a run
is reproducible on CPU for the same seed and batch size, whatever ran before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from posttrain.reason import prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    # No defaults: every value comes from params.yaml (reason.*) through the stage.
    n_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    seed: int

    def __post_init__(self):
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("n_samples, batch_size and max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


def load_model(ref):
    """(model, tokenizer) for generation: any model reference `posttrain.core.models` takes
    (the base_models folder, an asset, a hub id), tokenizer padded on the left."""
    from posttrain.core.models import load_source

    model, tokenizer = load_source(str(ref))
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    model.eval()
    return model, tokenizer


def _completion_length(ids: list[int], eos_ids: set[int]) -> int:
    """Generated tokens up to and including the first end-of-turn token (padding excluded)."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return i + 1
    return len(ids)


def generate(model, tokenizer, problems: list[dict], cfg: SamplingConfig, progress: bool = True) -> list[dict]:
    """Sample `cfg.n_samples` solutions per problem. Returns sample records in problem
    order then sample index: {id, problem_id, sample_idx, domain, source, text,
    prompt_tokens, completion_tokens}."""
    import torch
    from tqdm.auto import tqdm

    texts = [prompts.render(tokenizer, p) for p in problems]
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = sorted(((i, s) for i in range(len(problems)) for s in range(cfg.n_samples)),
                  key=lambda r: (len(enc[r[0]]), r))
    eos = tokenizer.eos_token_id
    gen_kwargs = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=eos)
    if cfg.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    else:
        gen_kwargs.update(do_sample=False)
    eos_ids = {eos} if isinstance(eos, int) else set(eos)

    out: dict[tuple[int, int], dict] = {}
    batches = [rows[k:k + cfg.batch_size] for k in range(0, len(rows), cfg.batch_size)]
    log.info("%d problems x %d samples = %d rows in %d batches (max_new_tokens=%d, %s)",
             len(problems), cfg.n_samples, len(rows), len(batches), cfg.max_new_tokens,
             f"T={cfg.temperature}, top_p={cfg.top_p}" if cfg.temperature > 0 else "greedy")
    bar = tqdm(batches, desc="reason_generate", unit="batch", disable=not progress)
    for b, batch in enumerate(bar):
        feats = tokenizer.pad({"input_ids": [enc[i] for i, _ in batch]}, return_tensors="pt")
        torch.manual_seed(cfg.seed * 1_000_003 + b)
        with torch.no_grad():
            seqs = model.generate(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"],
                                  **gen_kwargs)
        width = feats["input_ids"].shape[1]
        for (i, s), row in zip(batch, seqs[:, width:].tolist()):
            n = _completion_length(row, eos_ids)
            p = problems[i]
            out[(i, s)] = {
                "id": f"{p['id']}/{s}", "problem_id": p["id"], "sample_idx": s,
                "domain": p["domain"], "source": p["source"],
                "text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(),
                "prompt_tokens": len(enc[i]), "completion_tokens": n,
            }
    return [out[k] for k in sorted(out)]


def summarize(samples: list[dict]) -> dict:
    """Token and sample counts for the generate metrics."""
    n = len(samples)
    comp = [s["completion_tokens"] for s in samples]
    by_domain: dict[str, int] = {}
    for s in samples:
        by_domain[s["domain"]] = by_domain.get(s["domain"], 0) + 1
    return {
        "n_samples": n, "n_problems": len({s["problem_id"] for s in samples}),
        "samples_by_domain": by_domain,
        "prompt_tokens": sum(s["prompt_tokens"] for s in samples),
        "completion_tokens": sum(comp),
        "mean_completion_tokens": round(sum(comp) / n, 2) if n else 0.0,
        "max_completion_tokens": max(comp, default=0),
    }
