"""reason_format: accepted solutions -> SFT examples with the math/coding templates, balanced
math:code by reason.mix_math : reason.mix_code."""

import click

from posttrain.core.cli import IN_FILE, OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.reason.problems import index, read_problem_records, read_problems
from posttrain.reason.sft_format import FormatSettings, build_sft


@click.command()
@click.option("--problems", required=True, type=IN_FILE)
@click.option("--filtered", required=True, type=IN_FILE)
@click.option("--out", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@settings(FormatSettings)
def main(problems, filtered, out, metrics, settings):
    by_id = index(read_problems(problems))
    accepted = read_problem_records(filtered, by_id, ("id", "problem_id", "domain", "source", "text"))
    examples, counts = build_sft(accepted, by_id, settings)
    with outputs() as o:
        o.write_jsonl(out, examples)
        o.write_json(metrics, counts)
    click.echo(f"reason_format: {counts['n_examples']} examples {counts['by_domain']} -> {out}", err=True)


if __name__ == "__main__":
    run(main)
