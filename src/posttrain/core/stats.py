"""Uncertainty of an evaluation metric: n and a seeded 95% cluster bootstrap CI.

Items are grouped in clusters (rec: users, pref: prefixes, reason: problems); items of a
cluster are correlated, so the bootstrap resamples whole clusters with replacement. A
resample is represented by how often each cluster was drawn (a multinomial count), which
becomes a weight on each of its items: means and MSEs are then one vectorized weighted
average over all resamples, and AUC (point value: sklearn's `roc_auc_score`) a weighted
Mann-Whitney count over all resamples.

Why numpy and not `scipy.stats.bootstrap`: scipy resamples the items of its data arrays;
passing cluster indices as the data works, but a resample whose statistic is undefined
(AUC of a resample with one class) gives NaN, which poisons scipy's percentile and BCa
intervals instead of being skipped and counted, and the per-call statistic cannot use the
vectorized weighted form. The interval is the percentile interval of the resamples.

One output convention everywhere, flat for `dvc metrics show` / `dvc exp show`:
`{NAME: value, NAME_ci_low: .., NAME_ci_high: .., "n": items, "n_clusters": clusters}`;
an eval block holds nothing else, so every number in it is an estimate with its CI or a
size; breakdowns (per source, per bucket) are blocks of their own beside it. AUC's
resamples with one class are left out of its CI; how many is logged (a warning) and
given to the caller's `skipped` dict, not written into the block. No data (n = 0), one cluster
(no between-cluster spread to estimate) and an undefined point value give null, never NaN.
A paired difference (same items, two scores) uses the same resamples for both sides.

A proportion (items in [0, 1]: hits, pass rates) whose items are all 0 or all 1 has no
spread to resample: the percentile bootstrap gives [0, 0] however few clusters there are.
Its interval is then the exact one-sided bound with clusters as the units: when the rate is
p, k independent clusters are all 0 with probability at most (1 - p)^k whatever the
correlation within a cluster, so p <= 1 - 0.025^(1/k) (0.37 for 8 problems).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
# bench/bootstrap.py: 10,000 resamples cost ~0.1 s per proportion CI (n=240) and ~0.2 s per
# AUC CI (n=400); at 1,000 the 2.5% tail rests on 25 resamples, too few for a stable bound.
N_RESAMPLES = 10_000
DIGITS = 6


# ---------------------------------------------------------------- weighted statistics
# Each takes weights (R, n) (one row per resample) and item columns (n,), returns (R,).

def _wmean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (w * x).sum(axis=1) / np.where(tot > 0, tot, 1), np.nan)


def _mean(w, x):
    return _wmean(w, np.asarray(x, dtype=np.float64))


def _mean_diff(w, x, y):
    """Mean of the per-item change x - y (e.g. reward after - before within one run)."""
    return _wmean(w, np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))


def _proportion(w, x):
    x = np.asarray(x, dtype=np.float64)
    if x.size and not ((x >= 0) & (x <= 1)).all():
        raise ValueError("a proportion needs items in [0, 1]")
    return _wmean(w, x)


def _mse(w, pred, target):
    d = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return _wmean(w, d * d)


def _auc(w, labels, scores):
    """Weighted Mann-Whitney AUC per resample (ties count one half): the same number as
    sklearn's `roc_auc_score(labels, scores, sample_weight=row)` (tested), vectorized over
    resamples because one sklearn call per resample costs ~2.5 ms, ~3 s per 1000-resample CI."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    y, s = y[order], s[order]
    # Tie groups of equal scores: [start, end) in sorted order, per item.
    new_group = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], s.size]
    g = np.cumsum(new_group) - 1
    out = np.empty(len(w))
    for lo in range(0, len(w), 256):  # blocks of resamples bound the memory to 256 x n
        wb = w[lo:lo + 256][:, order]
        pos, neg = wb * (y == 1), wb * (y == 0)
        cneg = np.concatenate([np.zeros((len(wb), 1)), np.cumsum(neg, axis=1)], axis=1)
        below = cneg[:, starts][:, g]
        tied = (cneg[:, ends] - cneg[:, starts])[:, g]
        wp, wn = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a resample without both classes has no AUC: NaN, skipped and counted later
            out[lo:lo + 256] = np.where((wp > 0) & (wn > 0),
                                        (pos * (below + 0.5 * tied)).sum(axis=1) / (wp * wn), np.nan)
    return out


