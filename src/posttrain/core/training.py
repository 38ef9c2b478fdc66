"""How a trainer uses the machine: its precision, and whether its frozen trunk is computed once.

- **Precision.** `train.precision: auto` trains in bf16 autocast where the hardware has bf16
  matmul (CUDA; CPUs with AVX512-BF16 or AMX, where `bench/train.py` measures a bf16 matmul
  2-4x fp32's), fp32 elsewhere. Master weights, optimizer state and saved weights stay fp32:
  autocast only lowers the matmuls (transformers' `bf16=True` through accelerate).
- **Frozen trunk** (`train.frozen_trunk`): the layers below the first trainable one computed
  once per training sequence, `posttrain.core.trunk`.
- **Labelled head** (`train.labelled_head`): the output is computed only where the loss reads
  it: trl's LM head at the positions that carry a label (`posttrain.core.logprob_head`), and a
  one-output head's top layer at the pooled token (`posttrain.core.pooled_top`).
- **Shared prefix** (`train.shared_prefix`): rows that share a prefix (a pair's prompt) run it
  once in the trainable layers too, `posttrain.core.shared_prefix`.
- **Frozen weights cast once** (`train.frozen_cast`): under bf16 autocast a frozen Linear
  multiplies by a bf16 copy made once, where autocast would cast its fp32 weight at every
  call, `posttrain.core.frozen_cast`.
- **Freed memory reused** (`train.reuse_freed_memory`): glibc's malloc keeps what a step frees
  for the next one, where it would map and zero it again, `posttrain.core.heap`.
- **Rollouts** (GRPO): in the training precision, and with `train.shared_prefill` each distinct
  prompt prefilled once for all its generations, `posttrain.core.rollouts`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from posttrain.core.settings import param

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
# fit()'s facts that are wall-time rates: they differ run to run, so byte-identical outputs leave them out
WALL_TIME_FACTS = ("trained_tokens_per_s", "steady_tokens_per_s")


@dataclass(frozen=True)
class TrainSettings:
    """How every trainer uses the machine (params train.precision, train.frozen_trunk,
    train.labelled_head, train.shared_prefill, train.shared_prefix, train.frozen_cast,
    train.reuse_freed_memory)."""

    precision: str = param("auto (bf16 autocast on CUDA and on CPUs with AVX512-BF16/AMX, fp32 elsewhere), "
                           "bf16 or fp32; master weights stay fp32", choices=PRECISIONS)
    frozen_trunk: bool = param("compute the frozen layers below the first trainable one once per "
                               "training sequence and reuse them (exact; costs memory)", flag=False)
    labelled_head: bool = param("on the CPU, trl's LM head scores only the positions that carry a label "
                                "(trl does so itself where Triton runs); a one-output head's top layer runs "
                                "at the pooled token only (both exact up to rounding)", flag=False)
    shared_prefill: bool = param("rollouts (GRPO) prefill each distinct prompt once and copy its KV cache to "
                                 "all its generations (same distribution)", flag=False)
    shared_prefix: bool = param("rows that begin with the same tokens (a pair's prompt) run that prefix once in the "
                                "layers that train too, not only in the frozen trunk (exact up to rounding)", flag=False)
    frozen_cast: bool = param("under bf16 autocast, frozen Linear weights are cast to bf16 once per run, not at "
                              "every call (exact; costs half the frozen weights' memory)", flag=False)
    reuse_freed_memory: bool = param("glibc's malloc keeps freed memory for the next step instead of returning it "
                                     "to the OS (no page faults re-zeroing it; the process keeps its peak heap)",
                                     flag=False)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16: a bf16 matmul faster than fp32 (oneDNN kernels)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str) -> str:
    """"bf16" or "fp32" for this machine; `auto` picks bf16 where the hardware has it."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def device_args(t: TrainSettings) -> dict:
    """TrainingArguments for this machine: CPU or CUDA, bf16 autocast or fp32.

    No activation checkpointing on CPU (trl turns it on by default): memory is plentiful
    there, and with only the top layers trained it makes every backward recompute the whole
    network from the embeddings up."""
    import torch

    bf16 = resolve_precision(t.precision) == "bf16"
    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": bf16}
    return {"use_cpu": True, "bf16": bf16, "gradient_checkpointing": False}


