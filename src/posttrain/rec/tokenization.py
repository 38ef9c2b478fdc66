"""Alpaca records -> chat template -> input_ids / attention_mask / labels (prompt masked).

One render and one tokenization per example: the full conversation is rendered
with the chat template, the answer's character position found in it (it is the
last message), the text tokenized once, batched, with offsets, and every token
that starts before the answer is masked (-100). So the labels are exactly
the assistant answer plus the template's end-of-turn tokens, with no second
tokenizer pass to find the prompt length.

Truncation at `cutoff_len` never drops an example and, while the answer fits,
always keeps the whole answer:
- `left`: drop tokens from the start of the sequence (the default).
- `right`: drop the prompt's last tokens (the ones just before the answer), keep the answer.
- `history`: drop the oldest history lines of the input and re-render until the
  example fits, so the template stays intact; falls back to `left` when no
  history is left to drop.
An answer longer than `cutoff_len` on its own is kept as its last `cutoff_len`
tokens and counted (`answer_truncated`), never silently dropped.
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass, field

from posttrain.rec import alpaca
from posttrain.core.chat import to_chat_messages
from posttrain.core.settings import param

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
STRATEGIES = ("left", "right", "history")
_HISTORY_LINE_RE = re.compile(r"^\d+\. .* \(rating ≈ [0-9.]+\)$", re.M)


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class TokenizeSettings:
    """How a rec example becomes tokens (rec.cutoff_len, rec.truncation): rec_tokenize for
    training and rec_evaluate for scoring read the same two params."""

    cutoff_len: int = param("tokens per example; longer ones are cut by `truncation`", min=1)
    truncation: str = param("left (keeps the answer), right, or history (drops the oldest history lines)",
                            choices=STRATEGIES)


def render_prompt(tokenizer, record: dict) -> str:
    """The scoring prompt: the text a training row's answer follows, i.e. the full
    conversation's render up to the answer's start (`render`). This, not
    `add_generation_prompt=True`, is where the assistant turn starts: Qwen3's template
    renders a finished assistant turn with an empty think block (`<think>\n\n</think>\n\n`)
    that its bare generation prompt lacks, so scoring after the generation prompt would read
    P(Yes) at a position no answer was trained at. For SmolLM2 the two texts are equal."""
    full, answer_start = render(tokenizer, record)
    return full[:answer_start]


def render(tokenizer, record: dict) -> tuple[str, int]:
    """(full conversation text, character index where the assistant answer starts).

    One template render: the answer is the last message, so its text is the last
    occurrence of `output` in the rendered conversation; everything after it is the
    template's end-of-turn text.
    """
    full = tokenizer.apply_chat_template(to_chat_messages(record), tokenize=False)
    answer = record["output"]
    pos = full.rfind(answer) if answer else -1
    if pos < 0:
        raise TemplateError(f"the chat template does not render the answer {answer!r} verbatim; "
                            "its start cannot be located")
    return full, pos


def encode_texts(tokenizer, fulls: list[str], answer_starts: list[int]) -> list[tuple[list[int], int, object]]:
    """Tokenize full texts once (batched) -> (ids, n_prompt_tokens, offsets) per text.

    `offsets` is a list of (start, end) or a callable returning it (read lazily: only
    `history` truncation needs them)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    out = []
    if backend is not None:
        # The Rust tokenizer directly: same ids as tokenizer(...) without building a
        # BatchEncoding; the answer's token index comes from a Rust-side char lookup.
        for enc, start in zip(backend.encode_batch(fulls, add_special_tokens=False), answer_starts):
            ids = enc.ids
            idx = enc.char_to_token(start)
            idx = len(ids) if idx is None else idx
            # A token that starts before the answer (straddling it) counts as prompt.
            if idx < len(ids) and enc.token_to_chars(idx)[0] < start:
                idx += 1
            out.append((ids, idx, lambda enc=enc: enc.offsets))
        return out
    enc = tokenizer(fulls, add_special_tokens=False, return_offsets_mapping=True)
    for ids, offsets, start in zip(enc["input_ids"], enc["offset_mapping"], answer_starts):
        # Tokens are in text order; a token starting before the answer is a prompt token.
        n_prompt = bisect.bisect_left([s for s, _ in offsets], start)
        out.append((list(ids), n_prompt, offsets))
    return out


@dataclass
class Stats:
    """Per-example facts the sequence-length report is built from."""

    full_len: list[int] = field(default_factory=list)  # before truncation
    length: list[int] = field(default_factory=list)  # after truncation
    truncated: list[bool] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)  # unmasked tokens kept
    answer_truncated: int = 0  # answers longer than cutoff_len: kept partially, counted
    history_lines_dropped: int = 0
    history_exhausted: int = 0  # `history` fell back to `left`

    def extend(self, other: "Stats") -> None:
        for k in ("full_len", "length", "truncated", "answer_tokens"):
            getattr(self, k).extend(getattr(other, k))
        for k in ("answer_truncated", "history_lines_dropped", "history_exhausted"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def _cut(ids: list[int], n_prompt: int, cutoff: int, strategy: str) -> tuple[list[int], int, bool]:
    """Truncate one sequence; returns (ids, n_prompt, answer_fits)."""
    n_answer = len(ids) - n_prompt
    if len(ids) <= cutoff:
        return ids, n_prompt, True
    if n_answer >= cutoff:
        return ids[len(ids) - cutoff:], max(0, cutoff - n_answer), n_answer <= cutoff
    keep_prompt = cutoff - n_answer
    if strategy == "right":
        return ids[:keep_prompt] + ids[n_prompt:], keep_prompt, True
    # left (and history's fallback)
    return ids[len(ids) - cutoff:], keep_prompt, True


def _labels(ids: list[int], n_prompt: int) -> list[int]:
    return [IGNORE_INDEX] * n_prompt + ids[n_prompt:]


def _history_spans(full: str, prompt_len: int) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _HISTORY_LINE_RE.finditer(full, 0, prompt_len)]