def _auc_point(labels, scores):
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=int)
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64))) if 0 < y.sum() < y.size else None


METRICS: dict[str, Callable] = {"mean": _mean, "proportion": _proportion, "mean_diff": _mean_diff,
                                 "mse": _mse, "auc": _auc}


# ---------------------------------------------------------------- resampling

def _cluster_codes(clusters, n: int) -> np.ndarray:
    """Cluster index per item (0..k-1, in sorted order of the ids); None = each item alone."""
    if clusters is None:
        return np.arange(n)
    clusters = list(clusters)
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} items")
    ids = sorted({str(c) for c in clusters})
    code = {c: i for i, c in enumerate(ids)}
    return np.array([code[str(c)] for c in clusters], dtype=np.int64)


def resample_weights(clusters, n: int, *, seed: int, n_resamples: int = N_RESAMPLES) -> np.ndarray:
    """(n_resamples, n) item weights: how often each item's cluster was drawn when drawing
    as many clusters as there are, with replacement. Row order is fixed by `seed`."""
    return np.concatenate(list(_weight_blocks(clusters, n, seed, n_resamples)) or [np.zeros((0, n))])


def _weight_blocks(clusters, n: int, seed: int, n_resamples: int):
    """`resample_weights` in blocks of about 2M weights (16 MB): the whole (resamples x items)
    matrix of a 100k-item test set would take 800 MB, and AUC makes a few more of its size."""
    block = max(1, min(256, 2_000_000 // max(n, 1)))
    codes = _cluster_codes(clusters, n)
    k = int(codes.max()) + 1 if n else 0
    counts = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_resamples) if k \
        else np.zeros((n_resamples, 0), dtype=np.int64)
    for lo in range(0, n_resamples, block):
        yield counts[lo:lo + block][:, codes].astype(np.float64)


def _resampled(metric: str, clusters, n: int, seed: int, n_resamples: int, *sides) -> np.ndarray:
    """The metric on every resample: of one side's columns, or side 0 minus side 1 (paired)."""
    fn = METRICS[metric]
    out = []
    for w in _weight_blocks(clusters, n, seed, n_resamples):
        vals = [fn(w, *cols) for cols in sides]
        out.append(vals[0] if len(vals) == 1 else vals[0] - vals[1])
    return np.concatenate(out)


def _round(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), DIGITS)


def _interval(values: np.ndarray, name: str, value, k: int, skipped: dict | None) -> dict:
    ok = values[np.isfinite(values)]
    lo = hi = None
    if value is not None and k > 1 and ok.size:
        alpha = (1 - CONFIDENCE) / 2
        lo, hi = np.quantile(ok, [alpha, 1 - alpha])
        n_skipped = int(values.size - ok.size)
        if n_skipped:  # only AUC can be undefined on a resample (one class drawn)
            log.warning("%s: %d of %d bootstrap resamples undefined (one class); its CI uses the other %d",
                        name, n_skipped, values.size, ok.size)
        if skipped is not None:
            skipped[name] = n_skipped
    return {name: _round(value), f"{name}_ci_low": _round(lo), f"{name}_ci_high": _round(hi)}


def _exact_bound(value: float, name: str, k: int) -> dict:
    """CI of an all-0 (or all-1) proportion over k clusters (see the module doc)."""
    u = 1 - ((1 - CONFIDENCE) / 2) ** (1 / k)
    lo, hi = (0.0, u) if value == 0 else (1 - u, 1.0)
    return {name: _round(value), f"{name}_ci_low": _round(lo), f"{name}_ci_high": _round(hi)}


