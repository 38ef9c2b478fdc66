"""rec_tokenize: Alpaca -> chat template -> input_ids / attention_mask / labels (prompt masked),
truncated at cutoff_len; the sequence-length report (metrics) and its histogram (plot)."""

from pathlib import Path

import click

from posttrain.core.cli import IN_DIR, OUT_DIR, OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.rec import alpaca, seqlen
from posttrain.rec.tokenization import TokenizeSettings


@click.command()
@click.option("--model", required=True, type=IN_DIR, help="Folder whose tokenizer and chat template are used.")
@click.option("--data-dir", required=True, type=IN_DIR)
@click.option("--out", required=True, type=OUT_DIR)
@click.option("--metrics", required=True, type=OUT_FILE)
@click.option("--hist", required=True, type=OUT_FILE)
@click.option("--show-examples", type=click.IntRange(min=0), default=0, help="Dev only: print N rendered examples.")
@settings(TokenizeSettings)
def main(model, data_dir, out, metrics, hist, show_examples, settings):
    records = {name: alpaca.read_records(Path(data_dir) / f"{name}.json") for name in ("train", "eval")}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    splits, report, lengths = seqlen.tokenize_with_report(tokenizer, records, settings)
    for row in splits["train"].select(range(min(show_examples, len(splits["train"])))):
        click.echo(seqlen.render_example(tokenizer, row["input_ids"], row["labels"]), err=True)
    with outputs() as o:  # the dataset folder and both metrics files renamed together
        seqlen.save_splits(splits, o.path(out, directory=True))
        o.write_json(metrics, report)
        o.write_json(hist, seqlen.histogram(lengths))
    click.echo(f"rec_tokenize: train {len(splits['train'])}, eval {len(splits['eval'])}; p99 length "
               f"{report['train'].get('p99')}, answer_truncated {report['answer_truncated']}", err=True)


if __name__ == "__main__":
    run(main)
