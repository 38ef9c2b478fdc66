"""rec_tokenize's library on the real SmolLM2 chat template: masking exactness, truncation."""

import pytest

from posttrain.rec import alpaca

from posttrain.rec import seqlen
from posttrain.core.chat import to_chat_messages, to_generation_messages
from posttrain.core.models import QWEN3_TEMPLATE
from posttrain.rec.scoring import answer_token_id
from posttrain.rec.tokenization import IGNORE_INDEX, render_prompt, tokenize_dataset, tokenize_records


def record(n_history=15, output="Yes", title="Movie"):
    hist = [(f"{title} Number {i} (19{50 + i % 50})", 1.0 + i % 5) for i in range(n_history)]
    return {"instruction": alpaca.INSTRUCTION.format(threshold=4.0),
            "input": alpaca.render_input(hist, "The Candidate (2001)"),
            "output": output, "system": alpaca.SYSTEM, "history": []}


def trained(tokenizer, labels):
    return tokenizer.decode([t for t in labels if t != IGNORE_INDEX])


def test_chat_messages():
    r = {**record(2), "history": [["hi", "hello"]]}
    gen = to_generation_messages(r)
    assert [m["role"] for m in gen] == ["system", "user", "assistant", "user"]
    assert gen[-1]["content"] == r["instruction"] + "\n\n" + r["input"]
    assert to_chat_messages(r) == gen + [{"role": "assistant", "content": "Yes"}]
    assert to_generation_messages({**r, "system": ""})[0]["role"] == "user"


