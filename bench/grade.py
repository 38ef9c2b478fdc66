"""Sandboxed code grading throughput: HumanEval canonical solutions/s with parallel workers
vs one worker, measured side by side in one run.

    python bench/grade.py [--n 164] [--workers N] [--timeout-s 30]
"""

import gzip
import json
import os
import sys
import time

import click

from posttrain.core.assets import asset_path
from posttrain.reason.sandbox import SandboxLimits, grade_many, isolation_report


def _items(n):
    with gzip.open(asset_path("humaneval"), "rt") as f:
        problems = [json.loads(line) for line in f][:n]
    return [(p["prompt"] + p["canonical_solution"],
             {"domain": "code", "prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"]})
            for p in problems]


def _run(items, workers, limits):
    t0 = time.perf_counter()
    grades = grade_many(items, workers=workers, limits=limits, progress=False)
    wall = time.perf_counter() - t0
    passed = sum(g.grade for g in grades)
    return len(items) / wall, wall, passed


@click.command()
@click.option("--n", default=164, show_default=True, help="HumanEval problems to grade")
@click.option("--workers", default=None, type=int, help="parallel workers [default: 2 x cpu count]")
@click.option("--timeout-s", default=30.0, show_default=True)
def main(n, workers, timeout_s):
    workers = workers or 2 * (os.cpu_count() or 1)
    limits = SandboxLimits(timeout_s=timeout_s)
    items = _items(n)
    iso = isolation_report()
    print(f"isolation: {json.dumps({k: v for k, v in iso.items() if k != 'uid'}, sort_keys=True)}", file=sys.stderr)
    _run(items[:4], 2, limits)  # warm the page cache so neither side pays for it
    one = _run(items, 1, limits)
    par = _run(items, workers, limits)
    print(f"{'workers':>8} {'solutions/s':>12} {'wall_s':>8} {'passed':>8}")
    print(f"{1:>8} {one[0]:>12.2f} {one[1]:>8.2f} {one[2]:>5}/{n}")
    print(f"{workers:>8} {par[0]:>12.2f} {par[1]:>8.2f} {par[2]:>5}/{n}")
    print(f"speedup {workers} workers vs 1: {par[0] / one[0]:.2f}x (cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
