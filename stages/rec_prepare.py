"""rec_prepare: MovieLens ratings -> per-user timelines -> Alpaca "will this user like this movie?"
examples, split by user and time into train.json, eval.json, test_raw.jsonl (+ train_meta.jsonl)."""

from pathlib import Path

import click

from posttrain.core.cli import OUT_DIR, OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.rec.prepare import PrepareSettings, prepare


@click.command()
@click.option("--out-dir", required=True, type=OUT_DIR)
@click.option("--metrics", required=True, type=OUT_FILE)
@settings(PrepareSettings)
def main(out_dir, metrics, settings):
    files, counts = prepare(settings, Path(out_dir) / "download")
    with outputs() as o:  # all or nothing: the files are renamed together once every one is written
        for name, rows in files.items():
            if name.endswith(".jsonl"):
                o.write_jsonl(Path(out_dir) / name, rows)
            else:
                o.write_json(Path(out_dir) / name, rows, indent=None)
        o.write_json(metrics, counts)
    click.echo(f"rec_prepare: {counts['examples']} examples -> " +
               ", ".join(f"{k} {v['n']}" for k, v in counts["splits"].items()), err=True)


if __name__ == "__main__":
    run(main)
