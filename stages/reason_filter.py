"""reason_filter: grade every sampled solution (rejection sampling).

    python stages/reason_filter.py --problems data/reason/problems.jsonl --samples data/reason/samples.jsonl \
        --graded data/reason/graded.jsonl --filtered data/reason/filtered.jsonl \
        --pairs data/reason/graded_pairs.jsonl --metrics metrics/reason_filter.json \
        --timeout-s 5 --memory-mb 512 --workers 2 --seed 0 \
        --predictions metrics/reason_filter_predictions.jsonl

Math: final answer extracted and compared with the gold answer; code: last Python
block run against the tests in the sandbox. graded.jsonl keeps every sample with its
grade and reason, filtered.jsonl the accepted ones, graded_pairs.jsonl correct vs
incorrect solutions of the same problem in the pref pair format.
"""

import click

from posttrain.core.cli import finite, run
from posttrain.core.stats import write_split
from posttrain.reason.graded import build_pairs, filter_metrics, grade_samples, prediction_rows
from posttrain.core.io import write_json, write_jsonl
from posttrain.reason.problems import index, read_problem_records, read_problems
from posttrain.reason.sandbox import protections

SAMPLE_FIELDS = ("id", "problem_id", "sample_idx", "domain", "source", "text",
                 "prompt_tokens", "completion_tokens")



@click.command()
@click.option("--problems", "problems_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--samples", "samples_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--graded", "graded_path", required=True, type=click.Path(dir_okay=False))
@click.option("--filtered", "filtered_path", required=True, type=click.Path(dir_okay=False))
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--timeout-s", "--timeout_s", required=True, type=finite(0, min_open=True),
              help="Wall-time limit per code run.")
@click.option("--memory-mb", "--memory_mb", required=True, type=click.IntRange(min=16))
@click.option("--workers", required=True, type=click.IntRange(min=1))
@click.option("--seed", required=True, type=int, help="Seed of the bootstrap CIs on the pass rates.")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per sample grades (jsonl) for `posttrain compare`.")
def main(problems_path, samples_path, graded_path, filtered_path, pairs_path, metrics_path, facts_path,
         timeout_s, memory_mb, workers, seed, predictions_path):
    problems = index(read_problems(problems_path))
    samples = read_problem_records(samples_path, problems, SAMPLE_FIELDS)
    graded = grade_samples(samples, problems, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers)
    accepted = [g for g in graded if g["grade"] == 1]
    pairs, pair_stats = build_pairs(graded, problems)
    write_jsonl(graded_path, graded)
    write_jsonl(filtered_path, accepted)
    write_jsonl(pairs_path, pairs)
    metrics = {**filter_metrics(graded, seed=seed), "pairs": pair_stats}
    metrics["sandbox"] = protections()  # which isolation this host gave the code runs
    write_split(metrics, metrics_path, facts_path, write_json)
    write_jsonl(predictions_path, prediction_rows(graded))
    click.echo(f"reason_filter: {len(accepted)}/{len(graded)} accepted, {len(pairs)} pairs", err=True)


if __name__ == "__main__":
    run(main)
