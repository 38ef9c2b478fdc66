"""A shared prefix computed once in the layers that train, too. A reward model's chosen and
rejected answers follow one prompt, and so do DPO's: the frozen trunk (`core.trunk`) already
runs that prompt once per pair, but the trainable layers above it ran it twice, forward and
backward. pref_rm's batches share ~26% of their tokens this way.

Within `shared_prefix(model)`, every decoder layer that trains (and is not the pooled top,
`core.pooled_top`) runs a right-padded batch as the trunk does: rows that begin with the
same tokens are grouped (`core.trunk.shared_plan`, the same rule and cost model), each
group's prefix runs once, and each row's suffix runs against that prefix's keys and values at
the positions the whole row would have. The layer is called through its own `forward` with
a small cache object whose `update` hands the attention the prefix's keys and values, so
RoPE, q/k norms and the MLP are the architecture's own code; autograd sums the gradient of a
prefix over every row that reads it. Causal attention makes this exact up to float
rounding. The layer's output at positions after a row's last real token is zero (padding;
nothing reads it). Batches without such groups, left padding, explicit position ids,
decoding steps, attention other than SDPA and sliding windows run the layer whole.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from posttrain.core.trunk import decoder_of, right_padded, row_ends, shared_plan


class _PrefixKV:
    """The cache a layer's attention writes to: records the prefix pass's keys and values
    (`prefix=None`), or, for the suffix pass, returns each row's group prefix before its own."""

    def __init__(self, prefix=None, group=None):
        self.prefix, self.group, self.kv = prefix, group, None

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.kv = (key, value)  # this pass's own
        if self.prefix is None:
            return key, value
        pk, pv = self.prefix
        return torch.cat([pk[self.group], key], dim=2), torch.cat([pv[self.group], value], dim=2)


class SharedState:
    """The batch's ids and mask (from a decoder pre-hook) and its plan, made once per forward."""

    def __init__(self):
        self.inputs: dict = {}
        self.plan = None
        self.layers_run = 0  # layer calls that ran the shared plan
        self.tokens_spared = 0  # token positions not computed, summed over those calls

    def batch_plan(self):
        if self.plan is None:
            ids, mask = self.inputs.get("input_ids"), self.inputs.get("attention_mask")
            plan = False
            if ids is not None and self.inputs.get("position_ids") is None:
                mask = torch.ones_like(ids) if mask is None else mask
                if mask.dim() == 2 and mask.shape == ids.shape and right_padded(mask) and bool(mask[:, 0].all()):
                    found = shared_plan(ids, mask)
                    if found is not None:
                        plan = _Plan(ids, mask, *found)
            self.plan = plan
        return self.plan or None


class _Plan:
    """Index maps between the batch (n x width) and the passes: each chunk's prefix rows
    (groups x top) and suffix rows (members x span), the rows alone (x their width)."""

    def __init__(self, ids, mask, chunks, alone):
        dev = ids.device
        n, width = ids.shape
        ends = row_ends(mask)
        self.n, self.width = n, width
        self.passes = []  # (kind, source (row, position) per slot, key mask, extra)
        out = torch.full((n, width), -1, dtype=torch.long)
        base = 0
        for groups in chunks:
            top = max(p for _, p in groups)
            heads = [rows[0] for rows, _ in groups]
            pre_src = torch.tensor([[h * width + j for j in range(top)] for h in heads])
            pre_real = torch.tensor([[j < p for j in range(top)] for _, p in groups])
            members = [(r, k, p) for k, (rows, p) in enumerate(groups) for r in rows]
            span = max(ends[r] - p for r, _, p in members)
            # past a row's end: its last real token's slot (finite, masked as a key, never read)
            suf_src = torch.tensor([[r * width + min(p + i, ends[r] - 1) for i in range(span)]
                                    for r, _, p in members])
            suf_real = torch.tensor([[i < ends[r] - p for i in range(span)] for r, _, p in members])
            group = torch.tensor([k for _, k, _ in members])
            # a suffix query sees its group's real prefix keys and, causally, its own real keys
            prefix_keys = pre_real[group][:, None, :].expand(-1, span, -1)
            own = torch.tril(torch.ones(span, span, dtype=torch.bool))[None] & suf_real[:, None, :]
            self.passes.append(("prefix", pre_src, _causal(pre_real), None))
            self.passes.append(("suffix", suf_src, torch.cat([prefix_keys, own], dim=2)[:, None], group))
            for k, (rows, p) in enumerate(groups):
                for r in rows:
                    out[r, :p] = base + k * top + torch.arange(p)
            base += len(groups) * top
            for t, (r, _, p) in enumerate(members):
                out[r, p:ends[r]] = base + t * span + torch.arange(ends[r] - p)
            base += len(members) * span
        if alone:
            w = max(ends[r] for r in alone)
            src = torch.tensor([[r * width + min(j, ends[r] - 1) for j in range(w)] for r in alone])
            real = torch.tensor([[j < ends[r] for j in range(w)] for r in alone])
            self.passes.append(("alone", src, _causal(real), None))
            for a, r in enumerate(alone):
                out[r, :ends[r]] = base + a * w + torch.arange(ends[r])
            base += len(alone) * w
        self.zero = base  # the slot of the zero row every padding position reads
        self.out = out.masked_fill(out < 0, base).flatten().to(dev)
        self.passes = [(kind, src.to(dev), keys.to(dev), None if g is None else g.to(dev))
                       for kind, src, keys, g in self.passes]
        self.tokens_spared = sum(ends) - base


