"""rec_tokenize: Alpaca train/eval -> chat template -> label-masked tokens + length report.

    python stages/rec_tokenize.py --model data/models/policy --data-dir data/rec --cutoff-len 1024 \
        --truncation left --out data/rec/tokenized --metrics metrics/rec_tokenize.json \
        --hist metrics/rec_tokenize_hist.json [--show-examples 3]
"""

from pathlib import Path

import click

from posttrain.rec import alpaca, seqlen
from posttrain.core.io import outputs
from posttrain.rec.tokenization import STRATEGIES, tokenize_dataset
from posttrain.core.cli import run


@click.command()
@click.option("--model", "model_dir", default="data/models/policy", show_default=True,
              help="Folder whose tokenizer and chat template are used.")
@click.option("--data-dir", default="data/rec", show_default=True, type=click.Path(exists=True, file_okay=False))
@click.option("--cutoff-len", "--cutoff_len", required=True, type=click.IntRange(min=1))
@click.option("--truncation", required=True, type=click.Choice(STRATEGIES))
@click.option("--out", "out_dir", default="data/rec/tokenized", show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/rec_tokenize.json", show_default=True)
@click.option("--hist", "hist_path", default="metrics/rec_tokenize_hist.json", show_default=True)
@click.option("--show-examples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Dev only: print N rendered train examples with their label masks to stderr.")
def main(model_dir, data_dir, cutoff_len, truncation, out_dir, metrics_path, hist_path, show_examples):
    records = {name: alpaca.read_records(Path(data_dir) / f"{name}.json") for name in ("train", "eval")}
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    splits, metrics, all_lengths = {}, {"cutoff_len": cutoff_len, "truncation": truncation}, []
    for name in ("train", "eval"):
        ds, stats = tokenize_dataset(tokenizer, records[name], cutoff_len=cutoff_len, strategy=truncation, desc=name)
        splits[name] = ds
        metrics[name] = seqlen.length_report(stats, *seqlen.mask_counts(ds), cutoff_len)
        all_lengths += stats.full_len
    metrics["cutoff_table"] = seqlen.cutoff_table(all_lengths, extra=cutoff_len)
    for name in ("answer_truncated",):
        metrics[name] = sum(metrics[s][name] for s in ("train", "eval"))
    for i in range(min(show_examples, len(splits["train"]))):
        row = splits["train"][i]
        click.echo(seqlen.render_example(tokenizer, row["input_ids"], row["labels"]), err=True)
    with outputs() as o:  # the dataset folder and both metrics files renamed together
        tmp = o.path(out_dir, directory=True)
        # An explicit shard count: datasets writes no shard at all for an empty split
        # (then cannot load it back); ~500 MB per shard otherwise, as datasets does.
        shards = {k: 1 + ds.data.nbytes // 500_000_000 for k, ds in splits.items()}
        datasets.DatasetDict(splits).save_to_disk(str(tmp), num_shards=shards)
        o.write_json(metrics_path, metrics)
        o.write_json(hist_path, seqlen.histogram(all_lengths))
    click.echo(f"rec_tokenize: train {len(splits['train'])}, eval {len(splits['eval'])}; "
               f"p99 length {metrics['train'].get('p99')}, truncated {metrics['train']['truncated']}, "
               f"answer_truncated {metrics['answer_truncated']}", err=True)


if __name__ == "__main__":
    run(main)
