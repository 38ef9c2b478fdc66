"""Wall time of each stage of one `dvc repro`, and what dominates.

    python bench/repro_times.py [--json metrics.json] [-- DVC_REPRO_ARGS...]

Runs `dvc repro` once as a user would, reads its output as it streams and stamps each
"Running stage 'X'" line: a stage's time runs from its line to the next stage's line (or
the end), so it includes DVC's own hashing and caching of that stage's outputs. Stages
DVC skipped as unchanged take no time and are listed as skipped. Prints a Markdown table,
slowest first, with each stage's share of the total, and saves bench/results/repro_times.json
(the previous file's figures kept as its "before"; `posttrain report` writes the README/docs
table from it). Pass --no-save for a partial run (targets), so it does not replace a full one.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import click

RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the times here.")
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/repro_times.json.")
@click.argument("repro_args", nargs=-1, type=click.UNPROCESSED)
def main(json_path, save, repro_args):
    t0 = time.perf_counter()
    current, start, times, skipped = None, t0, {}, []
    proc = subprocess.Popen(["dvc", "repro", *repro_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        now = time.perf_counter()
        if m := RUNNING.search(line):
            if current:
                times[current] = now - start
            current, start = m.group(1), now
        elif m := SKIPPED.search(line):
            skipped.append(m.group(1))
    rc = proc.wait()
    end = time.perf_counter()
    if current:
        times[current] = end - start
    total = end - t0
    click.echo(f"\n| stage | seconds | share |\n|---|---:|---:|")
    for name, s in sorted(times.items(), key=lambda kv: -kv[1]):
        click.echo(f"| {name} | {s:.0f} | {s / total:.0%} |")
    click.echo(f"| **total** (dvc repro exit {rc}) | {total:.0f} | |")
    if skipped:
        click.echo(f"skipped (unchanged): {', '.join(skipped)}")
    result = {"total_s": round(total, 1), "exit": rc, "skipped": skipped,
              "stages_s": {k: round(v, 1) for k, v in times.items()}}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    if save and rc == 0:
        from posttrain.core.report import RESULTS_DIR, save_bench

        old = Path(__file__).resolve().parents[1] / RESULTS_DIR / "repro_times.json"
        previous = {k: v for k, v in json.loads(old.read_text()).items() if k != "previous"} if old.exists() else None
        save_bench("repro_times", {**result, "previous": previous})
    sys.exit(rc)


if __name__ == "__main__":
    main()
