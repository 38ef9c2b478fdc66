"""Sampled step-by-step solutions: n samples per problem, through `posttrain.core.generation`.

Every (problem, sample index) pair is one row, and a row's tokens depend only on the
model, its rendered prompt, the sampling params, the seed and its sample index (its
own RNG; batches hold samples of one prompt, without padding). So a run is
reproducible for the same seed and thread count whatever the batch size, and with a
cache directory only rows not sampled before are generated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from posttrain.core.generation import Sampling
from posttrain.reason import prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SamplingConfig(Sampling):
    """Sampling plus how many samples per problem and rows per batch. No defaults: every
    value comes from params.yaml (reason.*) through the stage."""
    n_samples: int
    batch_size: int

    def __post_init__(self):
        super().__post_init__()
        if self.n_samples < 1 or self.batch_size < 1:
            raise ValueError("n_samples and batch_size must be >= 1")


def load_model(ref):
    """(model, tokenizer) for generation: any model reference `posttrain.core.models` takes
    (the base_models folder, an asset, a hub id), tokenizer padded on the left."""
    from posttrain.core.models import load_source

    model, tokenizer = load_source(str(ref))
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    model.eval()
    return model, tokenizer


def open_cache(cache_dir, model_ref):
    """The generation cache of `model_ref` (keyed by its bytes) under `cache_dir`."""
    from posttrain.core.generation import GenerationCache
    from posttrain.core.fingerprint import model_key

    return GenerationCache(cache_dir, model_key(str(model_ref)))


def generate(model, tokenizer, problems: list[dict], cfg: SamplingConfig, *, cache=None,
             progress: bool = True) -> tuple[list[dict], dict]:
    """Sample `cfg.n_samples` solutions per problem. Returns the sample records in problem
    order then sample index ({id, problem_id, sample_idx, domain, source, text,
    prompt_tokens, completion_tokens}) and {rows, generated, cache_hits, generated_tokens}.
    `cache` (`open_cache`) keeps every sample for later runs."""
    from posttrain.core.generation import Row, generate_rows

    texts = [prompts.render(tokenizer, p) for p in problems]
    ids = [tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    rows = [Row(texts[i], ids[i], s) for i in range(len(problems)) for s in range(cfg.n_samples)]
    log.info("%d problems x %d samples = %d rows (max_new_tokens=%d, %s)", len(problems), cfg.n_samples,
             len(rows), cfg.max_new_tokens,
             f"T={cfg.temperature}, top_p={cfg.top_p}" if cfg.temperature > 0 else "greedy")
    outs, stats = generate_rows(model, tokenizer, rows, cfg, batch_size=cfg.batch_size, cache=cache,
                                progress=progress, desc="reason_generate")
    samples = []
    for i, p in enumerate(problems):
        for s in range(cfg.n_samples):
            o = outs[i * cfg.n_samples + s]
            samples.append({"id": f"{p['id']}/{s}", "problem_id": p["id"], "sample_idx": s,
                            "domain": p["domain"], "source": p["source"], "text": o["text"],
                            "prompt_tokens": len(ids[i]), "completion_tokens": o["completion_tokens"]})
    return samples, stats


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
