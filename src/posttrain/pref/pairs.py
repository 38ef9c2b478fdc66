"""Preference pairs: source loaders -> one normalized pair format.

A normalized pair is

    {"id", "prefix": {"messages": [{"role", "content"}, ...]}, "chosen", "rejected", "src"}

where the last prefix message is from the user and chosen/rejected are the two
final assistant answers (strings). `id` is an md5 of the content (prefix,
chosen, rejected), so a rerun on the same inputs writes byte-identical files
and the same pair reached through two sources is kept once.

Sources (names used in `pref.sources`):

- `hh-rlhf-harmless`: the HH-RLHF harmless-base test split vendored in this package
  (`pref/data/hh-rlhf/`, MIT): the offline default.
- `hh-rlhf`: Anthropic HH-RLHF transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`).
- `ultrafeedback-binarized`: HuggingFaceH4/ultrafeedback_binarized message lists.
- `stack-exchange-preferences`: question + scored answers -> best vs lower-scored.
- `champ`: the packaged CHAMP problems; model solutions graded against the gold
  answer -> chosen correct / rejected incorrect for the same problem.
- `path:FILE`: a local .jsonl/.jsonl.gz/.json file whose records are any of
  HH raw, normalized, legacy `{prompt, chosen, rejected}` or message-list rows.

Rows that parse but cannot become a pair are skipped with a named reason and
counted (`SourceStats`); rows that are structurally broken raise `DataError`
naming file, line and field.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from posttrain.core import hub
from posttrain.core.io import DataError, dumps, iter_jsonl, read_json
from posttrain.core.settings import param
from posttrain.reason.grading import answers_equal

log = logging.getLogger(__name__)

HUB_IDS = {
    "hh-rlhf": ("Anthropic/hh-rlhf", "train"),
    "ultrafeedback-binarized": ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs"),
    "stack-exchange-preferences": ("HuggingFaceH4/stack-exchange-preferences", "train"),
}
BUILTIN_SOURCES = ("hh-rlhf-harmless", "champ", *HUB_IDS)


class Skip(Exception):
    """A row that is well-formed but yields no pair; `reason` is counted in metrics."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- ids and records

def first_user_content(messages: list[dict]) -> str:
    for m in messages:
        if m.get("role") == "user":
            return m.get("content", "")
    raise ValueError("prefix has no user message")


def prefix_id(prefix_or_messages) -> str:
    """md5(first user message content, utf-8)[:16]; accepts a prefix dict, a message
    list, or a pair record (anything with `prefix`)."""
    obj = prefix_or_messages
    if isinstance(obj, dict) and "prefix" in obj:
        obj = obj["prefix"]
    if isinstance(obj, dict):
        obj = obj["messages"]
    return hashlib.md5(first_user_content(obj).encode("utf-8")).hexdigest()[:16]


def pair_id(messages: list[dict], chosen: str, rejected: str) -> str:
    """Content id: the source is left out so the same pair from two sources collides."""
    payload = dumps({"messages": messages, "chosen": chosen, "rejected": rejected})
    return hashlib.md5(payload.encode("utf-8")).hexdigest()[:16]