def _lines_to_drop(full: str, prompt_len: int, offsets, overflow: int) -> int:
    """Fewest oldest history lines whose tokens cover `overflow` (an estimate; re-checked)."""
    starts = [s for s, _ in (offsets() if callable(offsets) else offsets)]
    spans = _history_spans(full, prompt_len)
    covered = 0
    for k, (s, e) in enumerate(spans, start=1):
        covered += bisect.bisect_left(starts, e + 1) - bisect.bisect_left(starts, s)
        if covered >= overflow:
            return k
    return len(spans)


def check_cutoff(cutoff_len: int) -> None:
    """A cutoff below 1 token would empty every example (and leave no room for the answer)."""
    if not isinstance(cutoff_len, int) or cutoff_len < 1:
        raise ValueError(f"cutoff_len must be an integer >= 1, got {cutoff_len!r}")


def tokenize_records(tokenizer, records: list[dict], cutoff_len: int, strategy: str = "left"):
    """Records -> ({input_ids, attention_mask, labels} columns, Stats). Order is kept."""
    check_cutoff(cutoff_len)
    if strategy not in STRATEGIES:
        raise ValueError(f"truncation must be one of {STRATEGIES}, got {strategy!r}")
    texts = [render(tokenizer, r) for r in records]
    encoded = encode_texts(tokenizer, [f for f, _ in texts], [a for _, a in texts])
    stats = Stats()
    cols = {"input_ids": [], "attention_mask": [], "labels": []}
    for i, (ids, n_prompt, offsets) in enumerate(encoded):
        full_len = len(ids)
        if strategy == "history" and full_len > cutoff_len and full_len - n_prompt < cutoff_len:
            ids, n_prompt, dropped, exhausted = _fit_history(tokenizer, records[i], texts[i], ids, n_prompt,
                                                             offsets, cutoff_len)
            stats.history_lines_dropped += dropped
            stats.history_exhausted += exhausted
        kept, n_kept_prompt, fits = _cut(ids, n_prompt, cutoff_len, strategy)
        stats.answer_truncated += not fits
        stats.full_len.append(full_len)
        stats.length.append(len(kept))
        stats.truncated.append(full_len > cutoff_len)
        stats.answer_tokens.append(len(kept) - n_kept_prompt)
        cols["input_ids"].append(kept)
        cols["attention_mask"].append([1] * len(kept))
        cols["labels"].append(_labels(kept, n_kept_prompt))
    return cols, stats


def _fit_history(tokenizer, record, text, ids, n_prompt, offsets, cutoff_len):
    """Drop oldest history lines and re-render until the example fits (or none are left)."""
    full, answer_start = text
    n_lines = alpaca.count_history_lines(record.get("input", ""))
    dropped = 0
    while len(ids) > cutoff_len and dropped < n_lines:
        k = max(1, _lines_to_drop(full, answer_start, offsets, len(ids) - cutoff_len))
        dropped = min(n_lines, dropped + k)
        new_input, _ = alpaca.drop_oldest_history(record["input"], dropped)
        full, answer_start = render(tokenizer, {**record, "input": new_input})
        ids, n_prompt, offsets = encode_texts(tokenizer, [full], [answer_start])[0]
    return ids, n_prompt, dropped, int(len(ids) > cutoff_len)


def tokenize_dataset(tokenizer, records: list[dict], *, cutoff_len: int, strategy: str,
                     batch_size: int = 1000, desc: str = "tokenize"):
    """Batched over `records` -> (datasets.Dataset with int32 columns, Stats)."""
    import datasets
    from tqdm import tqdm

    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "attention_mask": datasets.Sequence(datasets.Value("int8")),
        "labels": datasets.Sequence(datasets.Value("int32")),
    })
    check_cutoff(cutoff_len)  # also when there are no records to tokenize
    parts, stats = [], Stats()
    for start in tqdm(range(0, len(records), batch_size), desc=desc, unit="batch", mininterval=5):
        cols, st = tokenize_records(tokenizer, records[start:start + batch_size], cutoff_len, strategy)
        parts.append(datasets.Dataset.from_dict(cols, features=features))
        stats.extend(st)
    if not parts:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features), stats
    return datasets.concatenate_datasets(parts), stats


def tokenize_prompts(tokenizer, records: list[dict], *, cutoff_len: int, strategy: str,
                     answer: str = "Yes") -> list[list[int]]:
    """Scoring prompts: exactly the masked prefix of the training row (`tokenize_records`,
    same cutoff and truncation), so P(Yes) is read at the position whose label was trained,
    after the same context. Every record is tokenized with the same probe `answer`: its
    real label must not change how its prompt is truncated."""
    cols, _ = tokenize_records(tokenizer, [{**r, "output": answer} for r in records], cutoff_len, strategy)
    out = []
    for i, (ids, labels) in enumerate(zip(cols["input_ids"], cols["labels"])):
        first = next(j for j, t in enumerate(labels) if t != IGNORE_INDEX)
        if first == 0:
            raise ValueError(f"record {i}: cutoff_len {cutoff_len} leaves no prompt before the answer")
        out.append(ids[:first])
    return out
