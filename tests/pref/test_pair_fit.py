"""pair_fit: over-long preference pairs cut once, one prompt for both answers, on the real template."""

import pytest

from posttrain.pref.pair_fit import fit_pair, fit_pairs, lengths

LONG = " ".join(f"word{i}" for i in range(400))


def pair(turns=3):
    msgs = []
    for t in range(turns):
        msgs += [{"role": "user", "content": f"Question {t}: {LONG}"},
                 {"role": "assistant", "content": f"Answer {t}: {LONG}"}]
    msgs.append({"role": "user", "content": f"And finally {LONG} END-OF-PROMPT"})
    return {"id": "p", "messages": msgs, "chosen": "Chosen answer starts here. " + LONG,
            "rejected": "Rejected one starts differently. " + LONG[:900]}


@pytest.mark.parametrize("max_length", [64, 128, 512])
@pytest.mark.parametrize("turns", [0, 1, 3])
def test_long_pairs_fit_with_one_prompt(tokenizer, max_length, turns):
    p = pair(turns)
    assert sum(lengths(tokenizer, p["messages"], p["chosen"], p["rejected"])[:2]) > max_length
    messages, chosen, rejected, cut = fit_pair(tokenizer, p["messages"], p["chosen"], p["rejected"], max_length)
    n_prompt, n_chosen, n_rejected = lengths(tokenizer, messages, chosen, rejected)
    assert cut and n_prompt + max(n_chosen, n_rejected) <= max_length
    # answers keep their start and get at least half the budget; the prompt keeps its end
    assert chosen.startswith("Chosen answer starts here.") and rejected.startswith("Rejected one starts")
    assert max(n_chosen, n_rejected) >= max_length // 2 - 2
    last = messages[-1]["content"]
    assert last and p["messages"][-1]["content"].endswith(last) and messages[0]["role"] == "user"
    if max_length >= 128:
        assert last.endswith("END-OF-PROMPT")
    assert len(messages) % 2 == 1  # user / assistant turns stay paired, ending on the user


def test_short_pairs_are_left_alone_and_cuts_counted(tokenizer):
    short = {"id": "s", "messages": [{"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "Go away."}
    out, n_cut = fit_pairs(tokenizer, [short, pair(1)], 256)
    assert out[0] is short and n_cut == 1 and out[1]["id"] == "p"
    assert fit_pair(tokenizer, short["messages"], short["chosen"], short["rejected"], 256)[3] is False


def test_trl_tokenizes_a_fitted_pair_within_max_length_with_one_prompt(tokenizer):
    """What trl's DPO does with the fitted columns: one prompt tokenization, each answer after it."""
    max_length = 96
    p = pair(2)
    messages, chosen, rejected, _ = fit_pair(tokenizer, p["messages"], p["chosen"], p["rejected"], max_length)
    prompt = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
    for answer in (chosen, rejected):
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True,
                                             return_dict=True)
        assert full["input_ids"][:len(prompt["input_ids"])] == prompt["input_ids"]
        assert len(full["input_ids"]) <= max_length
