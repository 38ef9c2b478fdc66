"""Frozen weights cast once. Under bf16 autocast every `nn.Linear` casts its fp32 weight to
bf16 at every call. autocast caches that cast only for weights that train (leaf tensors
that require grad), so a frozen weight is cast again at every forward: each frozen trunk
pass, DPO's reference, every decoding step of a rollout, and the tied LM head (49k x 576 for
SmolLM2) at every call. On this CPU the casts are memory traffic as large as the matmuls'
input: a SmolLM2-135M decoding step of 8 rows takes 85 ms with them and 62 ms without.

Within `frozen_cast(model)`, every frozen `nn.Linear` with an fp32 weight keeps one copy of
that weight in the autocast dtype and, while autocast to that dtype is on, multiplies by the
copy: the very values autocast would cast it to, so outputs and gradients are bit-identical.
Outside autocast, or once the weight was changed in place (a peft merge, a state-dict load)
or made trainable, the layer runs as before. The copy costs half the frozen weights' fp32
memory; it is dropped on exit. Weights that train, quantized layers (bitsandbytes subclasses
of `nn.Linear`) and embeddings are left alone: a tied LM head keeps sharing the embedding's
fp32 parameter, only its matmul reads the copy.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class CastOnce:
    """A frozen Linear's `forward` while installed (on the instance, so names, hooks and
    wrappers see the same module): the matmul by a copy cast once, under autocast to `dtype`."""

    def __init__(self, linear: torch.nn.Linear, low: torch.Tensor, counter: list):
        self.linear = linear
        self.weight = linear.weight  # the parameter the copy was cast from
        self.version = linear.weight._version  # bumped by any in-place change
        self.low = low
        self.counter = counter

    def __call__(self, x):
        lin, dev = self.linear, x.device.type
        if (torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == self.low.dtype
                and lin.weight is self.weight and self.weight._version == self.version
                and not self.weight.requires_grad):
            self.counter[0] += 1
            return torch.nn.functional.linear(x, self.low, lin.bias)  # autocast casts x and bias as before
        return type(lin).forward(lin, x)


def castable(module) -> bool:
    """A plain `nn.Linear` whose fp32 weight does not train."""
    return (type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
            and not module.weight.requires_grad)


@contextmanager
def frozen_cast(*models, dtype=torch.bfloat16, enabled: bool = True):
    """Within the block, the `models`' frozen Linears multiply by a copy of their weight cast once
    to `dtype` whenever autocast to `dtype` is on (module docstring); yields a one-item list
    counting those calls (None when disabled). Enter it before anything that takes layers out of
    the module tree (`core.trunk.frozen_trunk`). The models are as before on exit."""
    if not enabled:
        yield None
        return
    counter = [0]
    copies: dict[int, torch.Tensor] = {}  # one copy per parameter: tied weights share it
    installed = []
    for module in (m for model in models if model is not None for m in model.modules()):
        if not castable(module) or "forward" in vars(module):
            continue
        w = module.weight
        low = copies.get(id(w))
        if low is None:
            low = copies[id(w)] = w.detach().to(dtype)
        module.forward = CastOnce(module, low, counter)
        installed.append(module)
    try:
        yield counter
    finally:
        for module in installed:
            del module.forward
        copies.clear()
