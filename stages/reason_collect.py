"""reason_collect: math and code problem sources -> data/reason/problems.jsonl.

    python stages/reason_collect.py --params-file params.yaml --sample 24 --seed 0 \
        --out data/reason/problems.jsonl --metrics metrics/reason_collect.json

`reason.sources` is a list of {name, cap} mappings, which DVC cannot interpolate into
a command line, so the stage reads that one key from the params file (DVC tracks it
under `params:`); `--sources` takes the same list as JSON instead.
"""

import json
import click
import yaml

from posttrain.core.io import DataError, outputs
from posttrain.reason.problems import collect, parse_sources
from posttrain.core.cli import run


def _sources_from(params_file: str, key: str):
    try:
        with open(params_file, encoding="utf-8") as fh:
            node = yaml.safe_load(fh) or {}
    except OSError as e:
        raise DataError(params_file, f"cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(params_file, f"not YAML: {getattr(e, 'problem', e)}",
                        line=mark.line + 1 if mark else None) from None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise click.BadParameter(f"{params_file}: no key {key!r}", param_hint="--params-file")
        node = node[part]
    return node


@click.command()
@click.option("--params-file", default="params.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Where to read reason.sources from (ignored with --sources).")
@click.option("--sources-key", default="reason.sources", show_default=True,
              help="Dev only: the key of the sources list in --params-file.")
@click.option("--sources", "sources_json", default=None,
              help='Dev only: sources as JSON instead, e.g. \'[{"name": "gsm8k-test", "cap": 100}]\'.')
@click.option("--sample", required=True, type=click.IntRange(min=0),
              help="Total problems kept, round-robin over sources (0 = all after caps).")
@click.option("--seed", required=True, type=int)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
def main(params_file, sources_key, sources_json, sample, seed, out, metrics_path):
    try:
        raw = json.loads(sources_json) if sources_json else _sources_from(params_file, sources_key)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e.msg} (column {e.colno})", param_hint="--sources") from None
    try:
        specs = parse_sources(raw)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="reason.sources") from None
    try:
        problems, metrics = collect(specs, sample or None, seed)
    except DataError:
        raise
    except ValueError as e:  # a source the loaders cannot read (unknown dataset / loader)
        raise click.BadParameter(str(e), param_hint="reason.sources") from e
    with outputs() as o:
        o.write_jsonl(out, problems)
        o.write_json(metrics_path, metrics)
    click.echo(f"reason_collect: {metrics['n_problems']} problems {metrics['by_domain']} -> {out}", err=True)


if __name__ == "__main__":
    run(main)
