"""reason_generate: n sampled step-by-step solutions per problem -> data/reason/samples.jsonl.

With --cache-dir, only samples not generated before (same model bytes, prompt, sampling params,
seed, sample index, backend and threads) are generated: raising n_samples or adding problems
costs only the new rows."""

import click

from posttrain.core.cli import IN_FILE, OUT_DIR, OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.reason.generation import GenerateSettings, generate_run
from posttrain.reason.problems import read_problems


@click.command()
@click.option("--problems", required=True, type=IN_FILE)
@click.option("--cache-dir", type=OUT_DIR, help="Generation cache (a persist: true out); omit to sample all.")
@click.option("--out", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@click.option("--progress/--no-progress", default=True, help="Dev only: tqdm progress bar.")
@settings(GenerateSettings)
def main(problems, cache_dir, out, metrics, progress, settings):
    rows = read_problems(problems)  # bad input fails fast, before torch is imported
    samples, facts = generate_run(rows, settings, cache_dir, progress)
    with outputs() as o:
        o.write_jsonl(out, samples)
        o.write_json(metrics, facts)
    c = facts["cache"]
    click.echo(f"reason_generate: {len(samples)} samples, {facts['completion_tokens']} tokens ({c['generated']} "
               f"generated, {c['cache_hits']} from the cache) -> {out}", err=True)


if __name__ == "__main__":
    run(main)