def content_text(value, what: str) -> str:
    """Message content as text: a string, or OpenAI-style content parts
    `[{"type": "text", "text": ...}, ...]` with their texts joined by newlines.

    Anything else (null, a number, a dict, parts without a string `text`) raises
    TypeError("what: ...") -> a DataError naming the field; well-formed parts that are
    not text (images, audio) cannot be a text preference: Skip("non_text_content").
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and "type" in p for p in value):
        if any(p["type"] != "text" for p in value):
            raise Skip("non_text_content")
        if not all(isinstance(p.get("text"), str) for p in value):
            raise TypeError(f"{what}: a text part without a string 'text'")
        return "\n".join(p["text"] for p in value)
    kind = "null" if value is None else type(value).__name__
    raise TypeError(f"{what}: expected a string or a list of text parts, got {kind}")


def _clean_messages(messages: Iterable[dict], what: str) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m.get("role"), str):
            raise TypeError(f"{what}[{i}].role: expected a string")
        out.append({"role": m["role"], "content": content_text(m["content"], f"{what}[{i}].content").strip()})
    return out


def make_pair(messages: list[dict], chosen, rejected, src: str) -> dict:
    """Validate and build one normalized pair; `Skip` when it is not a usable preference."""
    messages = _clean_messages(messages, "prefix")
    chosen = content_text(chosen, "chosen").strip()
    rejected = content_text(rejected, "rejected").strip()
    if not messages or messages[-1]["role"] != "user":
        raise Skip("prefix_not_ending_with_user")
    if not first_user_content(messages):
        raise Skip("empty_prompt")
    if chosen == rejected:
        raise Skip("identical_answers")
    return {"id": pair_id(messages, chosen, rejected), "prefix": {"messages": messages},
            "chosen": chosen, "rejected": rejected, "src": src}


def read_pairs(path) -> list[dict]:
    """Normalized pairs from `pairs_all.jsonl`, checked: string id/chosen/rejected/src, a
    non-empty `prefix.messages` list of {role, content} strings with a user message and a
    user last. A bad record raises DataError naming file, line and field."""
    pairs = []
    for line, rec in iter_jsonl(path, required=("id", "prefix", "chosen", "rejected", "src")):
        msgs = rec["prefix"].get("messages") if isinstance(rec["prefix"], dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise DataError(path, "prefix.messages must be a non-empty list", line=line, field="prefix")
        for m in msgs:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(path, "each message needs string role and content", line=line,
                                field="prefix.messages")
        if msgs[-1]["role"] != "user":
            raise DataError(path, "last prefix message must be from the user", line=line,
                            field="prefix.messages")
        if not any(m["role"] == "user" for m in msgs):
            raise DataError(path, "prefix has no user message", line=line, field="prefix.messages")
        for f in ("id", "chosen", "rejected", "src"):
            if not isinstance(rec[f], str):
                raise DataError(path, f"expected a string, got {type(rec[f]).__name__}", line=line, field=f)
        pairs.append(rec)
    return pairs


# ---------------------------------------------------------------- HH-RLHF

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[dict]:
    """`"\\n\\nHuman: a\\n\\nAssistant: b"` -> [{user, a}, {assistant, b}].

    Turn markers are `\\n\\nHuman:` / `\\n\\nAssistant:` as in the released data (a
    bare `Human:` inside a turn is text). Consecutive turns of one role are kept
    as they are (the data has a few); text before the first marker is an error.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first Human/Assistant marker")
    if len(parts) < 3:
        raise ValueError("no Human/Assistant turns")
    return [{"role": _HH_ROLE[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


def hh_row_to_pair(row: dict, src: str) -> dict:
    """HH raw row {chosen: transcript, rejected: transcript} -> pair.

    The prefix is every turn before the final assistant turn; it must be the same
    in both transcripts (else Skip("prefix_mismatch")). A transcript that is not a string
    (a null in the hub's JSON lines) is an error naming the field.
    """
    for f in ("chosen", "rejected"):
        if not isinstance(row[f], str):
            raise TypeError(f"{f}: expected a transcript string, got {type(row[f]).__name__}")
    try:
        ch = parse_hh_transcript(row["chosen"])
        rj = parse_hh_transcript(row["rejected"])
    except ValueError:
        raise Skip("unparsable_transcript") from None
    if ch[-1]["role"] != "assistant" or rj[-1]["role"] != "assistant":
        raise Skip("last_turn_not_assistant")
    if ch[:-1] != rj[:-1]:
        raise Skip("prefix_mismatch")
    return make_pair(ch[:-1], ch[-1]["content"], rj[-1]["content"], src)


# ---------------------------------------------------------------- message-list rows

def _as_messages(value, what: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                              for m in value):
        raise TypeError(f"{what}: expected a list of {{role, content}} messages")
    return value


def messages_row_to_pair(row: dict, src: str) -> dict:
    """UltraFeedback-binarized / TRL conversational row -> pair.

    `chosen` and `rejected` are message lists ending with the assistant answer;
    with a separate `prompt` message list (TRL) they hold only the answer turn.
    Scores, when present, must differ (a tie is no preference).
    """
    chosen = _as_messages(row["chosen"], "chosen")
    rejected = _as_messages(row["rejected"], "rejected")
    if "score_chosen" in row and "score_rejected" in row and row["score_chosen"] == row["score_rejected"]:
        raise Skip("tied_scores")
    if isinstance(row.get("prompt"), list):
        prompt = _as_messages(row["prompt"], "prompt")
        chosen, rejected = prompt + chosen, prompt + rejected
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise Skip("last_turn_not_assistant")
    if _clean_messages(chosen[:-1], "chosen") != _clean_messages(rejected[:-1], "rejected"):
        raise Skip("prefix_mismatch")
    return make_pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], src)


# ---------------------------------------------------------------- stack exchange

def stack_exchange_row_to_pairs(row: dict, src: str, per_prompt: int) -> list[dict]:
    """{question, answers: [{text, pm_score, selected, answer_id}, ...]} -> pairs.

    The best answer (highest pm_score; accepted, then lower answer_id break ties)
    is chosen against each lower-scored answer, largest score gap first, at most
    `per_prompt` pairs per question.
    """
    if not isinstance(row["answers"], list) or not all(isinstance(a, dict) for a in row["answers"]):
        raise TypeError("answers: expected a list of objects")
    answers = [a for i, a in enumerate(row["answers"])
               if content_text(a.get("text"), f"answers[{i}].text").strip()]
    for i, a in enumerate(answers):
        score = a.get("pm_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
            raise TypeError(f"answers[{i}].pm_score: expected a number, got {score!r}")
    if len(answers) < 2:
        raise Skip("too_few_answers")
    ranked = sorted(answers, key=lambda a: (-a["pm_score"], not a.get("selected", False),
                                            a.get("answer_id", 0)))
    best = ranked[0]
    lower = sorted((a for a in ranked[1:] if a["pm_score"] < best["pm_score"]),
                   key=lambda a: (a["pm_score"], a.get("answer_id", 0)))
    if not lower:
        raise Skip("no_score_gap")
    messages = [{"role": "user", "content": content_text(row["question"], "question")}]
    pairs = []
    for a in lower[: per_prompt if per_prompt > 0 else None]:
        try:
            pairs.append(make_pair(messages, best["text"], a["text"], src))
        except Skip:
            continue
    if not pairs:
        raise Skip("identical_answers")
    return pairs


# ---------------------------------------------------------------- legacy / normalized

def legacy_row_to_pair(row: dict, src: str) -> dict:
    """{prompt: str, chosen: str, rejected: str}; a prompt in HH transcript form
    (`\\n\\nHuman: ...\\n\\nAssistant:`) is split into turns."""
    prompt = content_text(row["prompt"], "prompt")
    if _HH_TURN.search(prompt):
        try:
            msgs = parse_hh_transcript(prompt)
        except ValueError:
            raise Skip("unparsable_transcript") from None
        if msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
            msgs = msgs[:-1]  # the trailing "Assistant:" cue
    else:
        msgs = [{"role": "user", "content": prompt}]
    return make_pair(msgs, row["chosen"], row["rejected"], src)


def normalized_row_to_pair(row: dict, src: str) -> dict:
    prefix = row["prefix"]
    if not isinstance(prefix, dict) or "messages" not in prefix:
        raise TypeError("prefix: expected {messages: [...]}")
    msgs = _as_messages(prefix["messages"], "prefix.messages")
    return make_pair(msgs, row["chosen"], row["rejected"], str(row.get("src") or src))


def detect_format(row: dict) -> str:
    """Which local-file format a record is in (field names decide)."""
    if "prefix" in row:
        return "normalized"
    if "chosen" in row and "rejected" in row:
        if isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
            return "messages"
        for f in ("chosen", "rejected"):
            if not isinstance(row[f], str):
                raise TypeError(f"{f}: expected a string or a list of messages")
        if "prompt" in row:
            return "legacy"
        return "hh"
    if "question" in row and "answers" in row:
        return "stack-exchange"
    raise KeyError("rejected" if "chosen" in row else "chosen")


def row_to_pairs(row: dict, fmt: str, src: str, per_prompt: int) -> list[dict]:
    if fmt == "hh":
        return [hh_row_to_pair(row, src)]
    if fmt == "messages":
        return [messages_row_to_pair(row, src)]
    if fmt == "legacy":
        return [legacy_row_to_pair(row, src)]
    if fmt == "normalized":
        return [normalized_row_to_pair(row, src)]
    if fmt == "stack-exchange":
        return stack_exchange_row_to_pairs(row, src, per_prompt)
    raise ValueError(f"unknown format {fmt!r}")


# ---------------------------------------------------------------- CHAMP

CHAMP_INSTRUCTION = "Solve the following problem. Make sure to show your work before giving the final answer."
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?![\d])|-?\d+(?:\.\d+)?(?:/\d+)?")
_NUMERIC_GOLD = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def grade_final_answer(summary: str, gold: str) -> bool | None:
    """Grade a one-sentence final answer against the gold answer; None = can't tell.

    Numeric gold (integer, decimal, fraction): correct when the summary's last
    number equals it, wrong when no number in the summary equals it, otherwise
    ambiguous (None). Yes/No gold: the summary must say exactly one of yes/no.
    Other gold answers: correct when the summary contains the gold text
    (whitespace and case ignored), else None: a mismatch there may be an
    equivalent form, so it never counts as wrong. Equal means
    `posttrain.reason.grading.answers_equal`.
    """
    g = gold.replace("@@", "").strip()
    if _NUMERIC_GOLD.fullmatch(g.replace(",", "")):
        same = [answers_equal(n, g) for n in _NUMBER.findall(summary)]
        if not same:
            return None
        if same[-1]:
            return True
        return None if any(same) else False
    low = summary.lower()
    if g.lower() in ("yes", "no"):
        said = {w for w in ("yes", "no") if re.search(rf"\b{w}\b", low)}
        return (said == {g.lower()}) if len(said) == 1 else None
    squash = lambda s: re.sub(r"\s+", "", s.lower())  # noqa: E731
    return True if squash(g) and squash(g) in squash(summary) else None


def _champ_solution(messages: list[dict]) -> tuple[str, str, bool] | None:
    """(solution, summary, truncated) of one CHAMP conversation: the model turn after
    the last user turn holding the "Solve the following problem" instruction, and the final model turn (the
    answer to "summarize the answer above in one sentence")."""
    last_solve = max((i for i, m in enumerate(messages)
                      if m["role"] == "User" and CHAMP_INSTRUCTION.lower() in (m.get("text") or "").lower()),
                     default=None)
    if last_solve is None or last_solve + 1 >= len(messages):
        return None
    sol = messages[last_solve + 1]
    final = messages[-1]
    if not sol["role"].startswith("Model") or not final["role"].startswith("Model") or final is sol:
        return None
    truncated = any(m.get("error") for m in messages[last_solve + 1:])
    return sol.get("text") or "", final.get("text") or "", truncated


def champ_rows(path) -> Iterator[tuple[int, dict]]:
    """(problem index, problem) in identifier order."""
    data = read_json(path)
    if "problems" not in data:
        raise DataError(path, "missing", field="problems")
    for i, pid in enumerate(sorted(data["problems"]), start=1):
        yield i, data["problems"][pid]


def champ_problem_to_pairs(problem: dict, src: str, per_prompt: int, seed: int,
                           counts: Counter) -> list[dict]:
    """Label each model solution of one CHAMP problem, then pair correct vs wrong.

    Labels: the dataset's first-wrong-step annotation when the solution has one
    (no wrong step -> correct, a wrong step -> wrong: humans read the reasoning),
    else `grade_final_answer` on the model's one-sentence summary. Truncated
    solutions (the dataset marks a length error) and ungradable ones are counted
    and left out. Pairs are drawn without replacement from correct x wrong with a
    per-problem seeded shuffle, at most `per_prompt`.
    """
    gold = problem["_answer"]
    correct, wrong = {}, {}
    for key in sorted(problem["conversations"]):
        found = _champ_solution(problem["conversations"][key]["messages"])
        if found is None:
            counts["solution_unrecognized"] += 1
            continue
        text, summary, truncated = found
        if truncated:
            counts["solution_truncated"] += 1
            continue
        if not text.strip() or not summary.strip():
            counts["solution_empty"] += 1
            continue
        ann = problem.get("fws_annotations", {}).get(key)
        if ann is not None and ann.get("text") == text:
            label = ann.get("start_idx") is None
            counts["label_annotation"] += 1
        else:
            label = grade_final_answer(summary, gold)
            if label is None:
                counts["solution_ungradable"] += 1
                continue
            counts["label_final_answer"] += 1
        counts["solution_correct" if label else "solution_wrong"] += 1
        (correct if label else wrong).setdefault(text.strip(), key)
    for text in set(correct) & set(wrong):  # the same text labelled both ways: trust neither
        counts["solution_conflicting_labels"] += 1
        del correct[text], wrong[text]
    if not correct:
        raise Skip("no_correct_solution")
    if not wrong:
        raise Skip("no_wrong_solution")
    combos = [(c, w) for c in sorted(correct) for w in sorted(wrong)]
    random.Random(f"{seed}:{problem['identifier']}").shuffle(combos)
    messages = [{"role": "user", "content": f"{CHAMP_INSTRUCTION}\n\n{problem['_text'].strip()}"}]
    return [make_pair(messages, c, w, src) for c, w in combos[: per_prompt if per_prompt > 0 else None]]


# ---------------------------------------------------------------- sources

@dataclass
class SourceStats:
    rows: int = 0
    rows_with_pairs: int = 0  # rows == rows_with_pairs + sum(skipped)
    pairs: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # informative counts, not skips
    capped: bool = False

    def as_dict(self) -> dict:
        return {"rows": self.rows, "rows_with_pairs": self.rows_with_pairs, "pairs": self.pairs, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()), "notes": dict(sorted(self.notes.items())),
                "capped": self.capped}