def _columns(cols: Sequence, n: int | None = None) -> list[np.ndarray]:
    arrs = [np.asarray(c) for c in cols]
    lengths = {len(a) for a in arrs} | ({n} if n is not None else set())
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    return arrs


def point(metric: str, cols: Sequence) -> float | None:
    """The metric on all items (no resampling); None when undefined (no items, one class)."""
    cols = _columns(cols)
    n = len(cols[0])
    if not n:
        return None
    if metric == "auc":
        return _auc_point(*cols)
    v = float(METRICS[metric](np.ones((1, n)), *cols)[0])
    return v if np.isfinite(v) else None


def estimate(metric: str, cols: Sequence, clusters=None, *, seed: int, name: str | None = None,
             n_resamples: int = N_RESAMPLES, skipped: dict | None = None) -> dict:
    """`metric` ("mean", "proportion": x; "mean_diff": x, y; "mse": pred, target; "auc": labels, scores) of the item columns
    `cols`, with its cluster bootstrap CI, n and n_clusters (see the module doc). `skipped`,
    when given, receives {name: resamples left out of the CI as undefined}."""
    cols = _columns(cols)
    n = len(cols[0])
    k = len(set(_cluster_codes(clusters, n).tolist()))
    name = name or metric
    value = point(metric, cols)
    if metric == "proportion" and value in (0.0, 1.0) and k > 1:
        return {**_exact_bound(value, name, k), "n": n, "n_clusters": k}
    vals = _resampled(metric, clusters, n, seed, n_resamples, cols) \
        if n and value is not None and k > 1 else np.full(n_resamples, np.nan)
    return {**_interval(vals, name, value, k, skipped), "n": n, "n_clusters": k}


def difference(metric: str, new: Sequence, old: Sequence, clusters=None, *, seed: int,
               name: str | None = None, n_resamples: int = N_RESAMPLES, skipped: dict | None = None) -> dict:
    """Paired difference metric(new) - metric(old) on the same items (e.g. LLM AUC minus
    baseline AUC, after minus before), each resample drawing the same clusters for both."""
    new, old = _columns(new), _columns(old)
    _columns([new[0], old[0]])
    n = len(new[0])
    k = len(set(_cluster_codes(clusters, n).tolist()))
    name = name or f"{metric}_diff"
    a, b = point(metric, new), point(metric, old)
    value = a - b if a is not None and b is not None else None
    if n and value is not None and k > 1:
        vals = _resampled(metric, clusters, n, seed, n_resamples, new, old)
    else:
        vals = np.full(n_resamples, np.nan)
    return {**_interval(vals, name, value, k, skipped), "n": n, "n_clusters": k}


# ---------------------------------------------------------------- several training runs per arm
# An arm (a training setup) is m runs that differ only in their training seed, each scored on
# the same items. Its estimate is the mean over its runs; the two-level bootstrap draws m runs
# with replacement (seed-to-seed spread), then the items' clusters (test-set spread), the same
# clusters for every run of both arms (paired). With the handful of seeds a CPU affords the
# plain run bootstrap is too narrow twice over: it shrinks the runs' variance by (m - 1) / m,
# and a spread estimated from few runs calls for Student's t, not the normal quantile (3 + 3
# seeds: t(4) = 2.78 vs 1.96). So each arm's drawn mean is moved away from its all-runs mean
# by sqrt(m / (m - 1)) * t(df) / z, df = runs - arms: where seed noise dominates the interval
# is then the t interval of the run means, where item noise dominates it stays the cluster
# bootstrap (tests/core/test_stats.py simulates both). One run per arm: exactly `estimate` /
# `difference`.

