"""Collators (exact text formats, shapes, truncation, metadata), the Trainer's length
grouping against random batches and the batch-memory estimate."""

import pytest
import torch

from posttrain.reason.collators import (
    COLLATORS, GenerationCollator, InferenceCollator, MetaVerificationCollator,
    VerificationCollator, get_collator,
)
from posttrain.core.memory import dtype_bytes, estimate_batch_memory

PROBLEM = "Prove that the sum of two even integers is even."
PROOF = "Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even."
EXAMPLES = [
    {"id": "p1/0", "problem": PROBLEM, "proof": PROOF, "score": 1,
     "analysis": "The proof is complete.", "meta_score": 0.5},
    {"id": "p2/3", "problem": "What is 2 + 3?", "proof": "2 + 3 = 6.", "score": 0.0,
     "analysis": "Arithmetic error in the only step.", "meta_score": 1.0},
]


def decode_rows(tok, batch):
    return [tok.decode(ids[mask.bool()]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


# -- exact text formats ------------------------------------------------------

def test_verification_text_and_float_labels(tokenizer):
    c = VerificationCollator(tokenizer)
    assert c.texts(EXAMPLES)[0] == (
        "Problem: Prove that the sum of two even integers is even.\n\n"
        "Proof: Let a = 2m and b = 2n. Then a + b = 2(m + n), which is even.")
    batch = c(EXAMPLES)
    assert decode_rows(tokenizer, batch)[1] == "Problem: What is 2 + 3?\n\nProof: 2 + 3 = 6."
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [1.0, 0.0]


def test_a_text_drawn_again_is_not_tokenized_again(tokenizer, monkeypatch):
    import posttrain.reason.collators as mod

    c = VerificationCollator(tokenizer, max_length=12)  # truncation applies after the cache
    calls = []
    real = type(tokenizer).__call__

    def counting(self, text, **kw):
        calls.append(text)
        return real(self, text, **kw)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    first = c(EXAMPLES)
    assert len(calls) == 2
    again = c(list(reversed(EXAMPLES)))
    assert len(calls) == 2  # both from the cache
    assert torch.equal(again["input_ids"], first["input_ids"].flip(0))
    assert first["input_ids"].shape[1] == 12
    # past the cap, new texts are tokenized every time (and still right)
    monkeypatch.setattr(mod, "CACHE_TOKENS", 0)
    fresh = VerificationCollator(tokenizer, max_length=12)
    assert torch.equal(fresh(EXAMPLES)["input_ids"], first["input_ids"]) and len(calls) == 4
    assert torch.equal(fresh(EXAMPLES)["input_ids"], first["input_ids"]) and len(calls) == 6


def test_meta_verification_text_and_labels(tokenizer):
    c = MetaVerificationCollator(tokenizer)
    assert c.texts(EXAMPLES)[1] == (
        "Problem: What is 2 + 3?\n\nProof: 2 + 3 = 6.\n\nAnalysis: Arithmetic error in the only step.")
    batch = c(EXAMPLES)
    assert batch["labels"].tolist() == [0.5, 1.0]
    assert decode_rows(tokenizer, batch)[1].endswith("\n\nAnalysis: Arithmetic error in the only step.")


def test_generation_prompt_and_causal_labels(tokenizer):
    c = GenerationCollator(tokenizer)
    assert c.texts([{"problem": "What is 2 + 3?"}]) == ["Problem: What is 2 + 3?\n\nSolution:"]
    batch = c([{"problem": "What is 2 + 3?"}, {"problem": PROBLEM}])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert (mask[0] == 0).any(), "the shorter prompt must be padded"
    assert (mask[0, 0] == 0) and (mask[0, -1] == 1), "generation pads on the left"
    assert torch.equal(labels[mask == 1], ids[mask == 1])
    assert (labels[mask == 0] == -100).all()


def test_generation_with_solution_masks_prompt(tokenizer):
    c = GenerationCollator(tokenizer, mask_prompt=True, padding_side="right")
    ex = {"problem": "What is 2 + 3?", "solution": "2 + 3 = 5. The answer is 5."}
    assert c.texts([ex]) == [f"Problem: What is 2 + 3?\n\nSolution: 2 + 3 = 5. The answer is 5.{tokenizer.eos_token}"]
    batch = c([ex, {"problem": PROBLEM, "solution": "Write a = 2m."}])
    n_prompt = len(tokenizer("Problem: What is 2 + 3?\n\nSolution:")["input_ids"])
    row = batch["labels"][0]
    assert (row[:n_prompt] == -100).all()
    kept = row[row != -100]
    assert tokenizer.decode(kept) == f" 2 + 3 = 5. The answer is 5.{tokenizer.eos_token}"


def test_inference_texts_and_metadata_round_trip(tokenizer):
    c = InferenceCollator(tokenizer)
    items = [dict(EXAMPLES[0], extra={"nested": [1, 2]}), {"problem": "What is 2 + 3?", "id": "q"}]
    batch = c(items)
    assert batch["texts"] == [
        f"Problem: {PROBLEM}\n\nProof: {PROOF}", "Problem: What is 2 + 3?\n\nSolution:"]
    assert batch["metadata"] == items
    assert batch["metadata"][0] is not items[0]  # copies: edits downstream cannot corrupt inputs
    assert "labels" not in batch
    assert batch["input_ids"].shape[0] == 2
    assert decode_rows(tokenizer, batch) == batch["texts"]


def test_chat_template_rendering(tokenizer):
    c = VerificationCollator(tokenizer, chat_template=True)
    text = c.texts(EXAMPLES[:1])[0]
    assert text.startswith("<|im_start|>")
    assert f"<|im_start|>user\nProblem: {PROBLEM}\n\nProof: {PROOF}<|im_end|>" in text
    assert not text.rstrip().endswith("<|im_start|>assistant")
    g = GenerationCollator(tokenizer, chat_template=True)
    assert g.texts([{"problem": "x?"}])[0].endswith("Problem: x?\n\nSolution:<|im_end|>\n<|im_start|>assistant\n")
    # Special tokens are in the rendered text, so none are added twice.
    batch = c(EXAMPLES[:1])
    assert tokenizer.decode(batch["input_ids"][0]) == text


# -- padding modes and truncation -------------------------------------------

@pytest.mark.parametrize("name", sorted(COLLATORS))
def test_shapes_longest_and_max_length(tokenizer, name):
    longest = get_collator(name, tokenizer=tokenizer)(EXAMPLES)
    lens = longest["attention_mask"].sum(1)
    assert longest["input_ids"].shape == (2, int(lens.max()))
    assert lens.min() < lens.max()
    fixed = get_collator(name, tokenizer=tokenizer, padding="max_length", max_length=96)(EXAMPLES)
    assert fixed["input_ids"].shape == fixed["attention_mask"].shape == (2, 96)
    assert torch.equal(fixed["attention_mask"].sum(1), lens)
    if name == "generation":
        assert fixed["labels"].shape == (2, 96)
    elif name != "inference":
        assert fixed["labels"].shape == (2,)


def test_truncation_right_and_left(tokenizer):
    full = VerificationCollator(tokenizer)(EXAMPLES[:1])["input_ids"][0]
    right = VerificationCollator(tokenizer, max_length=8)(EXAMPLES[:1])
    assert right["input_ids"].shape == (1, 8)
    assert torch.equal(right["input_ids"][0], full[:8])
    left = VerificationCollator(tokenizer, max_length=8, truncation_side="left")(EXAMPLES[:1])
    assert torch.equal(left["input_ids"][0], full[-8:])
    untruncated = VerificationCollator(tokenizer, max_length=8, truncation=False)(EXAMPLES[:1])
    assert torch.equal(untruncated["input_ids"][0], full)
    with pytest.raises(ValueError, match="max_length"):
        VerificationCollator(tokenizer, max_length=8, truncation=False, padding="max_length")(EXAMPLES[:1])


def test_generation_truncation_keeps_labels_aligned(tokenizer):
    c = GenerationCollator(tokenizer, max_length=6, mask_prompt=True, padding_side="right")
    batch = c([{"problem": PROBLEM, "solution": "long " * 20}])
    assert batch["input_ids"].shape == (1, 6)
    # The whole window is prompt, so nothing is left to learn from.
    assert (batch["labels"] == -100).all()


# -- errors ------------------------------------------------------------------

def test_factory_errors(tokenizer):
    with pytest.raises(ValueError) as e:
        get_collator("verifier", tokenizer=tokenizer)
    for known in ("generation", "inference", "meta_verification", "verification"):
        assert known in str(e.value)
    assert isinstance(get_collator("meta_verification", tokenizer=tokenizer), MetaVerificationCollator)
    with pytest.raises(ValueError, match="padding"):
        get_collator("verification", tokenizer=tokenizer, padding="do_not_pad")
    with pytest.raises(ValueError, match="max_length"):
        get_collator("verification", tokenizer=tokenizer, padding="max_length")


def test_bad_examples_are_named(tokenizer):
    c = VerificationCollator(tokenizer)
    with pytest.raises(ValueError, match=r"example 1 lacks field 'score'"):
        c([EXAMPLES[0], {"problem": "p", "proof": "q"}])
    with pytest.raises(ValueError, match=r"example 0 field 'score' must be a number"):
        c([{"problem": "p", "proof": "q", "score": "high"}])


# -- length grouping (the Trainer's sampler, as bench/collate.py measures it) ------

def _bench_collate():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "collate.py"
    spec = importlib.util.spec_from_file_location("bench_collate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lengths(n=1000, seed=1):
    import numpy as np
    return np.random.default_rng(seed).integers(5, 500, size=n).tolist()


def test_trainer_length_grouping_beats_random_batches():
    bench = _bench_collate()
    lengths = _lengths()
    grouped = bench.grouped_batches(lengths, 16, None, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))  # each index once
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # longest batch first
    # Random batches of 16 from U(5, 500) waste ~45% on padding; grouped ones a few percent.
    g = bench.padding_waste(lengths, grouped)["waste"]
    r = bench.padding_waste(lengths, bench.random_batches(len(lengths), 16, seed=0))["waste"]
    assert g < r / 3
    assert bench.grouped_batches(lengths, 16, None, seed=0) == grouped
    assert bench.grouped_batches(lengths, 16, None, seed=1) != grouped


def test_padding_waste_hand_computed():
    # batch [3, 5] -> padded 10, real 8; batch [4] -> padded 4, real 4 => 2 / 14.
    w = _bench_collate().padding_waste([3, 5, 4], [[0, 1], [2]])
    assert (w["pad_tokens"], w["padded_tokens"]) == (2, 14)
    assert w["waste"] == pytest.approx(2 / 14)


# -- memory estimate ---------------------------------------------------------

def test_memory_worked_example():
    # SmolLM2-135M full fine-tune, bf16, AdamW, batch 8 x 512, fp32 logits, 10% overhead
    # (numbers worked by hand in posttrain/memory.py's docstring).
    est = estimate_batch_memory(n_params=134_515_008, batch_size=8, seq_len=512, hidden_size=576,
                                num_layers=30, dtype="bf16", vocab_size=49_152, training=True,
                                optimizer="adamw", activation_factor=17, logits_dtype="float32",
                                overhead_fraction=0.1)
    assert est["weights"] == 269_030_016
    assert est["gradients"] == 269_030_016
    assert est["optimizer"] == 1_076_120_064
    assert est["activations"] == 2_406_481_920
    assert est["logits"] == 805_306_368
    assert est["overhead"] == pytest.approx(482_596_838.4)
    assert est["total"] == pytest.approx(5_308_565_222.4)
    assert est["total_gib"] == pytest.approx(4.944, abs=1e-3)


def test_memory_dtype_and_inference():
    kw = dict(n_params=1000, batch_size=2, seq_len=10, hidden_size=8, num_layers=4,
              activation_factor=1, overhead_fraction=0.0)
    fp32 = estimate_batch_memory(dtype="float32", training=False, **kw)
    # weights 1000*4 + activations 2*10*8*1 layer*1*4 (inference keeps one layer's activations)
    assert fp32["total"] == 4000 + 640
    assert estimate_batch_memory(dtype=torch.bfloat16, training=False, **kw)["total"] == 2000 + 320
    assert dtype_bytes("nf4") == 0.5
    train = estimate_batch_memory(dtype="float32", training=True, n_trainable=100, **kw)
    # + grads 100*4 + AdamW 100*8, activations for all 4 layers
    assert train["total"] == 4000 + 400 + 800 + 640 * 4
    with pytest.raises(ValueError, match="unknown dtype"):
        estimate_batch_memory(dtype="float12", **kw)