def _iter_local(path: Path) -> Iterator[tuple[int, dict]]:
    """Records of a local file: JSON lines (optionally .gz) or one JSON list."""
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(path, "expected a JSON list of records")
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise DataError(path, f"record {i}: expected an object", line=i)
            yield i, rec
    else:
        yield from iter_jsonl(path)


def _iter_hub(hub_id: str, split: str) -> Iterator[tuple[int, dict]]:
    """Stream a hub dataset: needs internet, or its local mirror under `$POSTTRAIN_HUB_DIR`
    (`posttrain.core.hub`); otherwise this fails with datasets' own error."""
    from datasets import load_dataset

    for i, rec in enumerate(load_dataset(hub.resolve(hub_id), split=split, streaming=True), start=1):
        yield i, rec


SOURCES_KEY = "pref.sources"  # where the sources and their caps come from (params.yaml)


def check_cap(name: str, cap) -> None:
    """A source's cap: the most pairs taken from it, 0 = all. A negative one is a typo, not
    "all" (which `cap > 0` checks would make it)."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise DataError(SOURCES_KEY, f"source {name!r}: cap must be an integer >= 0 (0 = all), got {cap!r}")


def load_source(name: str, cap: int = 0, per_prompt: int = 4, seed: int = 0,
                seen: set | None = None) -> tuple[list[dict], SourceStats]:
    """All pairs of one source (at most `cap` when cap > 0) and its accounting.

    Every row read ends as pairs or as a counted skip reason; `seen` holds pair ids
    kept so far across sources (a repeat is skipped as `duplicate_pair`).
    """
    check_cap(name, cap)
    seen = set() if seen is None else seen
    stats = SourceStats()
    pairs: list[dict] = []

    if name == "champ":
        from posttrain.core.assets import asset_path

        path, rows, fmt = asset_path("champ"), None, "champ"
        rows = champ_rows(path)
    elif name == "hh-rlhf-harmless":  # vendored HH-RLHF harmless-base test split
        from posttrain.core.assets import asset_path

        path = asset_path(name)
        rows, fmt = iter_jsonl(path), "hh"
    elif name.startswith("path:"):
        if not name[len("path:"):].strip():  # Path("") would be ".", the working folder
            raise DataError(SOURCES_KEY, f"source {name!r}: empty path, expected path:FILE")
        path = Path(name[len("path:"):])
        if not path.exists():
            raise DataError(path, "source file not found")
        rows, fmt = _iter_local(path), None
    elif name in HUB_IDS:
        hub_id, split = HUB_IDS[name]
        path, rows = hub_id, _iter_hub(hub_id, split)
        fmt = {"hh-rlhf": "hh", "ultrafeedback-binarized": "messages",
               "stack-exchange-preferences": "stack-exchange"}[name]
    else:
        raise ValueError(f"unknown preference source {name!r}; use one of "
                         f"{', '.join(BUILTIN_SOURCES)} or path:FILE")

    for line, row in rows:
        if cap > 0 and stats.pairs >= cap:
            stats.capped = True
            break
        stats.rows += 1
        try:
            if fmt == "champ":
                new = champ_problem_to_pairs(row, name, per_prompt, seed, stats.notes)
            else:
                new = row_to_pairs(row, fmt or detect_format(row), name, per_prompt)
        except Skip as s:
            stats.skipped[s.reason] += 1
            continue
        except KeyError as e:
            raise DataError(path, "missing", line=line, field=str(e.args[0])) from None
        except TypeError as e:
            what, _, msg = str(e).partition(": ")
            raise DataError(path, msg or str(e), line=line, field=what if msg else None) from None
        kept = 0
        for p in new:
            if cap > 0 and stats.pairs >= cap:
                stats.notes["pairs_over_cap"] += 1
                continue
            if p["id"] in seen:
                stats.notes["duplicate_pairs_dropped"] += 1
                continue
            seen.add(p["id"])
            pairs.append(p)
            stats.pairs += 1
            kept += 1
        if kept:
            stats.rows_with_pairs += 1
        else:
            stats.skipped["duplicate_pair" if new else "no_pairs"] += 1
    log.info("source %s: %d rows -> %d pairs, skipped %s", name, stats.rows, stats.pairs,
             dict(stats.skipped))
    return pairs, stats


@dataclass(frozen=True)
class DownloadSettings:
    """pref_download's params (pref.download.*, pref.seed; the sources come as `--NAME CAP`)."""

    per_prompt: int = param("most pairs per prompt for sources with many answers per prompt "
                            "(champ, stack exchange)", min=1)
    seed: int = param("seed of the per-prompt pair choice")


def collect(sources: list[tuple[str, int]], s: DownloadSettings) -> tuple[list[dict], dict[str, Any]]:
    """Pairs of every source in order, and metrics: per-source rows/pairs/skips."""
    names = [name for name, _ in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # metrics are keyed by source: a repeat would overwrite the first one's
        raise ValueError(f"preference source given more than once: {', '.join(twice)}")
    for name, cap in sources:  # all checked before any is read
        check_cap(name, cap)
    seen: set = set()
    out: list[dict] = []
    per_source = {}
    for name, cap in sources:
        pairs, stats = load_source(name, cap, s.per_prompt, s.seed, seen)
        out.extend(pairs)
        per_source[name] = stats.as_dict()
    metrics = {"pairs": len(out), "sources": per_source,
               "skipped_total": sum(s["skipped_total"] for s in per_source.values())}
    return out, metrics
