"""What a 95% cluster-bootstrap CI costs at 1,000 vs 10,000 resamples (`posttrain.core.stats`),
and how much the bound itself moves between bootstrap seeds at each.

    python bench/bootstrap.py [--repeats 5]

Items shaped like the committed evals: pref_rm's held-out accuracy (a proportion, n=240 pairs
in 234 prefixes) and rec_evaluate's AUC (n=400 rows in 283 users). Seconds are the median of
`--repeats` calls (the first call, which imports sklearn, is not counted); "bound sd" is the
sd of the lower bound over 20 bootstrap seeds: the Monte Carlo noise the resample count leaves.
"""

from __future__ import annotations

import time

import click
import numpy as np

CASES = {"proportion n=240": ("proportion", 240, 234), "auc n=400": ("auc", 400, 283)}
COUNTS = (1000, 10000)


def data(metric: str, n: int, k: int):
    rng = np.random.default_rng(0)
    clusters = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    if metric == "proportion":
        return [(rng.random(n) < 0.55).astype(int)], clusters
    y = rng.integers(0, 2, n)
    return [y, rng.random(n) + 0.3 * y], clusters


@click.command()
@click.option("--repeats", default=5, show_default=True, help="Timed calls per case (the median is kept).")
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/bootstrap.json.")
def main(repeats, save):
    from posttrain.core import stats

    rows = []
    print(f"{'case':<18} {'resamples':>9} {'s per CI':>9} {'bound sd':>9}")
    for case, (metric, n, k) in CASES.items():
        cols, clusters = data(metric, n, k)
        stats.estimate(metric, cols, clusters, seed=0, n_resamples=100)  # imports, first-call costs
        for r in COUNTS:
            times = []
            for rep in range(repeats):
                t = time.perf_counter()
                stats.estimate(metric, cols, clusters, seed=rep, n_resamples=r)
                times.append(time.perf_counter() - t)
            lows = [stats.estimate(metric, cols, clusters, seed=s, n_resamples=r)[f"{metric}_ci_low"]
                    for s in range(20)]
            rows.append({"case": case, "metric": metric, "n": n, "clusters": k, "resamples": r,
                         "seconds": round(float(np.median(times)), 4), "ci_low_sd": round(float(np.std(lows)), 5)})
            print(f"{case:<18} {r:>9,} {rows[-1]['seconds']:>9.3f} {rows[-1]['ci_low_sd']:>9.4f}")
    for case in CASES:
        a, b = (next(x for x in rows if x["case"] == case and x["resamples"] == r) for r in COUNTS)
        print(f"{case}: 10k / 1k time {b['seconds'] / a['seconds']:.1f}x, bound sd {a['ci_low_sd'] / b['ci_low_sd']:.1f}x "
              f"smaller")
    if save:
        from posttrain.core.report import save_bench

        save_bench("bootstrap", {"repeats": repeats, "results": rows})


if __name__ == "__main__":
    main()