@pytest.mark.parametrize("output", ["Yes", "No"])
def test_masking_is_exact_on_the_real_template(tokenizer, output):
    r = record(output=output)
    cols, stats = tokenize_records(tokenizer, [r], cutoff_len=1024)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    assert trained(tokenizer, labels) == f"{output}<|im_end|>\n"
    # Same ids as tokenizing the full conversation directly, and the masked part is exactly
    # the tokenized generation prompt (the guide's two-pass method agrees).
    full = tokenizer.apply_chat_template(to_chat_messages(r), tokenize=False)
    assert ids == tokenizer(full, add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(render_prompt(tokenizer, r), add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    assert labels[n_prompt:] == ids[n_prompt:]
    assert cols["attention_mask"][0] == [1] * len(ids)
    assert stats.truncated == [False] and stats.answer_tokens == [3]


def test_answer_token_ids_are_first_answer_tokens(tokenizer):
    assert answer_token_id(tokenizer, "Yes") == tokenizer.encode("Yes", add_special_tokens=False)[0]
    assert answer_token_id(tokenizer, "No") == tokenizer.encode("No", add_special_tokens=False)[0]


@pytest.mark.parametrize("strategy", ["left", "right", "history"])
def test_each_truncation_strategy_keeps_the_answer(tokenizer, strategy):
    r = record(n_history=30, title="A Rather Long Movie Title")
    full_len = len(tokenize_records(tokenizer, [r], 10**6)[0]["input_ids"][0])
    cutoff = full_len // 2
    cols, stats = tokenize_records(tokenizer, [r], cutoff, strategy)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    assert len(ids) <= cutoff and len(labels) == len(ids)
    assert trained(tokenizer, labels) == "Yes<|im_end|>\n"
    assert stats.truncated == [True] and stats.full_len == [full_len] and stats.answer_truncated == 0
    text = tokenizer.decode(ids)
    if strategy == "left":
        assert len(ids) == cutoff and not text.startswith("<|im_start|>system")
    if strategy == "right":
        assert text.startswith("<|im_start|>system") and len(ids) == cutoff
    if strategy == "history":
        # Template intact: it starts with the system turn, the candidate survives, and the
        # history was renumbered from 1 after dropping the oldest lines.
        assert text.startswith("<|im_start|>system\n" + alpaca.SYSTEM)
        assert "Candidate movie: The Candidate (2001)<|im_end|>\n<|im_start|>assistant\nYes" in text
        assert "\n1. A Rather Long Movie Title" in text
        assert 0 < stats.history_lines_dropped < 30
        assert "Number 29 " in text and "Number 0 " not in text
        assert labels == [IGNORE_INDEX] * (len(ids) - 3) + ids[-3:]


def test_an_answer_that_cannot_fit_is_counted_not_dropped(tokenizer):
    recs = [record(output="Yes"), record(output="No")]
    ds, stats = tokenize_dataset(tokenizer, recs, cutoff_len=2, strategy="left", batch_size=1)
    assert len(ds) == 2 and stats.answer_truncated == 2
    assert all(len(ids) == 2 for ids in ds["input_ids"])
    report = seqlen.length_report(stats, *seqlen.mask_counts(ds), cutoff_len=2)
    assert report["answer_truncated"] == 2 and report["truncated"] == 2 and report["n"] == 2


def test_dataset_batches_match_one_pass_and_report(tokenizer):
    recs = [record(n_history=k, output="Yes" if k % 2 else "No") for k in range(1, 8)]
    ds, stats = tokenize_dataset(tokenizer, recs, cutoff_len=1024, strategy="left", batch_size=3)
    cols, _ = tokenize_records(tokenizer, recs, 1024)
    assert ds["input_ids"] == cols["input_ids"] and ds["labels"] == cols["labels"]
    masked, total = seqlen.mask_counts(ds)
    assert total == sum(stats.length) and total - masked == 3 * len(recs)
    rep = seqlen.length_report(stats, masked, total, 1024)
    assert rep["min"] == min(stats.full_len) and rep["max"] == max(stats.full_len) and rep["truncated"] == 0
    table = {row["cutoff"]: row["truncated"]
             for row in seqlen.cutoff_table(stats.full_len, (rep["min"], 10**4), extra=None)}
    assert table == {rep["min"]: len(recs) - 1, 10**4: 0}
    assert sum(b["count"] for b in seqlen.histogram(stats.full_len)) == len(recs)
    shown = seqlen.render_example(tokenizer, ds[0]["input_ids"], ds[0]["labels"])
    assert "[-100 x" in shown and "TRAINED TEXT: 'Yes<|im_end|>\\n'" in shown


@pytest.fixture(scope="module")
def qwen3_tokenizer(tokenizer):
    """The SmolLM2 tokenizer (same <|im_start|>/<|im_end|> tokens) with Qwen3's chat template."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = QWEN3_TEMPLATE.read_text(encoding="utf-8")
    return tok


@pytest.mark.parametrize("template", ["smollm2", "qwen3"])
@pytest.mark.parametrize("output", ["Yes", "No"])
@pytest.mark.parametrize("cutoff,strategy", [(10**6, "left"), (120, "left"), (120, "right"), (120, "history")])
def test_the_scored_position_is_the_trained_one(tokenizer, qwen3_tokenizer, template, output, cutoff, strategy):
    """rec_evaluate reads P(Yes) after the prompt `tokenize_prompts` gives; rec_finetune trains
    the label after the masked prefix of `tokenize_records`. They must be the same position,
    with the same context right before it, on both templates."""
    from posttrain.rec.tokenization import tokenize_prompts

    tok = tokenizer if template == "smollm2" else qwen3_tokenizer
    r = record(n_history=20, output=output)
    cols, _ = tokenize_records(tok, [r], cutoff, strategy)
    ids, labels = cols["input_ids"][0], cols["labels"][0]
    first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    prompt = tokenize_prompts(tok, [r], cutoff_len=cutoff, strategy=strategy)[0]
    assert labels[first] == answer_token_id(tok, output) == tok.encode(output, add_special_tokens=False)[0]
    tail = min(len(prompt), first, 60)
    assert prompt[-tail:] == ids[first - tail:first]
    if cutoff == 10**6:
        assert prompt == ids[:first]
    if strategy == "right":  # cuts the prompt's end, template header included, on both sides alike
        return
    if template == "qwen3":
        # the think block is context, never a label, and the bare generation prompt lacks it
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert "<think>" not in trained(tok, labels)
        bare = tok.apply_chat_template(to_generation_messages(r), tokenize=False, add_generation_prompt=True)
        assert not tok.decode(prompt).endswith(bare[-30:])
    else:
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
