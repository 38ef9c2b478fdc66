"""The trained model with full weights, after training that may have sharded it.

Every training stage evaluates and saves on rank 0 alone, after the collective
training steps. Under DDP (and DeepSpeed ZeRO-1/2) each rank holds all the weights,
so rank 0 uses `trainer.model` as it is. Under FSDP and ZeRO-3 (`train.distributed:
fsdp | zero3`) each rank holds a shard: a forward pass is a collective, and rank 0
alone would wait forever. So every rank joins accelerate's own gather
(`Accelerator.get_state_dict`, which undoes FSDP's and ZeRO-3's sharding), and rank 0
loads the full state into `rebuild()`, a fresh unsharded copy of the model built the
way the stage built it. Nothing here shards or gathers by hand.
"""

from __future__ import annotations

from typing import Callable


def is_sharded(accelerator) -> bool:
    """True when each rank holds only part of the weights (FSDP, DeepSpeed ZeRO-3)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True
    if kind == DistributedType.DEEPSPEED:
        return int(accelerator.state.deepspeed_plugin.zero_stage) == 3
    return False


def full_model(trainer, rebuild: Callable | None):
    """On every rank after `trainer.train()`: the trained model with full weights on rank 0
    (on rank 0's device), None on the other ranks. `rebuild()` makes an untrained copy of the model's structure
    (base model plus the same peft config); it is only called when the weights are sharded."""
    acc = trainer.accelerator
    if not is_sharded(acc):
        return trainer.model if trainer.is_world_process_zero() else None
    if rebuild is None:
        raise RuntimeError("sharded training (FSDP / ZeRO-3) needs a rebuild() for the full model")
    state = acc.get_state_dict(trainer.model)  # collective: full tensors on rank 0
    if not trainer.is_world_process_zero():
        return None
    model = rebuild()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"gathered weights do not fit the rebuilt model: missing={missing[:5]} "
                           f"unexpected={unexpected[:5]}")
    if not getattr(model, "is_quantized", False):  # a 4-bit rebuild is already placed by its device_map
        model.to(acc.device)  # rank 0 evaluates on its GPU, as under DDP
    return model
