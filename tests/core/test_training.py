"""Precision and the frozen trunk (posttrain.core.training, posttrain.core.trunk): bf16 and
fp32 steps agree, the cached trunk is the full forward, and a run reports what it trained."""

from __future__ import annotations

import pytest
import torch

from posttrain.core import training
from posttrain.core import trunk as trunk_mod
from posttrain.core.adapters import lora_config
from posttrain.core.models import build_tiny_causal_lm
from posttrain.core.training import TrainSettings, device_args, fit, resolve_precision
from posttrain.core.trunk import decoder_of, frozen_trunk, trunk_depth


def lora_model(tokenizer, top: int = 2, layers: int = 4, hidden: int = 64):
    from peft import get_peft_model

    base = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=hidden, layers=layers)
    return get_peft_model(base, lora_config(8, 16, 0.0, "CAUSAL_LM", top_layers=top, model=base))


def batch(tokenizer, lengths=(12, 9, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(10, 2000, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids[mask == 0] = tokenizer.pad_token_id
    return ids, mask


def test_trunk_depth_is_the_first_trainable_layer(tokenizer):
    model = lora_model(tokenizer, top=1, layers=4)
    assert trunk_depth(model) == 3
    full = lora_model(tokenizer, top=0, layers=4)  # LoRA everywhere: nothing frozen to cache
    assert trunk_depth(full) == 0
    model.base_model.model.config.attention_dropout = 0.1  # stochastic trunk: not a function of the tokens
    assert trunk_depth(model) == 0


def test_frozen_trunk_equals_the_full_forward_and_its_gradients(tokenizer):
    model = lora_model(tokenizer, top=2, layers=4)
    model.train()
    ids, mask = batch(tokenizer)
    labels = ids.masked_fill(mask == 0, -100)

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.logits.detach(), out.loss.item(), grads

    ref_logits, ref_loss, ref_grads = loss_and_grads()
    with frozen_trunk(model) as trunk:
        assert trunk is not None and trunk.depth == 2
        logits, loss, grads = loss_and_grads()
        again, loss2, _ = loss_and_grads()  # second pass: from the cache
        assert (trunk.computed, trunk.reused) == (3, 3)
    real = mask.bool()
    assert torch.allclose(logits[real], ref_logits[real], atol=1e-5)
    assert torch.allclose(again[real], ref_logits[real], atol=1e-5)
    assert loss == pytest.approx(ref_loss, abs=1e-5) and loss2 == pytest.approx(ref_loss, abs=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5), name
    # whole again afterwards: the embedding and every layer are the model's own
    dec = decoder_of(model)
    assert isinstance(dec.embed_tokens, torch.nn.Embedding)
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in dec.layers)
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits[real], ref_logits[real], atol=1e-6)


def test_frozen_trunk_runs_left_padded_batches_directly_and_exactly(tokenizer):
    model = lora_model(tokenizer, top=2, layers=4).eval()
    ids, mask = batch(tokenizer)
    left_ids, left_mask = torch.flip(ids, dims=[1]), torch.flip(mask, dims=[1])  # pads first
    with torch.no_grad():
        ref = model(input_ids=left_ids, attention_mask=left_mask).logits
        with frozen_trunk(model) as trunk:
            out = model(input_ids=left_ids, attention_mask=left_mask).logits
            assert trunk.direct == 1 and not trunk.cache
    assert torch.allclose(out[left_mask.bool()], ref[left_mask.bool()], atol=1e-5)


def prefix_rows(tokenizer, left: bool):
    """Rows as the trainers batch them: pairs of answers after one prompt, right-padded (RM, DPO),
    or prompts left-padded then completions right-padded (GRPO); one row shares nothing."""
    g = torch.Generator().manual_seed(3)
    tok = lambda n: torch.randint(10, 2000, (n,), generator=g).tolist()  # noqa: E731
    pad = tokenizer.pad_token_id
    rows = []
    for plen in (24, 40):
        prompt = tok(plen)
        rows += [(prompt, tok(n)) for n in (9, 17, 5)]
    rows.append((tok(30), tok(12)))
    if not left:
        width = max(len(p) + len(c) for p, c in rows)
        ids = [p + c + [pad] * (width - len(p) - len(c)) for p, c in rows]
        mask = [[1] * (len(p) + len(c)) + [0] * (width - len(p) - len(c)) for p, c in rows]
    else:
        pw, cw = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
        ids = [[pad] * (pw - len(p)) + p + c + [pad] * (cw - len(c)) for p, c in rows]
        mask = [[0] * (pw - len(p)) + [1] * (len(p) + len(c)) + [0] * (cw - len(c)) for p, c in rows]
    return torch.tensor(ids), torch.tensor(mask)


# a pass's fixed cost scaled to these tiny rows; free passes: the right-padded 24- and 40-token
# prompts run in two chunks rather than one padded to 40 (left-padded, both prefixes are 40 wide)
@pytest.mark.parametrize("left,pass_cost,chunks", [(False, 20, 1), (True, 20, 1), (False, 0, 2), (True, 0, 1)])
def test_frozen_trunk_runs_a_shared_prefix_once_and_exactly(tokenizer, monkeypatch, left, pass_cost, chunks):
    monkeypatch.setattr(trunk_mod, "PASS_COST", pass_cost)
    model = lora_model(tokenizer, top=1, layers=4)
    model.train()
    ids, mask = prefix_rows(tokenizer, left)
    labels = ids.masked_fill(mask == 0, -100)

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ref_logits, ref_grads = loss_and_grads()
    with frozen_trunk(model) as trunk:
        logits, grads = loss_and_grads()
    real = mask.bool()
    # two prompts of 24 and 40 tokens, each run once instead of three times (less the padding
    # of the batched prefix and suffix passes)
    assert trunk.shared_tokens > 0 and trunk.direct == int(left) and trunk.chunks == chunks
    assert torch.allclose(logits[real], ref_logits[real], atol=1e-4)
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5), name


