"""pref_download: preference sources -> data/pref/pairs_all.jsonl (+ per-source accounting).

Sources come last as `--NAME CAP` pairs, as DVC renders the `pref.sources` mapping: NAME is
hh-rlhf-harmless, champ, hh-rlhf, ultrafeedback-binarized, stack-exchange-preferences or
path:FILE; CAP is the most pairs taken from it (0 = all)."""

import click

from posttrain.core.cli import OUT_FILE, name_values, run, settings
from posttrain.core.io import outputs
from posttrain.pref.pairs import DownloadSettings, collect


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--out", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@settings(DownloadSettings)
@click.argument("sources", nargs=-1, type=click.UNPROCESSED)
def main(out, metrics, settings, sources):
    pairs, counts = collect(name_values(sources, "source", "cap", "--champ 2000"), settings)
    with outputs() as o:  # renamed together: never pairs without their accounting
        o.write_jsonl(out, pairs)
        o.write_json(metrics, counts)
    click.echo(f"pref_download: {len(pairs)} pairs -> {out}; skipped {counts['skipped_total']}", err=True)


if __name__ == "__main__":
    run(main)
