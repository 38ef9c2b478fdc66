"""The labelled-positions LM head (posttrain.core.logprob_head) gives trl's fused head's
outputs and gradients, projecting only the positions that carry a label."""

from __future__ import annotations

import types

import pytest
import torch

from posttrain.core.adapters import lora_config
from posttrain.core.logprob_head import FIELDS, labelled_head
from posttrain.core.models import build_tiny_causal_lm


def patched(tokenizer, **kw):
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    base = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=3)
    add_fused_lm_head(base, outputs=FIELDS, **kw)
    model = get_peft_model(base, lora_config(8, 16, 0.0, "CAUSAL_LM", top_layers=1, model=base))
    # a LoRA B of zeros makes every LoRA-A gradient zero: start from a non-trivial adapter
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return model


def completion_batch(tokenizer):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 2000, (3, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[2, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :8] = -100  # the prompt: no label (row 2 has none at all)
    return ids, mask, labels


def run(model, ids, mask, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + 0.1 * out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_labelled_head_matches_trls_fused_head_and_its_gradients(tokenizer, temperature):
    model = patched(tokenizer, temperature=temperature)
    model.train()
    ids, mask, labels = completion_batch(tokenizer)
    ref, ref_grads = run(model, ids, mask, labels)
    trainer = types.SimpleNamespace(model=model, _entropy_bonus_enabled=True)  # entropy carries a gradient
    rows = []
    hook = model.get_base_model().get_output_embeddings().register_forward_hook(
        lambda m, a, o: rows.append(a[0].shape[0]))
    with labelled_head(trainer) as n:
        assert n == 1
        out, grads = run(model, ids, mask, labels)
    hook.remove()
    assert rows == [int((labels[:, 1:] != -100).sum())]  # only the labelled positions were projected
    assert rows[0] < ids.shape[0] * (ids.shape[1] - 1)
    for f in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits"):
        torch.testing.assert_close(getattr(out, f), getattr(ref, f), atol=1e-5, rtol=1e-5, msg=f)
    assert torch.equal(out.is_top1, ref.is_top1) and torch.equal(out.label_mask, ref.label_mask)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert set(grads) == set(ref_grads) and any(g.abs().sum() > 0 for g in grads.values())
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # trl's head is back afterwards, and calls without fused_lm_head still return logits
    assert model.get_base_model().forward.__func__.__code__.co_name == "_fused_forward"
    with labelled_head(trainer):
        plain = model(input_ids=ids, attention_mask=mask)
    assert plain.logits.shape == (*ids.shape, model.config.vocab_size)


def test_labelled_head_leaves_unpatched_models_alone(tokenizer):
    base = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=2)
    with labelled_head(types.SimpleNamespace(model=base)) as n:
        assert n == 0 and "forward" not in base.__dict__


def test_labelled_head_in_bf16_autocast_stays_close(tokenizer):
    model = patched(tokenizer)
    ids, mask, labels = completion_batch(tokenizer)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        with labelled_head(types.SimpleNamespace(model=model)), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    sel = labels[:, 1:] != -100
    assert out.log_probs.dtype == torch.float32
    # bf16 logits: per-token log-probs within a few hundredths of fp32's
    assert (out.log_probs[sel] - ref.log_probs[sel]).abs().max() < 0.1
