"""Sampling completions row by row, with a cache of what was already sampled.

A row is (prompt, sample index). Its tokens depend only on the model, the prompt,
the sampling params, the seed and the sample index, never on the other rows of
the run. Two things would break that, and both are avoided:

- One RNG stream per batch. Here each row draws from its own `torch.Generator`,
  seeded from (seed, prompt, sample index), in a logits processor that samples
  after transformers' temperature and top-p warpers; `generate` then runs greedy
  on the one token left.
- Left padding. A padded row's logits differ from the unpadded row's by ~1e-5,
  enough to flip a near-tie. So a batch holds samples of one prompt only: the
  prompt is prefilled once at batch 1 and its KV cache repeated for the batch's
  rows, which also saves the prefill of every sample but the first.

That is what makes `GenerationCache` exact: raising `n_samples` or adding prompts
generates only the missing rows, and the output equals a fresh run's, byte for
byte (tests/reason/test_generation.py).

An engine samples the rows: `HFEngine` (transformers, above) or a dedicated one
(`posttrain.core.llamacpp`, vLLM through `posttrain.reason.generation`). Engines whose
rows can depend on the rows decoded beside them (`exact_rows = False`) run whole groups
of sample indices (0..B-1, B..2B-1, ... for batch size B), every row of a group even
when fewer are asked for, and the group size goes into the key: a row then depends
only on its group, which is fixed, and the cache stays exact. Layout under the cache
directory:

    <model_key>/<shard>.jsonl   {"key", "text", "completion_tokens"} per line

`posttrain.core.fingerprint.model_key` hashes the model folder's bytes, so a changed model never reuses old
samples; each run that generates something adds one shard, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from posttrain.core.io import write_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How rows are sampled. temperature 0 = greedy (seed and sample index unused)."""
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass(frozen=True)
class Row:
    prompt: str              # the rendered prompt (chat template applied)
    prompt_ids: tuple[int, ...]
    sample_idx: int = 0


def row_seed(sampling: Sampling, row: Row) -> int:
    digest = hashlib.sha256(f"{sampling.seed}\n{row.sample_idx}\n{row.prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # torch seeds are < 2**63


def row_key(sampling: Sampling, row: Row, model: str, engine: dict) -> str:
    """Cache key of a row. `engine` is the engine's own part (`Engine.key()`: its name and
    version, threads, group size): all of them can change float reduction order, hence samples."""
    spec = {"model": model, "prompt": row.prompt, "sample_idx": row.sample_idx, "seed": sampling.seed,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens, **engine}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class GenerationCache:
    """Sampled rows by key (see the module docstring), one directory per model."""

    def __init__(self, cache_dir, model: str):
        self.dir = Path(cache_dir) / model
        self.model = model
        self._rows: dict[str, dict] = {}
        for shard in sorted(self.dir.glob("*.jsonl")) if self.dir.is_dir() else []:
            with open(shard, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        rec = json.loads(line)
                        self._rows[rec["key"]] = {"text": rec["text"],
                                                  "completion_tokens": int(rec["completion_tokens"])}
                    except (ValueError, KeyError, TypeError) as e:
                        # A cache is disposable: a bad line costs a regeneration, not the run.
                        log.warning("generation cache: %s line %d unreadable (%s); ignored", shard, lineno, e)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, key: str) -> dict:
        return self._rows[key]

    def add(self, rows: dict[str, dict]) -> None:
        if not rows:
            return
        keys = sorted(rows)
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.dir / f"{name}.jsonl", ({"key": k, **rows[k]} for k in keys))
        self._rows.update(rows)


def _row_sampler(seeds: list[int], sampling: Sampling):
    """Logits processor drawing each row's next token from its own generator (after
    transformers' temperature and top-p warpers); every other token gets -inf."""
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_p < 1:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for w in warpers:
                scores = w(input_ids, scores)
            probs = torch.softmax(scores.float(), dim=-1)
            picks = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)])
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, picks[:, None], 0.0)

    return RowSampler()


