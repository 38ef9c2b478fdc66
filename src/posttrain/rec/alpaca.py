"""Per-user rating timelines -> Alpaca "will the user like this movie? Yes/No" examples.

Each user's ratings are sorted by time (ties keep file order). A user with more
than `history_len` ratings yields one example per rating after the first
`history_len`: the input lists the previous `history_len` movies with their
ratings, oldest first, then the candidate; the output is "Yes" if the
candidate's rating >= `rating_threshold`, else "No".

Split (no leakage): per user, chronologically. The user's latest examples go to
test (`test_ratio` of them), the ones just before to eval (`val_ratio`), the
rest to train. So every rating a train row shows (its history and its target)
is older than any of that user's test targets, and no test rating ever appears
in a train row. The non-LLM baseline fits its statistics on train rows only.
`seed` only shuffles the row order inside each split (caps downstream take a
head, which is then a random sample across users).
"""

from __future__ import annotations

import math
import random
import re

import pandas as pd

from posttrain.core.io import DataError, read_json

# MovieLens stars: half stars 0.5-5 (ml-latest), whole stars 1-5 (ml-100k, ml-1m).
RATING_SCALE = (0.5, 5.0)

ALPACA_KEYS = ("instruction", "input", "output", "system", "history")
META_KEYS = ("user_id", "item_id", "title", "rating", "timestamp", "label")

SYSTEM = "You are a movie recommender. You predict whether a user will like a movie from their rating history."
INSTRUCTION = ("Given the user's movie ratings in chronological order (1 to 5 stars), "
               "will the user like the candidate movie (rating >= {threshold:g})? Answer Yes or No.")
HISTORY_HEADER = "Movies the user rated, oldest first:"
CANDIDATE_PREFIX = "Candidate movie: "
# One history line; `history` truncation finds and drops these by this pattern.
HISTORY_LINE = re.compile(r"^(\d+)\. (.*) \(rating ≈ ([0-9.]+)\)$")


def format_rating(r: float) -> str:
    return f"{r:.1f}"


def history_line(n: int, title: str, rating: float) -> str:
    return f"{n}. {title} (rating ≈ {format_rating(rating)})"


def render_input(history: list[tuple[str, float]], candidate: str) -> str:
    lines = [HISTORY_HEADER]
    lines += [history_line(i, t, r) for i, (t, r) in enumerate(history, start=1)]
    lines.append(CANDIDATE_PREFIX + candidate)
    return "\n".join(lines)


def drop_oldest_history(input_text: str, n_drop: int) -> tuple[str, int]:
    """Remove the `n_drop` oldest history lines and renumber; returns (text, lines left)."""
    lines = input_text.split("\n")
    hist = [i for i, line in enumerate(lines) if HISTORY_LINE.match(line)]
    drop = set(hist[:n_drop])
    out, n = [], 0
    for i, line in enumerate(lines):
        if i in drop:
            continue
        if i in hist:
            n += 1
            m = HISTORY_LINE.match(line)
            line = f"{n}. {m.group(2)} (rating ≈ {m.group(3)})"
        out.append(line)
    return "\n".join(out), len(hist) - len(drop)


def count_history_lines(input_text: str) -> int:
    return sum(1 for line in input_text.split("\n") if HISTORY_LINE.match(line))


def _user_key(u: str):
    # Numeric ids sort numerically, so output order reads naturally.
    return (0, int(u), "") if u.isdigit() else (1, 0, u)


def build_examples(ratings: pd.DataFrame, history_len: int, rating_threshold: float) -> list[dict]:
    """Examples in (user, time) order; each has the Alpaca keys plus META_KEYS and `position`."""
    check_params(history_len=history_len, rating_threshold=rating_threshold)
    instruction = INSTRUCTION.format(threshold=rating_threshold)
    df = ratings.sort_values(["user_id", "timestamp", "line"], kind="stable")
    examples = []
    users = sorted(df["user_id"].unique(), key=_user_key)
    groups = {u: g for u, g in df.groupby("user_id", sort=False)}
    for user in users:
        g = groups[user]
        if len(g) <= history_len:
            continue
        titles, rats = g["title"].tolist(), g["rating"].tolist()
        items, times = g["item_id"].tolist(), g["timestamp"].tolist()
        for pos in range(history_len, len(g)):
            hist = list(zip(titles[pos - history_len:pos], rats[pos - history_len:pos]))
            label = int(rats[pos] >= rating_threshold)
            examples.append({
                "instruction": instruction,
                "input": render_input(hist, titles[pos]),
                "output": "Yes" if label else "No",
                "system": SYSTEM,
                "history": [],
                "user_id": user, "item_id": items[pos], "title": titles[pos],
                "rating": float(rats[pos]), "timestamp": int(times[pos]), "label": label,
                "position": pos,
            })
    return examples


