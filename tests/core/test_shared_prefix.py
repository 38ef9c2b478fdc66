"""core.shared_prefix: trainable layers run a prefix shared by several rows once, exactly."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.models import build_tiny_causal_lm, shrink_layers
from posttrain.core.pooled_top import pooled_top
from posttrain.core.shared_prefix import SharedPrefixLayer, shared_prefix
from posttrain.core.trunk import decoder_of, frozen_trunk


def regressor(tokenizer, arch="llama"):
    """pref_rm's shape: a 1-output sequence classifier, 4 layers, the top 2 trained."""
    from transformers import AutoModelForSequenceClassification

    lm = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=4, arch=arch)
    torch.manual_seed(1)
    lm.config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(lm.config)
    model.model.load_state_dict(lm.model.state_dict())
    return shrink_layers(model, num_layers=0, trainable_layers=2).train()


def lora_lm(tokenizer):
    """DPO's shape: a causal LM with LoRA on its top 2 of 4 layers."""
    from peft import get_peft_model

    from posttrain.core.adapters import lora_config

    lm = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=4)
    torch.manual_seed(2)
    model = get_peft_model(lm, lora_config(4, 8, 0.0, "CAUSAL_LM", top_layers=2, model=lm))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return model.train()


def pairs(tokenizer, left=False):
    """Three prompts with two answers each (a reward model's pairs) and one row alone, padded."""
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(10, 2000, (n,), generator=g) for n in (120, 100, 140)]
    seqs = [torch.cat([p, torch.randint(10, 2000, (a,), generator=g)]) for p in prompts for a in (5, 9)]
    seqs.append(torch.randint(10, 2000, (12,), generator=g))
    width, pad = max(len(s) for s in seqs), tokenizer.pad_token_id
    ids = torch.full((len(seqs), width), pad)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span], mask[i, span] = s, 1
    return ids, mask


def run(model, ids, mask):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask).logits
    if out.shape[-1] == 1:  # a score per row
        loss = ((out[:, 0] - torch.linspace(0, 1, len(out))) ** 2).mean()
    else:  # next-token loss on the real tokens
        labels = ids.masked_fill(mask == 0, -100)
        loss = torch.nn.functional.cross_entropy(out[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same(model, ids, mask, got, ref):
    (out, grads), (ref_out, ref_grads) = got, ref
    real = mask.bool()
    if out.shape[-1] == 1:
        assert torch.allclose(out, ref_out, atol=1e-5)
    else:
        assert torch.allclose(out[real], ref_out[real], atol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], atol=1e-5), n


@pytest.mark.parametrize("arch,trunk,pooled", [("llama", False, False), ("llama", True, True), ("qwen3", True, True)])
def test_shared_prefix_matches_the_full_forward_for_a_reward_model(tokenizer, arch, trunk, pooled):
    model = regressor(tokenizer, arch)
    ids, mask = pairs(tokenizer)
    ref = run(model, ids, mask)
    with frozen_trunk(model, trunk) as cached, pooled_top(model, pooled) as top, shared_prefix(model) as state:
        layers = decoder_of(model).layers
        shared = [i for i, layer in enumerate(layers) if isinstance(vars(layer).get("forward"), SharedPrefixLayer)]
        assert shared == ([2] if pooled else [2, 3])  # the trainable layers, the pooled top left to its own
        got = run(model, ids, mask)
        assert state.layers_run == len(shared)
        assert state.tokens_spared > 0
        if trunk:  # the trunk ran its shared passes on parts of the batch: the layers above still saw all of it
            assert cached.chunks == 1
        if pooled:
            assert top.calls == 1
    assert_same(model, ids, mask, got, ref)
    assert not any("forward" in vars(layer) for layer in decoder_of(model).layers)  # whole again


def test_shared_prefix_matches_the_full_forward_for_a_lora_policy(tokenizer):
    model = lora_lm(tokenizer)
    ids, mask = pairs(tokenizer)
    ref = run(model, ids, mask)
    with frozen_trunk(model), shared_prefix(model) as state:
        got = run(model, ids, mask)
        assert state.layers_run == 2
        with model.disable_adapter(), torch.no_grad():  # DPO's reference pass through the same layers
            ref_pass = model(input_ids=ids, attention_mask=mask).logits
        assert state.layers_run == 4
    assert_same(model, ids, mask, got, ref)
    with model.disable_adapter(), torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ref_pass[mask.bool()], plain[mask.bool()], atol=1e-5)


def test_left_padding_and_unshared_rows_run_the_layer_whole(tokenizer):
    model = regressor(tokenizer)
    ids, mask = pairs(tokenizer, left=True)
    ref = run(model, ids, mask)
    with shared_prefix(model) as state:
        got = run(model, ids, mask)
        assert state.layers_run == 0
        ids2, mask2 = pairs(tokenizer)
        run(model, ids2[[0, 2, 4, 6]], mask2[[0, 2, 4, 6]])  # no two rows share a prompt
        assert state.layers_run == 0
    assert_same(model, ids, mask, got, ref)


def test_a_suffix_must_see_its_prefix(tokenizer, monkeypatch):
    """The check above fails when the suffix rows do not attend to their group's prefix."""
    from posttrain.core import shared_prefix as mod

    model = regressor(tokenizer)
    ids, mask = pairs(tokenizer)
    ref = run(model, ids, mask)
    real_init = mod._Plan.__init__

    def blind(self, *a):
        real_init(self, *a)
        self.passes = [(k, s, m.clone().index_fill_(3, torch.arange(m.shape[3] - s.shape[1]), False)
                        if k == "suffix" else m, g) for k, s, m, g in self.passes]

    monkeypatch.setattr(mod._Plan, "__init__", blind)
    with shared_prefix(model) as state:
        got = run(model, ids, mask)
        assert state.layers_run == 2
    assert not torch.allclose(got[0], ref[0], atol=1e-5)
