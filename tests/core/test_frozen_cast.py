"""core.frozen_cast: frozen Linears multiply by a weight copy cast once, bit-identically."""

from __future__ import annotations

import torch

from posttrain.core.frozen_cast import CastOnce, frozen_cast
from posttrain.core.models import build_tiny_causal_lm
from posttrain.core.trunk import decoder_of, frozen_trunk


def lora_lm(tokenizer):
    """A tiny causal LM with LoRA on its top layer (DPO's and rec's placement), tied head."""
    from peft import get_peft_model

    from posttrain.core.adapters import lora_config

    lm = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=3)
    lm.config.tie_word_embeddings = True
    lm.tie_weights()
    torch.manual_seed(2)
    model = get_peft_model(lm, lora_config(4, 8, 0.0, "CAUSAL_LM", top_layers=1, model=lm))
    for n, p in model.named_parameters():  # LoRA B starts at zero: give the adapter an effect
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return model.train()


def batch(tokenizer):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(10, 2000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = tokenizer.pad_token_id
    return ids, mask


def step(model, ids, mask, bf16=True):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_frozen_cast_is_bit_identical_to_autocast(tokenizer):
    model = lora_lm(tokenizer)
    ids, mask = batch(tokenizer)
    ref, ref_grads = step(model, ids, mask)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    with frozen_cast(model) as calls:
        cast = [m for m in model.modules() if isinstance(vars(m).get("forward"), CastOnce)]
        # every frozen projection and the tied head (the head's weight is the embedding's)
        assert len(cast) == 3 * 7 + 1 and model.get_output_embeddings() in cast
        assert all(c.forward.low.dtype == torch.bfloat16 for c in cast)
        logits, grads = step(model, ids, mask)
        assert calls[0] == len(cast)  # each ran on its copy once
    assert torch.equal(logits, ref)
    assert grads.keys() == ref_grads.keys() and any("lora_A" in n for n in grads)
    for n in grads:
        assert torch.equal(grads[n], ref_grads[n]), n
    assert not any("forward" in vars(m) for m in model.modules())  # as before
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.dtype == torch.float32 and torch.equal(p, frozen[n]), n


def test_frozen_cast_with_the_trunk(tokenizer):
    """Entered before the trunk, the trunk's layers (out of the module tree) run on the copies."""
    model = lora_lm(tokenizer)
    ids, mask = batch(tokenizer)
    ref, ref_grads = step(model, ids, mask)
    with frozen_cast(model) as calls, frozen_trunk(model) as trunk:
        logits, grads = step(model, ids, mask)
        assert trunk.computed == 3 and calls[0] == 3 * 7 + 1
    real = mask.bool()  # the trunk leaves padding positions zero
    assert torch.allclose(logits[real].float(), ref[real].float(), atol=2e-2)  # the trunk's own rounding
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], atol=1e-3, rtol=1e-2), n


def test_frozen_cast_falls_back_outside_autocast_and_after_a_change(tokenizer):
    model = lora_lm(tokenizer)
    ids, mask = batch(tokenizer)
    with frozen_cast(model) as calls:
        # fp32 (no autocast): the fp32 weights, not the bf16 copies
        fp32, _ = step(model, ids, mask, bf16=False)
        assert calls[0] == 0
        # a frozen weight changed in place (a merge, a load) is read, not its stale copy
        proj = decoder_of(model).layers[0].mlp.down_proj
        with torch.no_grad():
            proj.weight.mul_(2.0)
        changed, _ = step(model, ids, mask)
        assert calls[0] == 3 * 7  # every copy but the changed weight's
    plain, _ = step(model, ids, mask, bf16=False)
    assert torch.equal(plain, fp32) is False  # the doubled weight counts outside too
    assert torch.equal(step(model, ids, mask)[0], changed)


def test_trainable_and_non_fp32_layers_are_left_alone(tokenizer):
    model = lora_lm(tokenizer)
    top = decoder_of(model).layers[-1].mlp.up_proj  # LoRA-wrapped: its base layer is frozen
    head = model.get_output_embeddings()
    head.weight.requires_grad_(True)  # the tied head made trainable: autocast caches it itself
    with frozen_cast(model):
        assert isinstance(vars(top.base_layer).get("forward"), CastOnce)
        assert "forward" not in vars(top.lora_A["default"])
        assert "forward" not in vars(head)
    with frozen_cast(model, enabled=False) as calls:
        assert calls is None and not any("forward" in vars(m) for m in model.modules())