def completion_length(ids: list[int], eos_ids: set[int]) -> int:
    """Generated tokens up to and including the first end-of-turn token (padding excluded)."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return i + 1
    return len(ids)


class HFEngine:
    """transformers' `generate` on a loaded model (the default engine, and GRPO's): rows are
    exact (independent of the rows beside them), see the module docstring."""

    name = "hf"
    exact_rows = True

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def key(self) -> dict:
        import torch

        # no backend name: keys from before engines existed stay valid
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def sample(self, prompt_ids: tuple[int, ...], seeds: list[int], sampling: Sampling,
               eos_ids: set[int]) -> list[list[int]]:
        self.model.eval()
        return _sample_batch(self.model, self.tokenizer, prompt_ids, seeds, sampling, eos_ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _sample_batch(model, tokenizer, prompt_ids: tuple[int, ...], seeds: list[int], sampling: Sampling,
                  eos_ids: set[int]) -> list[list[int]]:
    """len(seeds) completions of one prompt (token ids; `generate_rows` cuts them after the end of turn)."""
    import torch
    from transformers import DynamicCache, GenerationConfig, LogitsProcessorList

    k = len(seeds)
    ids = torch.tensor([list(prompt_ids)])
    past = DynamicCache(config=model.config)
    with torch.no_grad():
        if ids.shape[1] > 1:  # prefill all but the last prompt token once, then share it
            model(input_ids=ids[:, :-1], past_key_values=past, use_cache=True)
            past.batch_repeat_interleave(k)
        config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos_ids))
        procs = LogitsProcessorList([_row_sampler(seeds, sampling)] if sampling.temperature > 0 else [])
        seqs = model.generate(input_ids=ids.repeat(k, 1), attention_mask=torch.ones(k, ids.shape[1], dtype=torch.long),
                              past_key_values=past if ids.shape[1] > 1 else None,
                              generation_config=config, logits_processor=procs)
    return seqs[:, ids.shape[1]:].tolist()


def eos_ids_of(tokenizer) -> set[int]:
    eos = tokenizer.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def generate_rows(engine, rows: list[Row], sampling: Sampling, *, batch_size: int,
                  cache: GenerationCache | None = None, progress: bool = False,
                  desc: str = "generate") -> tuple[list[dict], dict]:
    """Completions of `rows`, in order: [{text, completion_tokens}], and
    {"rows", "generated", "cache_hits", "generated_tokens"}. Only rows missing from `cache` are
    generated; an engine without exact rows generates each missing row's whole group (the extra
    rows go to the cache and count as generated)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    eos_ids = eos_ids_of(engine.tokenizer)
    engine_key = engine.key() if engine.exact_rows else {**engine.key(), "group": batch_size}
    key = (lambda r: row_key(sampling, r, cache.model, engine_key)) if cache is not None else (lambda r: None)
    keys = [key(r) for r in rows]
    todo: dict[tuple[int, ...], list[Row]] = {}  # prompt ids -> rows to generate
    seen: set[Row] = set()
    for r, k in zip(rows, keys):
        if (k is not None and k in cache) or r in seen:
            continue
        if engine.exact_rows:
            todo.setdefault(r.prompt_ids, []).append(r)
            seen.add(r)
        else:  # the row's whole group, in sample-index order
            first = r.sample_idx - r.sample_idx % batch_size
            group = [Row(r.prompt, r.prompt_ids, first + j) for j in range(batch_size)]
            todo.setdefault(r.prompt_ids, []).extend(group)
            seen.update(group)
    batches = [todo_rows[j:j + batch_size] for todo_rows in todo.values()
               for j in range(0, len(todo_rows), batch_size)]
    fresh: dict[Row, dict] = {}
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        seeds = [row_seed(sampling, r) for r in batch]
        for r, toks in zip(batch, engine.sample(batch[0].prompt_ids, seeds, sampling, eos_ids)):
            toks = toks[:completion_length(toks, eos_ids)]
            fresh[r] = {"text": engine.decode(toks), "completion_tokens": len(toks)}
    if cache is not None:
        cache.add({key(r): out for r, out in fresh.items()})
    out = [fresh[r] if r in fresh else cache.get(k) for r, k in zip(rows, keys)]
    return out, {"rows": len(rows), "generated": len(fresh), "cache_hits": sum(r not in fresh for r in rows),
                 "generated_tokens": sum(o["completion_tokens"] for o in fresh.values())}


def greedy_rows(engine: HFEngine, rows: list[Row], *, max_new_tokens: int, batch_size: int,
                cache: GenerationCache | None = None, desc: str = "greedy") -> tuple[list[dict], dict]:
    """Greedy completions of many prompts (one row each), `batch_size` consecutive prompts per
    left-padded transformers batch: ~3x faster than one prompt at a time here (GRPO's eval).

    Padding moves a row's logits by ~1e-5 with the other prompts of its batch, so a row's key
    holds its batch's prompts too: the cache serves a rerun of the same prompt list exactly,
    and a changed list regenerates the batches that changed. Returns what `generate_rows` does."""
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    greedy = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=0)
    tok, model = engine.tokenizer, engine.model
    eos_ids = eos_ids_of(tok)
    batches = [rows[j:j + batch_size] for j in range(0, len(rows), batch_size)]
    out: list[dict] = []
    fresh: dict[str, dict] = {}
    generated = tokens = 0
    for batch in batches:
        batch_key = hashlib.sha256("\n\0".join(r.prompt for r in batch).encode()).hexdigest()
        keys = [row_key(greedy, r, cache.model, {**engine.key(), "padded_batch": batch_key})
                if cache is not None else None for r in batch]
        if cache is not None and all(k in cache for k in keys):
            out += [cache.get(k) for k in keys]
            continue
        # left: new tokens must follow each prompt directly
        feats = tok.pad({"input_ids": [list(r.prompt_ids) for r in batch]}, padding_side="left",
                        return_tensors="pt")
        model.eval()
        with torch.no_grad():
            seqs = model.generate(**feats, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos_ids))
        for k, ids in zip(keys, seqs[:, feats["input_ids"].shape[1]:].tolist()):
            ids = ids[:completion_length(ids, eos_ids)]
            o = {"text": engine.decode(ids), "completion_tokens": len(ids)}
            out.append(o)
            generated, tokens = generated + 1, tokens + len(ids)
            if k is not None:
                fresh[k] = o
    if cache is not None:
        cache.add(fresh)
    return out, {"rows": len(rows), "generated": generated, "cache_hits": len(rows) - generated,
                 "generated_tokens": tokens}
