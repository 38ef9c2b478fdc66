"""reason_collect: math and code problem sources -> data/reason/problems.jsonl.

`reason.sources` is a list of {name, cap, weight} mappings, which DVC cannot put on a command
line, so the stage reads that one key from the params file (DVC tracks it under `params:`);
`--sources` takes the same list as JSON instead."""

import json

import click

from posttrain.core.cli import OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.reason.problems import CollectSettings, collect, parse_source_list, sources_from


@click.command()
@click.option("--params-file", required=True, type=click.Path(dir_okay=False), help="Where reason.sources is.")
@click.option("--sources-key", default="reason.sources", help="Dev only: the key of the sources list.")
@click.option("--sources", default=None, help='Dev only: sources as JSON, e.g. \'[{"name": "gsm8k-test"}]\'.')
@click.option("--out", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@settings(CollectSettings)
def main(params_file, sources_key, sources, out, metrics, settings):
    try:
        specs = parse_source_list(json.loads(sources)) if sources else sources_from(params_file, sources_key)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e.msg} (column {e.colno})", param_hint="--sources") from None
    problems, counts = collect(specs, settings)
    with outputs() as o:
        o.write_jsonl(out, problems)
        o.write_json(metrics, counts)
    click.echo(f"reason_collect: {counts['n_problems']} problems {counts['by_domain']} -> {out}", err=True)


if __name__ == "__main__":
    run(main)
