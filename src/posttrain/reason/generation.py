"""Sampled step-by-step solutions: n samples per problem, through `posttrain.core.generation`.

Every (problem, sample index) pair is one row, and a row's tokens depend only on the
model, its rendered prompt, the sampling params, the seed, its sample index (its own
RNG; batches hold samples of one prompt, without padding) and the engine
(`reason.backend`, its version and threads; for llama.cpp and vLLM also the batch
size, which fixes each row's group). So a run is reproducible for the same params and
backend, and with a cache directory only rows not sampled before are generated.

Backends (`reason.backend`):
  hf        transformers `generate` on the model folder, fp32 (rows exact at any batch size)
  llamacpp  llama.cpp on the model's GGUF file (`posttrain.core.llamacpp`): the CPU default,
            ~3x hf's tokens/s at batch 8 here (`python bench/generate.py`)
  vllm      vLLM on a GPU machine (`posttrain.core.vllm_engine`), an optional extra
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from posttrain.core.generation import Sampling
from posttrain.core.llamacpp import WEIGHTS
from posttrain.core.settings import NotInstalled, SettingsError, param
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


BACKENDS = ("hf", "llamacpp", "vllm")


def load_engine(ref, backend: str, *, threads: int, seed: int, llamacpp_weights: str):
    """The generation engine of `backend` for model `ref` (see the module docstring). `threads`:
    the engine's intra-op threads, 0 = its default (torch's; llama.cpp: every core).
    `llamacpp_weights`: what the GGUF's weights run as under llama.cpp (`posttrain.core.llamacpp`)."""
    if backend == "hf":
        import torch

        from posttrain.core.generation import HFEngine

        if threads:
            torch.set_num_threads(threads)
        return HFEngine(*load_model(ref))
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; use one of {', '.join(BACKENDS)}")
    from posttrain.core.models import load_tokenizer

    if backend == "llamacpp":
        from posttrain.core.llamacpp import LlamaCppEngine, gguf_of

        gguf = gguf_of(str(ref))  # before the tokenizer: a model without a GGUF fails fast
        return LlamaCppEngine(gguf, load_tokenizer(str(ref)), threads=threads, weights=llamacpp_weights)
    from posttrain.core.vllm_engine import VLLMEngine, require_vllm

    require_vllm("reason.backend: vllm")  # before the tokenizer loads: fail fast, as for llama.cpp
    return VLLMEngine(str(ref), load_tokenizer(str(ref)), seed=seed)


def open_cache(cache_dir, model_ref):
    """The generation cache of `model_ref` (keyed by its bytes) under `cache_dir`."""
    from posttrain.core.generation import GenerationCache
    from posttrain.core.fingerprint import model_key

    return GenerationCache(cache_dir, model_key(str(model_ref)))


def generate(engine, problems: list[dict], cfg: SamplingConfig, *, cache=None,
             progress: bool = True) -> tuple[list[dict], dict]:
    """Sample `cfg.n_samples` solutions per problem with `engine` (`load_engine`). Returns the
    sample records in problem order then sample index ({id, problem_id, sample_idx, domain,
    source, text, prompt_tokens, completion_tokens}) and {rows, generated, cache_hits,
    generated_tokens}. `cache` (`open_cache`) keeps every sample for later runs."""
    from posttrain.core.generation import Row, generate_rows

    tokenizer = engine.tokenizer
    texts = [prompts.render(tokenizer, p) for p in problems]
    ids = [tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    if texts and hasattr(engine, "check_prompt"):
        engine.check_prompt(texts[0], ids[0])
    rows = [Row(texts[i], ids[i], s) for i in range(len(problems)) for s in range(cfg.n_samples)]
    log.info("%d problems x %d samples = %d rows (max_new_tokens=%d, %s)", len(problems), cfg.n_samples,
             len(rows), cfg.max_new_tokens,
             f"T={cfg.temperature}, top_p={cfg.top_p}" if cfg.temperature > 0 else "greedy")
    outs, stats = generate_rows(engine, rows, cfg, batch_size=cfg.batch_size, cache=cache,
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


@dataclass(frozen=True)
class GenerateSettings:
    """reason_generate's params (reason.*)."""

    model: str = param("model folder (data/models/policy), asset name or hub id; llamacpp needs a GGUF "
                       "file or asset, or a base_models folder made from one")
    backend: str = param("generation engine: hf (transformers), llamacpp (the model's GGUF through "
                         "llama.cpp), vllm (GPU machines)", choices=BACKENDS)
    llamacpp_weights: str = param("llamacpp: the GGUF's weights converted to this type before loading "
                                  "(source = as stored)", choices=WEIGHTS)
    n_samples: int = param("samples per problem", min=1)
    temperature: float = param("sampling temperature (0 = greedy)", min=0)
    top_p: float = param("nucleus sampling mass", min=0, max=1, min_open=True)
    max_new_tokens: int = param("most new tokens per sample", min=1)
    batch_size: int = param("rows decoded together (llamacpp/vllm: the group of sample indices a row "
                            "depends on)", min=1)
    threads: int = param("engine threads (0 = its default); part of the cache key", min=0)
    seed: int = param("sampling seed")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(n_samples=self.n_samples, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=self.seed)


def generate_run(problems: list[dict], s: GenerateSettings, cache_dir=None, progress: bool = True
                 ) -> tuple[list[dict], dict]:
    """reason_generate's work: (samples, metrics with the engine, cache use and throughput)."""
    import time

    try:
        engine = load_engine(s.model, s.backend, threads=s.threads, seed=s.seed,
                             llamacpp_weights=s.llamacpp_weights)
    except NotInstalled:
        raise
    except (ImportError, ValueError) as e:  # no GGUF for llamacpp: one line
        raise SettingsError("--model/--backend", str(e)) from e
    t0 = time.perf_counter()
    samples, stats = generate(engine, problems, s.sampling(), progress=progress,
                              cache=open_cache(cache_dir, s.model) if cache_dir else None)
    secs = time.perf_counter() - t0
    metrics = summarize(samples)
    # Throughput and cache use depend on the machine and on what ran before: metrics, not data.
    metrics["cache"] = {k: stats[k] for k in ("generated", "cache_hits")}
    metrics["engine"] = {"backend": s.backend, **engine.key()}
    if s.backend == "llamacpp":  # the build's kernels: which weight types run here, and how fast
        from posttrain.core.llamacpp import system_info

        metrics["engine"]["cpu_features"] = system_info()["cpu_features"]
    metrics["completion_tokens_per_s"] = (round(stats["generated_tokens"] / secs, 2)
                                          if stats["generated"] and secs else None)
    return samples, metrics