def _run_resamples(metric: str, runs: list, clusters, n: int, seed: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, runs): each run's metric on the shared cluster resamples."""
    fn = METRICS[metric]
    return np.concatenate([np.stack([fn(w, *cols) for cols in runs], axis=1)
                           for w in _weight_blocks(clusters, n, seed, n_resamples)])


def _t_over_z(df: int) -> float:
    from scipy.stats import norm, t

    q = 1 - (1 - CONFIDENCE) / 2
    return float(t.ppf(q, df) / norm.ppf(q)) if df > 0 else 1.0


def _arm_means(m_all: np.ndarray, rng: np.random.Generator | None, df: int = 0) -> np.ndarray:
    """Per resample, the arm's mean over its runs: all runs (rng None: items only) or m runs
    drawn with replacement, their deviation from the all-runs mean scaled (see above)."""
    full = m_all.mean(axis=1)
    m = m_all.shape[1]
    if rng is None or m == 1:
        return full
    counts = rng.multinomial(m, np.full(m, 1.0 / m), size=len(m_all))
    # a run not drawn contributes nothing, even where its metric is undefined (NaN)
    drawn = np.where(counts > 0, counts * m_all, 0.0).sum(axis=1) / m
    return full + np.sqrt(m / (m - 1)) * _t_over_z(df) * (drawn - full)


def _run_points(metric: str, runs: list) -> list:
    return [point(metric, cols) for cols in runs]


def _spread(points: list) -> float | None:
    ok = [p for p in points if p is not None]
    return float(np.std(ok, ddof=1)) if len(ok) > 1 and len(ok) == len(points) else None


def _check_runs(runs: Sequence[Sequence], n: int | None) -> tuple[list, int]:
    runs = [_columns(cols) for cols in runs]
    if not runs:
        raise ValueError("an arm needs at least one run")
    n = len(runs[0][0]) if n is None else n
    for cols in runs:
        _columns(cols, n)
    return runs, n


def group_estimate(metric: str, runs: Sequence[Sequence], clusters=None, *, seed: int, name: str | None = None,
                   n_resamples: int = N_RESAMPLES) -> dict:
    """`metric` averaged over several runs scored on the same items, with the two-level CI
    (runs, then clusters), the items-only CI (`NAME_items_ci_*`: the test set's spread alone)
    and the seed-to-seed sd of the per-run metric (`NAME_sd`, null for one run)."""
    runs, n = _check_runs(runs, None)
    k = len(set(_cluster_codes(clusters, n).tolist()))
    name = name or metric
    pts = _run_points(metric, runs)
    value = float(np.mean(pts)) if None not in pts else None
    ok = n and value is not None and k > 1
    m_all = _run_resamples(metric, runs, clusters, n, seed, n_resamples) if ok else np.full((n_resamples, 1), np.nan)
    two = _arm_means(m_all, np.random.default_rng([seed, 1]), len(runs) - 1)
    items = _interval(_arm_means(m_all, None), f"{name}_items", value, k, None)
    return {**_interval(two, name, value, k, None), f"{name}_items_ci_low": items[f"{name}_items_ci_low"],
            f"{name}_items_ci_high": items[f"{name}_items_ci_high"], f"{name}_sd": _round(_spread(pts)),
            "runs": len(runs), "n": n, "n_clusters": k}


