"""The frozen trunk computed once: when only the top layers of a decoder train (LoRA on the
top K layers, or `trainable_layers`), the hidden state entering the first trainable layer
depends only on the tokens. `frozen_trunk(model)` computes it once per training sequence,
without grad, and the model's embedding returns it from then on: later epochs, DPO's
reference pass (the same model, adapter off) and repeated draws of the weighted sampler skip
the frozen layers. The model stays the same transformers class (trl, peft and DDP see
nothing new) and is whole again on exit.

Exact for right-padded batches: causal attention, so a token's state does not depend on the
padding after it, and positions count from 0 either way. Any other batch (left padding,
explicit position ids) runs the trunk directly, uncached. A stochastic trunk (dropout) is
not a function of the tokens, so it is never cached.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


def decoder_of(model):
    """The decoder stack (the module with `embed_tokens` and `layers`) under any peft or
    task-head wrapping, or None."""
    for m in model.modules():
        if hasattr(m, "embed_tokens") and isinstance(getattr(m, "layers", None), torch.nn.ModuleList):
            return m
    return None


def trunk_depth(model) -> int:
    """How many bottom decoder layers are frozen, with the embedding, below the first layer
    that trains (0 = nothing to cache: everything trains, or the model has no such stack)."""
    dec = decoder_of(model)
    if dec is None or any(p.requires_grad for p in dec.embed_tokens.parameters()):
        return 0
    cfg = dec.config
    if float(getattr(cfg, "attention_dropout", 0.0) or 0.0) > 0 or float(getattr(cfg, "hidden_dropout", 0.0) or 0.0) > 0:
        return 0  # a stochastic trunk is not a function of the tokens
    for i, layer in enumerate(dec.layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return 0  # no trainable layer: nothing trains through the stack


class _Skip(torch.nn.Module):
    """A frozen layer whose output the trunk embedding already returns."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class TrunkEmbedding(torch.nn.Module):
    """In place of `embed_tokens`: returns the hidden state after the first `depth` layers,
    from a cache keyed by each right-padded row's tokens (computed once, without grad)."""

    def __init__(self, decoder, depth: int):
        super().__init__()
        self.embed = decoder.embed_tokens
        trunk = copy.copy(decoder)  # shares every module; its own module table and config
        trunk.__dict__["_modules"] = dict(decoder._modules)
        trunk.__dict__["_modules"]["norm"] = torch.nn.Identity()
        # its own list: the model's bottom layers are swapped for _Skip while the trunk is cached
        trunk.__dict__["_modules"]["layers"] = torch.nn.ModuleList(list(decoder.layers)[:depth])
        trunk.config = copy.copy(decoder.config)
        trunk.config.num_hidden_layers = depth  # the stack runs layers[:num_hidden_layers]
        object.__setattr__(self, "_trunk", trunk)  # not a submodule: no second path to its weights
        self.cache: dict[bytes, object] = {}
        self.depth = depth
        self.reused = self.computed = self.direct = 0
        self._kwargs: dict = {}

    @property
    def weight(self):  # get_input_embeddings().weight keeps working (tied heads, resizing checks)
        return self.embed.weight

    def _run(self, ids, mask, position_ids=None):
        with torch.no_grad():
            return self._trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state

    def forward(self, input_ids):
        mask, pos = self._kwargs.get("attention_mask"), self._kwargs.get("position_ids")
        if self._kwargs.get("past_key_values") is not None or (mask is not None and mask.shape != input_ids.shape):
            # a decoding step: the frozen layers would need their own KV cache
            raise RuntimeError("frozen_trunk serves whole sequences, not cached generation; "
                               "generate outside the frozen_trunk block")
        if mask is None:
            mask = torch.ones_like(input_ids)
        if mask.dim() != 2 or pos is not None or not _right_padded(mask):
            self.direct += 1
            return self._run(input_ids, mask, pos)
        lengths = mask.sum(dim=1).tolist()
        keys = [input_ids[i, :n].numpy().tobytes() if input_ids.device.type == "cpu"
                else input_ids[i, :n].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        store = self.training
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        fresh = {}
        if missing:
            width = max(lengths[i] for i in missing)
            ids = input_ids[missing, :width]
            out = self._run(ids, mask[missing, :width])
            fresh = {keys[i]: out[j, :lengths[i]] for j, i in enumerate(missing)}
            if store:
                self.cache.update({k: v.detach().clone() for k, v in fresh.items()})
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        first = next(iter(fresh.values()), None)
        if first is None:
            first = self.cache[keys[0]]
        hidden = first.new_zeros((input_ids.shape[0], input_ids.shape[1], first.shape[-1]))
        for i, (k, n) in enumerate(zip(keys, lengths)):
            hidden[i, :n] = fresh[k] if k in fresh else self.cache[k]
        return hidden


def _right_padded(mask) -> bool:
    """Every row is ones then zeros (real tokens first)."""
    m = mask.to(torch.int64)
    return bool((m[:, 1:] <= m[:, :-1]).all())


@contextmanager
def frozen_trunk(model, enabled: bool = True):
    """Within the block, `model` (any wrapping) computes its frozen bottom layers once per
    training sequence (see the module docstring); yields the TrunkEmbedding, or None when there
    is nothing to cache. The model is whole again on exit."""
    depth = trunk_depth(model) if enabled else 0
    if not depth:
        yield None
        return
    dec = decoder_of(model)
    embed, layers = dec.embed_tokens, list(dec.layers)
    trunk = TrunkEmbedding(dec, depth)

    names = ("input_ids", "attention_mask", "position_ids")

    def keep_kwargs(module, args, kwargs):  # the embedding sees only ids; the mask comes from here
        trunk._kwargs = {**dict(zip(names, args)), **kwargs}
        return None

    hook = dec.register_forward_pre_hook(keep_kwargs, with_kwargs=True)
    dec.embed_tokens = trunk
    for i in range(depth):
        dec.layers[i] = _Skip()
    log.info("frozen trunk: layers 0-%d of %d computed once per training sequence", depth - 1, len(layers))
    try:
        yield trunk
    finally:
        hook.remove()
        dec.embed_tokens = embed
        for i in range(depth):
            dec.layers[i] = layers[i]
        log.info("frozen trunk: %d sequences computed, %d reused, %d batches run directly",
                 trunk.computed, trunk.reused, trunk.direct)
        trunk.cache.clear()
