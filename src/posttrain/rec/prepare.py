"""rec_prepare as one call: MovieLens ratings -> Alpaca examples split by user and time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posttrain.core.settings import SettingsError, param
from posttrain.rec import alpaca, movielens


@dataclass(frozen=True)
class PrepareSettings:
    """rec_prepare's params (rec.*)."""

    source: str = param("ml-100k (packaged), a MovieLens folder, ml-latest-small/ml-1m/ml-25m or a URL (online)")
    history_len: int = param("previous ratings shown per example; users need more than this", min=1)
    rating_threshold: float = param('output "Yes" if rating >= threshold')
    val_ratio: float = param("per user, the ratings before the test ones that go to eval", min=0, max=1,
                             max_open=True)
    test_ratio: float = param("per user, the latest ratings that go to test", min=0, max=1, max_open=True)
    seed: int = param("shuffles rows inside each split")


def prepare(s: PrepareSettings, download_dir) -> tuple[dict[str, list[dict]], dict]:
    """(records per output file, metrics): train.json, eval.json (Alpaca), test_raw.jsonl and
    train_meta.jsonl (the baseline's statistics come from these rows only)."""
    if s.val_ratio + s.test_ratio >= 1:
        raise SettingsError("--val-ratio/--test-ratio", f"val_ratio + test_ratio must be < 1 (a train split must "
                            f"remain), got {s.val_ratio} + {s.test_ratio}")
    try:
        alpaca.check_params(history_len=s.history_len, rating_threshold=s.rating_threshold)
    except ValueError as e:
        raise SettingsError("--rating-threshold", str(e)) from None
    ratings = movielens.load(s.source, cache_dir=Path(download_dir))
    examples = alpaca.build_examples(ratings, s.history_len, s.rating_threshold)
    splits = alpaca.split_examples(examples, s.val_ratio, s.test_ratio, s.seed)
    alpaca.check_no_leakage(splits)
    n_users = int(ratings["user_id"].nunique())
    with_examples = len({e["user_id"] for e in examples})
    metrics = {
        "source": s.source, "ratings": len(ratings), "users": n_users, "movies": int(ratings["item_id"].nunique()),
        "duplicate_ratings_dropped": int(ratings.attrs.get("duplicate_ratings_dropped", 0)),
        "users_with_examples": with_examples, "users_skipped_short_history": n_users - with_examples,
        "examples": len(examples), "splits": alpaca.split_stats(splits),
    }
    files = {"train.json": [alpaca.alpaca_record(e) for e in splits["train"]],
             "eval.json": [alpaca.alpaca_record(e) for e in splits["eval"]],
             "test_raw.jsonl": [alpaca.raw_record(e) for e in splits["test"]],
             "train_meta.jsonl": [alpaca.meta_record(e) for e in splits["train"]]}
    return files, metrics