def fit(trainer, t: TrainSettings) -> dict:
    """`trainer.train()` with the frozen trunk computed once (when `t.frozen_trunk` and the
    model has one), trl's head on labelled positions and rollouts as `t` says; returns the
    run's facts: precision, trained tokens (non-pad tokens of the forwards that build a graph,
    i.e. the trainable passes, not reference or generation passes), their rate over the whole
    of `train()` and from the end of its first optimizer step on (`steady_tokens_per_s`: without
    the setup and first-step warm-up, which a short run would otherwise charge in full), and
    the trunk cache's counts."""
    import time

    import torch
    from transformers import TrainerCallback

    from posttrain.core.frozen_cast import frozen_cast
    from posttrain.core.heap import keep_freed_memory
    from posttrain.core.logprob_head import labelled_head
    from posttrain.core.pooled_top import pooled_top
    from posttrain.core.rollouts import rollouts
    from posttrain.core.shared_prefix import shared_prefix
    from posttrain.core.trunk import decoder_of, frozen_trunk

    seen = {"tokens": 0, "sequences": 0}

    def count(module, args, kwargs):
        if torch.is_grad_enabled() and module.training:
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            ids = kwargs.get("input_ids", args[0] if args else None)
            if mask is not None:
                seen["tokens"] += int(mask.sum())
                seen["sequences"] += int(mask.shape[0])
            elif ids is not None:
                seen["tokens"] += int(ids.numel())
                seen["sequences"] += int(ids.shape[0])
        return None

    steps: list[tuple[float, int]] = []  # (time, trained tokens) at each optimizer step's end

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append((time.perf_counter(), seen["tokens"]))

    heap_kept = keep_freed_memory() if t.reuse_freed_memory else False
    dec = decoder_of(trainer.model)
    hook = dec.register_forward_pre_hook(count, with_kwargs=True) if dec is not None else None
    clock = StepClock()
    trainer.add_callback(clock)
    t0 = time.perf_counter()
    try:
        # trl's fused head is compact only where Triton runs; on the CPU ours scores labelled positions only
        on_cpu = next(trainer.model.parameters()).device.type == "cpu"
        # frozen_cast first: the trunk takes its layers out of the module tree
        with frozen_cast(trainer.model, getattr(trainer, "ref_model", None),
                         enabled=t.frozen_cast and bool(trainer.args.bf16)) as cast, \
                frozen_trunk(trainer.model, t.frozen_trunk) as cached, \
                labelled_head(trainer, t.labelled_head and on_cpu) as heads, \
                pooled_top(trainer.model, t.labelled_head) as pooled, \
                shared_prefix(trainer.model, t.shared_prefix) as shared, \
                rollouts(trainer, shared_prefill=t.shared_prefill, bf16=bool(trainer.args.bf16), trunk=cached) as gen:
            trainer.train()
    finally:
        trainer.remove_callback(clock)
        if hook is not None:
            hook.remove()
    wall = time.perf_counter() - t0
    (t1, k1), (tn, kn) = (steps[0], steps[-1]) if len(steps) > 1 else ((0.0, 0), (0.0, 0))
    return {"precision": "bf16" if trainer.args.bf16 else "fp32",
            "trained_tokens": seen["tokens"], "trained_sequences": seen["sequences"],
            "trained_tokens_per_s": round(seen["tokens"] / wall, 1) if wall > 0 else None,
            "steady_tokens_per_s": round((kn - k1) / (tn - t1), 1) if tn > t1 else None,
            "frozen_trunk_layers": cached.depth if cached is not None else 0,
            "frozen_trunk_computed": cached.computed if cached is not None else 0,
            "frozen_trunk_reused": cached.reused if cached is not None else 0,
            "frozen_trunk_shared_prefix_tokens": cached.shared_tokens if cached is not None else 0,
            "labelled_positions_head": bool(heads),
            "pooled_top_layer": pooled is not None and pooled.calls > 0,
            "shared_prefix_layer_calls": shared.layers_run if shared is not None else 0,
            "shared_prefix_tokens_spared": shared.tokens_spared if shared is not None else 0,
            "frozen_cast_calls": cast[0] if cast is not None else 0,
            "freed_memory_reused": heap_kept,
            **({"rollout_rows": gen["rows"], "rollout_prompts_prefilled": gen["prefilled"]}
               if gen is not None and gen["rows"] else {})}


def autocast(t: TrainSettings):
    """bf16 autocast for the held-out scoring of a trained model where `t` resolves to bf16
    (the evaluation runs in the precision the model trained in); a no-op otherwise."""
    import torch

    bf16 = resolve_precision(t.precision) == "bf16"
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16, enabled=bf16)