def check_params(*, history_len: int, rating_threshold: float) -> None:
    """ValueError naming the param when it cannot give meaningful labels: a threshold
    outside (lowest star, highest star] makes every label the same."""
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    lo, hi = RATING_SCALE
    if not (math.isfinite(rating_threshold) and lo < rating_threshold <= hi):
        raise ValueError(f"rating_threshold must be in ({lo:g}, {hi:g}] (the MovieLens star scale), "
                         f"got {rating_threshold}")


def check_split(*, val_ratio: float, test_ratio: float) -> None:
    if not all(math.isfinite(r) for r in (val_ratio, test_ratio)) or not (
            0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(f"need 0 <= val_ratio, test_ratio and val_ratio + test_ratio < 1; "
                         f"got {val_ratio}, {test_ratio}")


def _n_of(n: int, ratio: float) -> int:
    return int(n * ratio + 0.5)


def split_examples(examples: list[dict], val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[dict]]:
    """Per-user chronological split (see module docstring), then a seeded shuffle per split."""
    check_split(val_ratio=val_ratio, test_ratio=test_ratio)
    by_user: dict[str, list[dict]] = {}
    for ex in examples:  # already in (user, time) order
        by_user.setdefault(ex["user_id"], []).append(ex)
    splits = {"train": [], "eval": [], "test": []}
    for rows in by_user.values():
        n = len(rows)
        n_test, n_val = _n_of(n, test_ratio), _n_of(n, val_ratio)
        n_train = max(n - n_test - n_val, 0)
        splits["train"] += rows[:n_train]
        splits["eval"] += rows[n_train:n_train + n_val]
        splits["test"] += rows[n_train + n_val:]
    for name in ("train", "eval", "test"):
        random.Random(f"{seed}/{name}").shuffle(splits[name])
    return splits


def alpaca_record(ex: dict) -> dict:
    return {k: ex[k] for k in ALPACA_KEYS}


def read_records(path) -> list[dict]:
    """An Alpaca JSON list (train.json / eval.json), checked: every record an object with
    string `instruction` and `input`, a non-empty string `output`, an optional string `system`.
    The JSON list has no lines, so errors name the record number (1-based)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of Alpaca records, got {type(data).__name__}")
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise DataError(path, f"record {i}: expected an object, got {type(rec).__name__}")
        for key in ("instruction", "input", "output", "system"):
            if key == "system" and rec.get(key) is None:
                continue
            if not isinstance(rec.get(key), str) or (key == "output" and not rec[key].strip()):
                raise DataError(path, f"record {i}: expected a {'non-empty ' if key == 'output' else ''}"
                                      f"string, got {rec.get(key)!r}"[:200], field=key)
    return data


def raw_record(ex: dict) -> dict:
    """Alpaca keys plus the metadata evaluation and the baseline need."""
    return {k: ex[k] for k in ALPACA_KEYS + META_KEYS}


def meta_record(ex: dict) -> dict:
    return {k: ex[k] for k in META_KEYS}


def split_stats(splits: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rows in splits.items():
        n = len(rows)
        yes = sum(r["label"] for r in rows)
        out[name] = {"n": n, "yes": yes, "no": n - yes, "yes_fraction": round(yes / n, 6) if n else 0.0,
                     "users": len({r["user_id"] for r in rows})}
    return out


def check_no_leakage(splits: dict[str, list[dict]]) -> None:
    """Every train/eval target of a user is older than (or ties with, earlier in file order)
    each of that user's test targets; raises AssertionError otherwise."""
    first_test: dict[str, int] = {}
    for r in splits["test"]:
        first_test[r["user_id"]] = min(first_test.get(r["user_id"], r["position"]), r["position"])
    for name in ("train", "eval"):
        for r in splits[name]:
            if r["user_id"] in first_test and r["position"] >= first_test[r["user_id"]]:
                raise AssertionError(f"{name} row at position {r['position']} of user {r['user_id']} "
                                     f"is not older than the user's test rows")
