"""reason_filter: rejection sampling. Math answers are extracted and compared with the gold
answer; code runs against its tests in the sandbox. Every sample keeps its grade."""

import click

from posttrain.core.cli import IN_FILE, OUT_FILE, eval_outputs, run, settings
from posttrain.core.io import outputs
from posttrain.core.stats import write_split
from posttrain.reason.graded import FilterSettings, filter_run
from posttrain.reason.problems import index, read_problem_records, read_problems

SAMPLE_FIELDS = ("id", "problem_id", "sample_idx", "domain", "source", "text", "prompt_tokens", "completion_tokens")


@click.command()
@click.option("--problems", required=True, type=IN_FILE)
@click.option("--samples", required=True, type=IN_FILE)
@click.option("--graded", required=True, type=OUT_FILE)
@click.option("--filtered", required=True, type=OUT_FILE)
@click.option("--pairs", required=True, type=OUT_FILE)
@eval_outputs
@settings(FilterSettings)
def main(problems, samples, graded, filtered, pairs, metrics, facts, predictions, settings):
    by_id = index(read_problems(problems))
    r = filter_run(read_problem_records(samples, by_id, SAMPLE_FIELDS), by_id, settings)
    with outputs() as o:
        o.write_jsonl(graded, r["graded"])
        o.write_jsonl(filtered, r["accepted"])
        o.write_jsonl(pairs, r["pairs"])
        write_split(r["metrics"], metrics, facts, o.write_json)
        o.write_jsonl(predictions, r["predictions"])
    click.echo(f"reason_filter: {len(r['accepted'])}/{len(r['graded'])} accepted, {len(r['pairs'])} pairs", err=True)


if __name__ == "__main__":
    run(main)