def test_shared_plan_splits_groups_by_prefix_length():
    pad = 0
    def rows(n, p, suffix):  # n rows sharing a p-token prefix (tokens unique to the group)
        head = list(range(1000 + 7 * p, 1000 + 8 * p))
        return [head + [5000 + 31 * i + j for j in range(suffix)] for i in range(n)]
    groups = rows(2, 20, 30) + rows(2, 24, 30) + rows(2, 200, 30) + rows(2, 210, 30) + [list(range(50, 100))]
    width = max(map(len, groups))
    ids = torch.tensor([g + [pad] * (width - len(g)) for g in groups])
    mask = torch.tensor([[1] * len(g) + [0] * (width - len(g)) for g in groups])
    chunks, alone = trunk_mod.shared_plan(ids, mask)
    assert [[p for _, p in c] for c in chunks] == [[20, 24], [200, 210]] and alone == [8]
    assert [sorted(r for rows_, _ in c for r in rows_) for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # nothing shared: no plan
    assert trunk_mod.shared_plan(ids[[0, 2, 4, 8]], mask[[0, 2, 4, 8]]) is None


def test_generation_pauses_the_frozen_trunk(tokenizer):
    import types

    from posttrain.core.rollouts import rollouts

    model = lora_model(tokenizer, top=2, layers=4).eval()
    ids, mask = batch(tokenizer, lengths=(6, 6))
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    with torch.no_grad():
        ref = model.generate(**kw)
        with frozen_trunk(model) as trunk, \
                rollouts(types.SimpleNamespace(model=model), shared_prefill=False, bf16=False, trunk=trunk):
            out = model.generate(**kw)
            assert isinstance(decoder_of(model).embed_tokens, type(trunk))  # back after generating
    assert torch.equal(out, ref)


def test_frozen_trunk_refuses_cached_generation(tokenizer):
    model = lora_model(tokenizer, top=2, layers=4).eval()
    ids, mask = batch(tokenizer, lengths=(6, 6))
    with frozen_trunk(model), pytest.raises(RuntimeError, match="generate outside"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False)


def test_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(training, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    args = device_args(TrainSettings(precision="fp32", frozen_trunk=True, labelled_head=True, shared_prefill=True,
                                     shared_prefix=True, frozen_cast=True, reuse_freed_memory=True))
    assert args == {"use_cpu": True, "bf16": False, "gradient_checkpointing": False}


def one_step(tokenizer, tmp_path, precision: str, frozen: bool, steps: int = 1):
    """One Trainer step (lr 1e-2, AdamW) on a fixed batch; (loss, {lora_B name: update}, facts)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = lora_model(tokenizer, top=2, layers=4, hidden=128)
    ids, mask = batch(tokenizer, lengths=(24, 20, 16, 12))
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                            "labels": ids.masked_fill(mask == 0, -100).tolist()})
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    machine = TrainSettings(precision=precision, frozen_trunk=frozen, labelled_head=True, shared_prefill=True,
                            shared_prefix=True, frozen_cast=True, reuse_freed_memory=True)
    args = TrainingArguments(output_dir=str(tmp_path / precision), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
                             seed=0, disable_tqdm=True, lr_scheduler_type="constant",
                             **device_args(machine))
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    facts = fit(trainer, machine)
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return loss, {n: p.detach() - before[n] for n, p in model.named_parameters() if "lora_B" in n}, facts


def test_one_bf16_step_agrees_with_fp32(tokenizer, tmp_path):
    """bf16 autocast (what `precision: bf16` gives the Trainer) against fp32 on the same batch:
    the loss within 2% and each LoRA B update pointing the same way (cosine > 0.9). B starts
    at zero, so its update is the optimizer step itself: a no-op step would fail the norm check."""
    loss32, upd32, facts32 = one_step(tokenizer, tmp_path, "fp32", frozen=False)
    loss16, upd16, facts16 = one_step(tokenizer, tmp_path, "bf16", frozen=True)
    assert facts32["precision"] == "fp32" and facts16["precision"] == "bf16"
    # bf16: the frozen layers' matmuls ran on weights cast once (posttrain.core.frozen_cast)
    assert facts16["frozen_cast_calls"] > 0 and facts32["frozen_cast_calls"] == 0
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert loss16 != loss32  # autocast really ran: bf16 rounding moves the loss a little
    assert upd32.keys() == upd16.keys() and upd32
    for name, u in upd32.items():
        v = upd16[name]
        assert u.norm() > 0 and v.norm() > 0, name
        cos = torch.nn.functional.cosine_similarity(u.flatten(), v.flatten(), dim=0)
        assert cos > 0.9, (name, float(cos))


def test_fit_reports_trained_tokens_and_the_trunk(tokenizer, tmp_path):
    _, _, facts = one_step(tokenizer, tmp_path, "fp32", frozen=True)
    assert facts["trained_tokens"] == 24 + 20 + 16 + 12 and facts["trained_sequences"] == 4
    assert facts["frozen_trunk_layers"] == 2 and facts["frozen_trunk_computed"] == 4
    _, _, off = one_step(tokenizer, tmp_path, "fp32", frozen=False)
    assert off["frozen_trunk_layers"] == 0 and off["trained_tokens"] == facts["trained_tokens"]
    assert facts["steady_tokens_per_s"] is None  # one step: nothing after its end to time


def test_fit_times_the_steps_after_the_first(tokenizer, tmp_path):
    _, _, facts = one_step(tokenizer, tmp_path, "fp32", frozen=True, steps=3)
    assert facts["trained_tokens"] == 3 * (24 + 20 + 16 + 12)
    assert facts["steady_tokens_per_s"] > 0 and facts["trained_tokens_per_s"] > 0
