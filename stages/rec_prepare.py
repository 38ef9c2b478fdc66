"""rec_prepare: MovieLens ratings -> Alpaca Yes/No examples, split per user by time.

    python stages/rec_prepare.py --source ml-100k --history-len 15 --rating-threshold 4.0 \
        --val-ratio 0.05 --test-ratio 0.1 --seed 13 --out-dir data/rec --metrics metrics/rec_prepare.json

Writes every example (caps live in rec_finetune / rec_evaluate): train.json and eval.json
(Alpaca lists), test_raw.jsonl (Alpaca keys + user/item/rating metadata), train_meta.jsonl (train rows'
metadata only, for the baseline).
"""

import logging
from pathlib import Path

import click

from posttrain.rec import alpaca

from posttrain.rec import movielens
from posttrain.core.cli import run
from posttrain.core.io import outputs


@click.command()
@click.option("--source", default="ml-100k", show_default=True,
              help="ml-100k (packaged), a MovieLens folder, ml-latest-small/ml-1m/ml-25m or a URL (online).")
@click.option("--history-len", type=int, default=15, show_default=True)
@click.option("--rating-threshold", type=float, default=4.0, show_default=True)
@click.option("--val-ratio", type=float, default=0.05, show_default=True)
@click.option("--test-ratio", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--out-dir", default="data/rec", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", default="metrics/rec_prepare.json", show_default=True)
def main(source, history_len, rating_threshold, val_ratio, test_ratio, seed, out_dir, metrics_path):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        alpaca.check_params(history_len=history_len, rating_threshold=rating_threshold)
        alpaca.check_split(val_ratio=val_ratio, test_ratio=test_ratio)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
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
