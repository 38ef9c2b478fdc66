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

Rows that begin with the same tokens share that prefix's trunk: a reward model's chosen and
rejected answers follow one prompt (43% of pref_rm's tokens), DPO's too, and GRPO's
`num_generations` completions one prompt. When that saves at least a fifth of a batch's trunk
tokens, the trunk runs each group's prefix once (with its KV cache) and then every row's own
suffix against its group's cache, at the positions the whole row would have: causal
attention again, so exact up to float rounding. Groups whose prefixes differ much in length
run in separate passes (chunks of groups sorted by prefix length, split where the padding
saved outweighs a pass's fixed cost): one pair's 40-token prompt padded to another's 230
would cost more than it spares.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager, nullcontext

import torch

log = logging.getLogger(__name__)

MIN_SHARED = 16  # tokens: a shorter common prefix is not worth its own trunk pass
# A trunk pass's fixed cost (dispatch, small-matmul inefficiency) in token positions: at
# SmolLM2's widths on 2 cores a pass costs ~5-10 ms beyond its tokens, each ~0.1 ms per 6 layers.
PASS_COST = 96


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
        # its own (empty) hooks: hooks on the decoder (the batch's ids for pooled_top and
        # shared_prefix) must not see the trunk's inner calls on parts of the batch
        for name in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
            trunk.__dict__[name] = type(getattr(decoder, name))()
        trunk.config = copy.copy(decoder.config)
        trunk.config.num_hidden_layers = depth  # the stack runs layers[:num_hidden_layers]
        object.__setattr__(self, "_trunk", trunk)  # not a submodule: no second path to its weights
        self.cache: dict[bytes, object] = {}
        self.depth = depth
        self.reused = self.computed = self.direct = 0
        self.shared_tokens = 0  # trunk tokens not computed thanks to shared prefixes
        self.chunks = 0  # shared-prefix passes (pairs of prefix + suffix passes)
        self._kwargs: dict = {}
        self._pause = nullcontext

    @property
    def weight(self):  # get_input_embeddings().weight keeps working (tied heads, resizing checks)
        return self.embed.weight

    def paused(self):
        """The model with its own embedding and layers for the block (e.g. cached generation)."""
        return self._pause()

    def _run(self, ids, mask, position_ids=None):
        with torch.no_grad():
            plan = shared_plan(ids, mask) if position_ids is None else None
            if plan is None:
                return self._trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                   use_cache=False).last_hidden_state
            chunks, alone = plan
            ends = row_ends(mask)
            hidden = None
            for groups in chunks:
                hidden = self._run_shared(ids, mask, groups, ends, hidden)
            if alone:
                w = max(ends[r] for r in alone)
                hidden[alone, :w] = self._trunk(input_ids=ids[alone, :w], attention_mask=mask[alone, :w],
                                                use_cache=False).last_hidden_state
            self.chunks += len(chunks)
            return hidden

    def _run_shared(self, ids, mask, groups, ends, hidden):
        """The trunk of a chunk of rows grouped by a shared prefix (see the module docstring):
        one pass over the groups' prefixes, one over every grouped row's suffix (up to its last
        real token) against its group's KV cache, written into `hidden` (n x width x d, made
        here when None). Positions after a row's last real token are padding and stay zero."""
        n, width = ids.shape
        top = max(p for _, p in groups)
        heads = torch.tensor([rows[0] for rows, _ in groups], device=ids.device)
        pmask = mask[heads, :top].clone()
        for k, (_, p) in enumerate(groups):
            pmask[k, p:] = 0  # a shorter prefix: what follows it is padding to its state (causal)
        pre = self._trunk(input_ids=ids[heads, :top], attention_mask=pmask, use_cache=True)
        members = [(r, k, p) for k, (rows, p) in enumerate(groups) for r in rows]
        span = max(ends[r] - p for r, _, p in members)
        sids = ids.new_zeros((len(members), span))
        smask = mask.new_zeros((len(members), top + span))
        for t, (r, _, p) in enumerate(members):
            sids[t, :ends[r] - p] = ids[r, p:ends[r]]
            smask[t, :p] = mask[r, :p]
            smask[t, top:top + ends[r] - p] = mask[r, p:ends[r]]
        # the whole row's positions (past its end: padding)
        spos = torch.tensor([[p + j for j in range(span)] for _, _, p in members], device=ids.device)
        cache = pre.past_key_values
        cache.reorder_cache(torch.tensor([k for _, k, _ in members], device=ids.device))
        suf = self._trunk(input_ids=sids, attention_mask=smask, position_ids=spos, past_key_values=cache,
                          use_cache=True).last_hidden_state
        if hidden is None:
            hidden = suf.new_zeros((n, width, suf.shape[-1]))
        for t, (r, k, p) in enumerate(members):
            hidden[r, :p] = pre.last_hidden_state[k, :p]
            hidden[r, p:ends[r]] = suf[t, :ends[r] - p]
        self.shared_tokens += sum(ends[r] for r, _, _ in members) - (len(groups) * top + len(members) * span)
        return hidden

    def forward(self, input_ids):
        mask, pos = self._kwargs.get("attention_mask"), self._kwargs.get("position_ids")
        if self._kwargs.get("past_key_values") is not None or (mask is not None and mask.shape != input_ids.shape):
            # a decoding step: the frozen layers would need their own KV cache
            raise RuntimeError("frozen_trunk serves whole sequences, not cached generation; "
                               "generate outside the frozen_trunk block")
        if mask is None:
            mask = torch.ones_like(input_ids)
        if mask.dim() != 2 or pos is not None or not right_padded(mask):
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


def row_ends(mask) -> list[int]:
    """Per row, one past its last real token."""
    m = mask.to(torch.int64)
    idx = torch.arange(1, m.shape[1] + 1, device=m.device).expand_as(m)
    return (idx * m).max(dim=1).values.tolist()


def _prefix_groups(ids, ends, common) -> list[tuple[list[int], int]]:
    """[(rows, prefix length)]: rows that share a prefix, grouped so that the tokens the trunk
    computes are fewest. Rows sorted by their tokens put the longest common prefixes side by
    side; consecutive runs of that order become groups (least total tokens by dynamic
    programming), so pairs that share a whole prompt are not merged into one group by the
    chat template's first tokens, which every row shares. A prefix leaves each row at least
    one token of its own."""
    n = len(ends)
    order = sorted(range(n), key=lambda r: ids[r, :ends[r]].tolist())

    def group(i, j):  # (prefix length, tokens computed) of order[i:j] as one group
        rows = order[i:j]
        if len(rows) == 1:
            return 0, ends[rows[0]]
        p = min(min(common[a][b] for a, b in zip(rows, rows[1:])), min(ends[r] for r in rows) - 1)
        return (p, p + sum(ends[r] - p for r in rows)) if p >= MIN_SHARED else (0, None)

    best, cut = [0] + [None] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            _, c = group(i, j)
            if c is not None and (best[j] is None or best[i] + c < best[j]):
                best[j], cut[j] = best[i] + c, i
    groups, j = [], n
    while j:
        i = cut[j]
        if j - i > 1:
            groups.insert(0, (sorted(order[i:j]), group(i, j)[0]))
        j = i
    return groups


def shared_plan(ids, mask) -> tuple[list[list[tuple[list[int], int]]], list[int]] | None:
    """(chunks of [(rows, prefix length)], rows alone) of rows that begin with the same >=
    MIN_SHARED tokens (and the same padding), when running each group's prefix once saves at
    least a fifth of the trunk's positions (each pass counted at PASS_COST more); else None.
    Groups are sorted by prefix length and cut into the consecutive chunks of least cost."""
    n, width = ids.shape
    if n < 2 or width <= MIN_SHARED:
        return None
    same = (ids[:, None, :] == ids[None, :, :]) & (mask[:, None, :] == mask[None, :, :])
    common = same.to(torch.int32).cumprod(dim=-1).sum(dim=-1).tolist()  # n x n common prefix lengths
    ends = row_ends(mask)
    groups = _prefix_groups(ids, ends, common)
    taken = {r for rows, _ in groups for r in rows}
    if not groups:
        return None
    groups.sort(key=lambda g: g[1])

    def cost(chunk):  # its prefix pass and its suffix pass
        top, span = max(p for _, p in chunk), max(ends[r] - p for rows, p in chunk for r in rows)
        return len(chunk) * top + sum(len(rows) for rows, _ in chunk) * span + 2 * PASS_COST

    # best[j]: least cost of groups[:j] in consecutive chunks; cut[j]: where its last chunk starts
    best, cut = [0.0] + [float("inf")] * len(groups), [0] * (len(groups) + 1)
    for j in range(1, len(groups) + 1):
        for i in range(j):
            c = best[i] + cost(groups[i:j])
            if c < best[j]:
                best[j], cut[j] = c, i
    chunks, j = [], len(groups)
    while j:
        chunks.insert(0, groups[cut[j]:j])
        j = cut[j]
    alone = [r for r in range(n) if r not in taken]
    total = best[-1] + (len(alone) * max(ends[r] for r in alone) + PASS_COST if alone else 0)
    return (chunks, alone) if total <= 0.8 * (n * max(ends) + PASS_COST) else None


def right_padded(mask) -> bool:
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

    def install():
        dec.embed_tokens = trunk
        for i in range(depth):
            dec.layers[i] = _Skip()

    def uninstall():
        dec.embed_tokens = embed
        for i in range(depth):
            dec.layers[i] = layers[i]

    @contextmanager
    def pause():
        uninstall()
        try:
            yield
        finally:
            install()

    hook = dec.register_forward_pre_hook(keep_kwargs, with_kwargs=True)
    install()
    trunk._pause = pause
    log.info("frozen trunk: layers 0-%d of %d computed once per training sequence", depth - 1, len(layers))
    try:
        yield trunk
    finally:
        hook.remove()
        uninstall()
        log.info("frozen trunk: %d sequences computed, %d reused, %d batches run directly, %d tokens "
                 "spared by shared prefixes", trunk.computed, trunk.reused, trunk.direct, trunk.shared_tokens)
        trunk.cache.clear()
