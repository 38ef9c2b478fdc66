"""The top layer at the pooled token only. A one-output head (pref_rm's reward, the
verifier's score) reads the last decoder layer's output at one position per row:
transformers' `*ForSequenceClassification` pools the rightmost non-pad token. The layers
below need every position (the top layer's keys and values come from all of them), but in
the top layer itself only that token's query, attention output, `o_proj` and MLP are read;
at the other positions they were computed and thrown away.

Within `pooled_top(model)` the top decoder layer computes its keys and values at every
position and the rest at the pooled token only. Its output there equals the full layer's
(up to float rounding); the other positions carry the layer's input, which the pooling never
reads, so the loss and every gradient are the full forward's. For a model without such a
head, an architecture it does not know (Llama- and Qwen3-style layers), a cached decoding
step or `inputs_embeds`, the layer runs whole.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch

from posttrain.core.trunk import decoder_of


def pooled_index(input_ids, pad_token_id):
    """transformers' pooled position per row: the rightmost token that is not padding."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[-1] - 1, device=input_ids.device)
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    idx = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (idx * non_pad).argmax(-1)


class PooledTop:
    """The top decoder layer's forward while installed: the whole layer at the pooled token
    only. It replaces the layer's `forward` on the instance, so parameter names, hooks and
    wrappers (peft, DDP) see the same module."""

    def __init__(self, layer, rotate_half, pad_token_id):
        self.layer = layer
        self._rotate_half = rotate_half
        self.pad_token_id = pad_token_id
        self.inputs: dict = {}
        self.calls = 0

    def __call__(self, hidden_states, *args, **kwargs):
        ids, mask = self.inputs.get("input_ids"), self.inputs.get("attention_mask")
        cos_sin, past = kwargs.get("position_embeddings"), kwargs.get("past_key_values")
        layer, attn = self.layer, self.layer.self_attn
        # a decoding step (this layer already holds keys) runs whole; a fresh cache is filled below
        if (ids is None or cos_sin is None or args or (past is not None and past.get_seq_length(attn.layer_idx) > 0)
                or tuple(ids.shape) != tuple(hidden_states.shape[:2])
                or (mask is not None and (mask.dim() != 2 or mask.shape != ids.shape))):
            return type(self.layer).forward(self.layer, hidden_states, *args, **kwargs)
        self.calls += 1
        n, width, _ = hidden_states.shape
        rows = torch.arange(n, device=hidden_states.device)
        pos = pooled_index(ids, self.pad_token_id).to(hidden_states.device)
        h = layer.input_layernorm(hidden_states)
        hd = attn.head_dim

        def heads(x, proj, norm):  # (n, len, d) -> (n, heads, len, head_dim), as the layer shapes it
            y = proj(x).view(x.shape[0], x.shape[1], -1, hd)
            return (norm(y) if norm is not None else y).transpose(1, 2)

        cos, sin = (t.expand(n, *t.shape[1:]) for t in cos_sin)
        q = heads(h[rows, pos][:, None], attn.q_proj, getattr(attn, "q_norm", None))
        k = heads(h, attn.k_proj, getattr(attn, "k_norm", None))
        v = heads(h, attn.v_proj, None)
        cq, sq = cos[rows, pos][:, None, None], sin[rows, pos][:, None, None]
        q = q * cq + self._rotate_half(q) * sq
        k = k * cos[:, None] + self._rotate_half(k) * sin[:, None]
        if past is not None:  # as the layer would (transformers makes a cache whenever use_cache is on)
            k, v = past.update(k, v, attn.layer_idx)
        # the pooled token sees itself and every real token before it (causal, padding masked)
        allowed = torch.arange(width, device=pos.device)[None, :] <= pos[:, None]
        if mask is not None:
            allowed = allowed & mask.to(torch.bool)
        q, k, v = (t.to(v.dtype) for t in (q, k, v))  # one dtype for SDPA (bf16 under autocast)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :],
                                                             scale=attn.scaling, enable_gqa=True)
        x = hidden_states[rows, pos][:, None] + attn.o_proj(o.transpose(1, 2).reshape(n, 1, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return hidden_states.index_put((rows, pos), x[:, 0].to(hidden_states.dtype))


def _supported(layer) -> object | None:
    """The layer's module's `rotate_half` when pooled_top knows the layer's shape, else None."""
    attn = getattr(layer, "self_attn", None)
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
    if attn is None or not all(hasattr(attn, a) for a in needed):
        return None
    if not all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")):
        return None
    if getattr(attn, "sliding_window", None) or float(getattr(attn, "attention_dropout", 0.0) or 0.0) > 0:
        return None
    return getattr(sys.modules.get(type(attn).__module__), "rotate_half", None)


def _pooled_head_model(model):
    """The `*ForSequenceClassification` module under any peft / DDP wrapping, or None."""
    for m in model.modules():
        if type(m).__name__.endswith("ForSequenceClassification") and hasattr(m, "score"):
            return m
    return None


@contextmanager
def pooled_top(model, enabled: bool = True):
    """Within the block, a sequence-classification `model` computes its top decoder layer at
    the pooled token only (module docstring); yields the PooledTop forward, or None when the
    model has no such head or layer. The model is whole again on exit."""
    head = _pooled_head_model(model) if enabled else None
    dec = decoder_of(head) if head is not None else None
    rotate_half = _supported(dec.layers[-1]) if dec is not None and len(dec.layers) else None
    if rotate_half is None:
        yield None
        return
    top = dec.layers[-1]
    pooled = PooledTop(top, rotate_half, head.config.get_text_config().pad_token_id)
    names = ("input_ids", "attention_mask")

    def keep_inputs(module, args, kwargs):
        pooled.inputs = {**dict(zip(names, args)), **{k: kwargs.get(k) for k in names if k in kwargs}}
        return None

    hook = dec.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    top.forward = pooled
    try:
        yield pooled
    finally:
        hook.remove()
        del top.forward
