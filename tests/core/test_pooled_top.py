"""core.pooled_top: a one-output head's top layer at the pooled token only, exactly."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.models import build_tiny_causal_lm, shrink_layers
from posttrain.core.pooled_top import PooledTop, pooled_top
from posttrain.core.trunk import decoder_of, frozen_trunk


def regressor(tokenizer, arch="llama", layers=4, trainable=2):
    """A tiny 1-output sequence classifier (pref_rm's and the verifier's head), top layers trained."""
    from transformers import AutoModelForSequenceClassification

    lm = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=layers, arch=arch)
    torch.manual_seed(1)
    lm.config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(lm.config)
    model.model.load_state_dict(lm.model.state_dict())
    return shrink_layers(model, num_layers=0, trainable_layers=trainable)


def rows(tokenizer, left: bool):
    g = torch.Generator().manual_seed(5)
    lengths, width, pad = (13, 7, 10, 4), 13, tokenizer.pad_token_id
    ids = torch.full((len(lengths), width), pad)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        span = slice(width - n, width) if left else slice(0, n)
        ids[i, span] = torch.randint(10, 2000, (n,), generator=g)
        mask[i, span] = 1
    return ids, mask


def loss_and_grads(model, ids, mask):
    model.zero_grad()
    scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    loss = ((scores - torch.linspace(0, 1, len(scores))) ** 2).mean()
    loss.backward()
    return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch,left,trunk", [("llama", False, False), ("llama", True, False),
                                             ("llama", False, True), ("qwen3", False, True)])
def test_pooled_top_matches_the_full_forward(tokenizer, arch, left, trunk):
    model = regressor(tokenizer, arch).train()
    ids, mask = rows(tokenizer, left)
    ref, ref_grads = loss_and_grads(model, ids, mask)
    with frozen_trunk(model, trunk), pooled_top(model) as pooled:
        assert isinstance(decoder_of(model).layers[-1].forward, PooledTop)
        scores, grads = loss_and_grads(model, ids, mask)
        assert pooled.calls == 1
    assert torch.allclose(scores, ref, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and any("layers.3." in n for n in grads)
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5), name
    assert "forward" not in vars(decoder_of(model).layers[-1])  # whole again


def test_pooled_top_is_not_a_no_op_and_leaves_other_models_alone(tokenizer):
    model = regressor(tokenizer).train()
    ids, mask = rows(tokenizer, False)
    with torch.no_grad(), pooled_top(model) as pooled:
        pooled.inputs = {"input_ids": ids, "attention_mask": mask}
        dec = decoder_of(model)
        h = torch.randn(ids.shape[0], ids.shape[1], 64)
        cos_sin = dec.rotary_emb(h, position_ids=torch.arange(ids.shape[1])[None])
        full = type(pooled.layer).forward(pooled.layer, h, attention_mask=None, position_embeddings=cos_sin)
        fast = pooled(h, attention_mask=None, position_embeddings=cos_sin)
    last = mask.sum(1) - 1
    r = torch.arange(len(last))
    # the pooled token: the layer's output (causal over the real tokens); elsewhere the input
    assert torch.allclose(fast[r, last], full[r, last], atol=1e-5)
    assert not torch.allclose(fast[r, last], h[r, last], atol=1e-3)
    keep = torch.ones(ids.shape, dtype=torch.bool)
    keep[r, last] = False
    assert torch.equal(fast[keep], h[keep])
    # a causal LM (its head reads every position) runs whole
    lm = build_tiny_causal_lm(tokenizer, layers=2)
    with pooled_top(lm) as none:
        assert none is None
