"""rec LoRA SFT learns: a tiny model overfits four Yes/No examples. Fails if the optimizer
step were a no-op (checked by hand with learning_rate 0: loss unchanged, B stays zero)."""

import datasets
import torch
from safetensors.torch import load_file

from posttrain.core.training import TrainSettings
from posttrain.rec.lora import LoraSettings, load_for_eval, train
from posttrain.rec.tokenization import tokenize_records

RECORDS = [{"instruction": "Will the user like this movie? Answer Yes or No.",
            "input": f"History: movie {i} rated {r}. Candidate: movie {i + 1}.", "output": out,
            "system": "", "history": []}
           for i, (r, out) in enumerate([(5, "Yes"), (1, "No"), (5, "Yes"), (1, "No")])]


def _answer_loss(model, cols) -> float:
    with torch.inference_mode():
        losses = [model(input_ids=torch.tensor([i]), labels=torch.tensor([lab])).loss.item()
                  for i, lab in zip(cols["input_ids"], cols["labels"])]
    return sum(losses) / len(losses)


def test_lora_sft_overfits_and_moves_b(tmp_path, tiny_model_dir, tokenizer):
    cols, _ = tokenize_records(tokenizer, RECORDS, cutoff_len=256)
    ds = datasets.Dataset.from_dict(cols)
    datasets.DatasetDict(train=ds, eval=ds).save_to_disk(str(tmp_path / "tok"))
    s = LoraSettings(lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                     lr=5e-2, max_steps=30, batch_size=4, grad_accum=1, warmup_steps=0,
                     max_train_examples=0, max_eval_examples=0, seed=0, quantization="none", lora_layers=0)
    res = train(tiny_model_dir, tmp_path / "tok", tmp_path / "adapter", s,
                TrainSettings(precision="fp32", frozen_trunk=True, labelled_head=True, shared_prefill=True,
                              shared_prefix=True, frozen_cast=True, reuse_freed_memory=True), live_dir=tmp_path / "dvclive")
    before = _answer_loss(load_for_eval(tiny_model_dir), cols)
    after = _answer_loss(load_for_eval(tiny_model_dir, tmp_path / "adapter"), cols)
    # A tiny random model's LM head has small weights, so its logits cannot get sharp (the
    # floor here is ~10.1 nats from ln(49152) = 10.8): the stated margin is 0.4 nats.
    assert after < before - 0.4, (before, after)
    assert res["metrics"]["steps"] == 30 and res["metrics"]["labelled_positions_head"] is True
    b = [t for k, t in load_file(tmp_path / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert b and all(t.abs().max() > 0 for t in b)  # every B left its zero init