def group_difference(metric: str, new_runs: Sequence[Sequence], old_runs: Sequence[Sequence], clusters=None, *,
                     seed: int, name: str | None = None, n_resamples: int = N_RESAMPLES) -> dict:
    """Mean of `metric` over the new arm's runs minus the mean over the old arm's, every run
    scored on the same items: the two-level CI (each arm's runs, then the shared clusters),
    the items-only CI (`NAME_items_ci_*`, runs held fixed) and each arm's seed-to-seed sd
    (`new_sd`, `old_sd`). With one run per arm it is `difference` to the last digit."""
    new_runs, n = _check_runs(new_runs, None)
    old_runs, _ = _check_runs(old_runs, n)
    k = len(set(_cluster_codes(clusters, n).tolist()))
    name = name or f"{metric}_diff"
    pn, po = _run_points(metric, new_runs), _run_points(metric, old_runs)
    value = float(np.mean(pn)) - float(np.mean(po)) if None not in pn + po else None
    if n and value is not None and k > 1:
        both = _run_resamples(metric, new_runs + old_runs, clusters, n, seed, n_resamples)
    else:
        both = np.full((n_resamples, len(new_runs) + len(old_runs)), np.nan)
    mn, mo = both[:, :len(new_runs)], both[:, len(new_runs):]
    rng = np.random.default_rng([seed, 1])  # its own stream: the cluster draws stay `difference`'s
    df = len(new_runs) + len(old_runs) - 2
    two = _arm_means(mn, rng, df) - _arm_means(mo, rng, df)
    items = _interval(_arm_means(mn, None) - _arm_means(mo, None), f"{name}_items", value, k, None)
    return {**_interval(two, name, value, k, None), f"{name}_items_ci_low": items[f"{name}_items_ci_low"],
            f"{name}_items_ci_high": items[f"{name}_items_ci_high"],
            "new": _round(float(np.mean(pn)) if None not in pn else None),
            "old": _round(float(np.mean(po)) if None not in po else None),
            "new_sd": _round(_spread(pn)), "old_sd": _round(_spread(po)),
            "new_runs": len(new_runs), "old_runs": len(old_runs), "n": n, "n_clusters": k}


def report(specs: dict[str, tuple], clusters=None, *, seed: int, skipped: dict | None = None) -> dict:
    """Several metrics of the same items in one flat dict: specs maps NAME -> (metric, cols)
    for an estimate or (metric, new_cols, old_cols) for a paired difference."""
    out: dict = {}
    for name, spec in specs.items():
        if len(spec) == 2:
            one = estimate(spec[0], spec[1], clusters, seed=seed, name=name, skipped=skipped)
        else:
            one = difference(spec[0], spec[1], spec[2], clusters, seed=seed, name=name, skipped=skipped)
        out.update(one)
    if not specs:
        out.update({"n": 0, "n_clusters": 0})
    return out


def split_estimates(metrics: dict) -> tuple[dict, dict]:
    """(estimates, run facts) of an eval stage's results. Estimates: the eval blocks (dicts with
    "n": estimates with their CIs and n) and the groupings of them (per bucket, per source), in
    their place; everything else (counts of the data, flags, training facts, the sandbox's
    protections) goes to the facts, in its place. A block's `n_clusters` (how many clusters its
    CIs resampled) describes the data, so it goes to the facts too, under "n_clusters" at the
    block's path. The eval metrics file holds only the estimates, so every number `dvc metrics
    show` lists for an eval stage is an estimate with its 95% CI, or its n."""
    est, facts, clusters = _split(metrics)
    return est, {**facts, "n_clusters": clusters} if clusters else facts


def _split(metrics: dict) -> tuple[dict, dict, dict]:
    est, facts, clusters = {}, {}, {}
    for k, v in metrics.items():
        if isinstance(v, dict) and "n" in v:
            est[k] = {kk: vv for kk, vv in v.items() if kk != "n_clusters"}
            if "n_clusters" in v:
                clusters[k] = v["n_clusters"]
        elif isinstance(v, dict):
            e, f, c = _split(v)
            for out, part in ((est, e), (facts, f), (clusters, c)):
                if part:
                    out[k] = part
        else:
            facts[k] = v
    return est, facts, clusters


def write_split(metrics: dict, metrics_path, facts_path, write) -> None:
    """`split_estimates`, then `write(path, obj)` each part (core.io's write_json, or an
    `outputs()` block's, so both land together)."""
    est, facts = split_estimates(metrics)
    write(metrics_path, est)
    write(facts_path, facts)