def _causal(real):
    """(rows, 1, L, L) bool: a query sees the real keys at or before it."""
    width = real.shape[1]
    return (torch.tril(torch.ones(width, width, dtype=torch.bool))[None] & real[:, None, :])[:, None]


class SharedPrefixLayer:
    """A trainable decoder layer's `forward` while installed (on the instance, so parameter
    names, hooks and wrappers see the same module): the batch's plan when it has one."""

    def __init__(self, layer, state: SharedState):
        self.layer, self.state = layer, state

    def _whole(self, hidden_states, args, kwargs):
        return type(self.layer).forward(self.layer, hidden_states, *args, **kwargs)

    def __call__(self, hidden_states, *args, **kwargs):
        layer, state = self.layer, self.state
        past, cos_sin = kwargs.get("past_key_values"), kwargs.get("position_embeddings")
        idx = layer.self_attn.layer_idx
        if (args or cos_sin is None or (past is not None and past.get_seq_length(idx) > 0)):
            return self._whole(hidden_states, args, kwargs)
        plan = state.batch_plan()
        if plan is None or tuple(hidden_states.shape[:2]) != (plan.n, plan.width):
            return self._whole(hidden_states, args, kwargs)
        d = hidden_states.shape[-1]
        flat = hidden_states.reshape(-1, d)
        cos, sin = (t.expand(plan.n, *t.shape[1:]).reshape(plan.n * plan.width, -1) for t in cos_sin)
        call = {k: v for k, v in kwargs.items()
                if k not in ("attention_mask", "position_embeddings", "past_key_values", "position_ids", "use_cache")}
        outs, kvs, prefix = [], [], None
        for kind, src, allowed, group in plan.passes:
            rows, width = src.shape
            pick = src.flatten()
            cache = _PrefixKV() if kind != "suffix" else _PrefixKV(prefix, group)
            y = type(layer).forward(layer, flat.index_select(0, pick).view(rows, width, d), attention_mask=allowed,
                                    position_embeddings=(cos.index_select(0, pick).view(rows, width, -1),
                                                         sin.index_select(0, pick).view(rows, width, -1)),
                                    past_key_values=cache, use_cache=False, **call)
            if kind == "prefix":
                prefix = cache.kv
            kvs.append(cache.kv)
            outs.append(y.reshape(-1, d))
        if past is not None:  # a fresh cache (a training forward with use_cache): filled as the whole layer would
            past.update(*(self._rows(plan, [t[i] for t in kvs]) for i in (0, 1)), idx)
        state.layers_run += 1
        state.tokens_spared += plan.tokens_spared
        return self._assemble(plan, outs, d)

    @staticmethod
    def _assemble(plan, parts, d):
        """Per-pass outputs (flattened slots) -> (n, width, d), zero at padding."""
        parts = [*parts, parts[0].new_zeros((1, d))]
        return torch.cat(parts).index_select(0, plan.out).view(plan.n, plan.width, d)

    def _rows(self, plan, per_pass):
        """Per-pass keys or values (rows, heads, L, head_dim) -> the batch's (n, heads, width, head_dim)."""
        heads, hd = per_pass[0].shape[1], per_pass[0].shape[-1]
        flat = [t.transpose(1, 2).reshape(-1, heads * hd) for t in per_pass]
        return self._assemble(plan, flat, heads * hd).view(plan.n, plan.width, heads, hd).transpose(1, 2)


def _supported(layer) -> bool:
    attn = getattr(layer, "self_attn", None)
    if attn is None or not hasattr(attn, "layer_idx"):
        return False
    cfg = getattr(attn, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    return not getattr(attn, "sliding_window", None) and not float(getattr(attn, "attention_dropout", 0.0) or 0.0)


@contextmanager
def shared_prefix(model, enabled: bool = True):
    """Within the block, `model`'s trainable decoder layers run rows that share a prefix with
    that prefix once (module docstring); yields the SharedState (counts), or None when no
    layer qualifies. Enter it after `pooled_top` (whose layer it leaves alone). The model is
    whole again on exit."""
    dec = decoder_of(model) if enabled else None
    layers = [] if dec is None else [
        layer for layer in dec.layers
        if any(p.requires_grad for p in layer.parameters()) and "forward" not in vars(layer) and _supported(layer)]
    if not layers:
        yield None
        return
    state = SharedState()
    names = ("input_ids", "attention_mask", "position_ids")

    def keep_inputs(module, args, kwargs):
        state.inputs = {**dict(zip(names, args)), **{k: kwargs.get(k) for k in names if k in kwargs}}
        state.plan = None
        return None

    hook = dec.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    for layer in layers:
        layer.forward = SharedPrefixLayer(layer, state)
    try:
        yield state
    finally:
        hook.remove()
        for layer in layers:
            del layer.forward
