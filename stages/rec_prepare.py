"""rec_prepare: MovieLens ratings -> Alpaca Yes/No examples, split per user by time.

    python stages/rec_prepare.py --source ml-100k --history-len 15 --rating-threshold 4.0 \
        --val-ratio 0.05 --test-ratio 0.1 --seed 13 --out-dir data/rec --metrics metrics/rec_prepare.json

Writes every example (caps live in rec_finetune / rec_evaluate): train.json and eval.json
(Alpaca lists), test_raw.jsonl (Alpaca keys + user/item/rating metadata), train_meta.jsonl (train rows'
metadata only, for the baseline).
"""

from pathlib import Path

import click

from posttrain.rec import alpaca

from posttrain.rec import movielens
from posttrain.core.io import outputs
from posttrain.core.cli import finite, run


@click.command()
@click.option("--source", required=True,
              help="ml-100k (packaged), a MovieLens folder, ml-latest-small/ml-1m/ml-25m or a URL (online).")
@click.option("--history-len", "--history_len", required=True, type=click.IntRange(min=1))
@click.option("--rating-threshold", "--rating_threshold", required=True, type=finite())
@click.option("--val-ratio", "--val_ratio", required=True, type=finite(0, 1, max_open=True))
@click.option("--test-ratio", "--test_ratio", required=True, type=finite(0, 1, max_open=True))
@click.option("--seed", required=True, type=int)
@click.option("--out-dir", default="data/rec", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", default="metrics/rec_prepare.json", show_default=True)
def main(source, history_len, rating_threshold, val_ratio, test_ratio, seed, out_dir, metrics_path):
    if val_ratio + test_ratio >= 1:
        raise click.BadParameter(f"val_ratio + test_ratio must be < 1 (a train split must remain), "
                                 f"got {val_ratio} + {test_ratio}", param_hint="--val-ratio/--test-ratio")
    try:
        alpaca.check_params(history_len=history_len, rating_threshold=rating_threshold)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--rating-threshold") from None
    out = Path(out_dir)
    ratings = movielens.load(source, cache_dir=out / "download")
    examples = alpaca.build_examples(ratings, history_len, rating_threshold)
    splits = alpaca.split_examples(examples, val_ratio, test_ratio, seed)
    alpaca.check_no_leakage(splits)
    n_users = int(ratings["user_id"].nunique())
    metrics = {
        "source": source, "ratings": len(ratings), "users": n_users, "movies": int(ratings["item_id"].nunique()),
        "duplicate_ratings_dropped": int(ratings.attrs.get("duplicate_ratings_dropped", 0)),
        "users_with_examples": len({e["user_id"] for e in examples}),
        "users_skipped_short_history": n_users - len({e["user_id"] for e in examples}),
        "examples": len(examples), "splits": alpaca.split_stats(splits),
    }
    # All or nothing: the files are renamed together once every one is written.
    with outputs() as o:
        o.write_json(out / "train.json", [alpaca.alpaca_record(e) for e in splits["train"]], indent=None)
        o.write_json(out / "eval.json", [alpaca.alpaca_record(e) for e in splits["eval"]], indent=None)
        o.write_jsonl(out / "test_raw.jsonl", (alpaca.raw_record(e) for e in splits["test"]))
        # Same order as train.json; the baseline's statistics come from these rows only.
        o.write_jsonl(out / "train_meta.jsonl", (alpaca.meta_record(e) for e in splits["train"]))
        o.write_json(metrics_path, metrics)
    click.echo(f"rec_prepare: {len(examples)} examples -> " +
               ", ".join(f"{k} {v['n']}" for k, v in metrics["splits"].items()), err=True)


if __name__ == "__main__":
    run(main)
