"""reason_format: accepted solutions -> SFT chat examples (math and coding templates).

    python stages/reason_format.py --problems data/reason/problems.jsonl \
        --filtered data/reason/filtered.jsonl --out data/reason/sft.jsonl \
        --metrics metrics/reason_format.json --mix 1:1 --seed 0
"""

import click

from posttrain.core.io import outputs
from posttrain.reason.problems import index, read_problem_records, read_problems
from posttrain.reason.sft_format import build_sft, parse_mix
from posttrain.core.cli import run


@click.command()
@click.option("--problems", "problems_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--filtered", "filtered_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--mix", required=True, help="math:code balance, e.g. 1:1, 3:1, 1:0.")
@click.option("--seed", required=True, type=int)
def main(problems_path, filtered_path, out, metrics_path, mix, seed):
    try:
        parse_mix(mix)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--mix") from None
    problems = index(read_problems(problems_path))
    accepted = read_problem_records(filtered_path, problems, ("id", "problem_id", "domain", "source", "text"))
    examples, metrics = build_sft(accepted, problems, mix, seed)
    with outputs() as o:
        o.write_jsonl(out, examples)
        o.write_json(metrics_path, metrics)
    click.echo(f"reason_format: {metrics['n_examples']} examples {metrics['by_domain']} -> {out}", err=True)


if __name__ == "__main__":
    run(main)
