"""DPO implicit rewards: the batched, answer-only scorer equals the plain definition."""

import numpy as np
import pytest
import torch

from posttrain.pref.implicit_reward import answer_ids, implicit_rewards, truncated

PAIRS = [
    {"messages": [{"role": "user", "content": "How do I boil an egg?"}],
     "chosen": "Put it in boiling water for nine minutes.", "rejected": "No."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "Tell me a joke about cats, please."}],
     "chosen": "Why did the cat sit on the computer? To keep an eye on the mouse.",
     "rejected": "I will not."},
]


@pytest.fixture()
def peft_model(tiny_model):
    from peft import LoraConfig, get_peft_model

    m = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    return m.eval()


def _plain_logp(model, seq, n):
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([seq])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(seq[1:]).unsqueeze(1))[:, 0]
    return float(logp[-n:].sum())


def test_fresh_adapter_gives_zero_reward(peft_model, tokenizer):
    rw = implicit_rewards(peft_model, tokenizer, PAIRS, beta=0.1, max_length=64, batch_size=3)
    assert np.allclose(rw["chosen"], 0) and np.allclose(rw["rejected"], 0)  # LoRA B starts at 0


def test_rewards_equal_the_unbatched_definition(peft_model, tokenizer):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    beta, max_length = 0.5, 40
    rw = implicit_rewards(peft_model, tokenizer, PAIRS, beta=beta, max_length=max_length, batch_size=3)
    for i, pair in enumerate(PAIRS):
        for side in ("chosen", "rejected"):
            seq, n = truncated(*answer_ids(tokenizer, pair["messages"], pair[side]), max_length)
            pol = _plain_logp(peft_model, seq, n)
            with peft_model.disable_adapter():
                ref = _plain_logp(peft_model, seq, n)
            assert rw[side][i] == pytest.approx(beta * (pol - ref), rel=1e-4, abs=1e-5)
    assert np.abs(rw["chosen"]).max() > 1e-3  # the perturbed adapter moved the rewards
    assert rw["identical"].tolist() == [0] * len(PAIRS)


def test_pairs_that_truncate_to_the_same_sequence_are_flagged(tokenizer, peft_model):
    # Answers that differ only in their first word become equal when keep_end cuts that word.
    pair = {"messages": PAIRS[0]["messages"], "chosen": "Yes " + "same tail " * 20,
            "rejected": "No " + "same tail " * 20}
    rw = implicit_rewards(peft_model, tokenizer, [pair, PAIRS[0]], beta=0.1, max_length=12, batch_size=2)
    assert rw["identical"].tolist() == [1, 0]
    assert rw["chosen"][0] == pytest.approx(rw["rejected"][0])


def test_keep_end_truncation_keeps_the_answer(tokenizer):
    prompt, answer = answer_ids(tokenizer, PAIRS[1]["messages"], PAIRS[1]["chosen"])
    seq, n = truncated(prompt, answer, 10)
    assert len(seq) == 10 and seq[-n:] == answer[-n:] and n == 9
    seq, n = truncated(prompt, answer, 0)
    assert seq == prompt + answer and n == len(answer)


def test_reference_pass_from_the_first_adapted_layer_equals_a_full_second_pass(tiny_model, tokenizer,
                                                                              monkeypatch):
    """LoRA on the top layer only (as the CPU default trains the top 4 of 30): the reference pass
    starts at that layer from the policy pass's hidden state, and gives the very same numbers as
    a full pass with the adapter disabled."""
    from peft import LoraConfig, get_peft_model

    from posttrain.pref import implicit_reward

    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  layers_to_transform=[1])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    decoder = model.get_base_model().get_decoder()
    assert implicit_reward.first_adapted_layer(decoder) == 1
    shared = implicit_rewards(model, tokenizer, PAIRS, beta=0.1, max_length=64, batch_size=3)
    monkeypatch.setattr(implicit_reward, "first_adapted_layer", lambda d: 0)  # two full passes
    full = implicit_rewards(model, tokenizer, PAIRS, beta=0.1, max_length=64, batch_size=3)
    for side in ("chosen", "rejected"):
        assert np.array_equal(shared[side], full[side]), side
    assert np.abs(shared["chosen"]).max() > 1e-3
