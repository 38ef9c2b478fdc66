import json

import numpy as np
import pytest

from posttrain.core import stats


def test_mean_ci_covers_true_value_at_about_nominal_rate():
    # 200 seeded datasets of 60 Bernoulli(0.3) items: a 95% CI should miss about 10.
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        x = (rng.random(60) < 0.3).astype(int)
        r = stats.estimate("mean", [x], seed=rep, n_resamples=400)
        covered += r["mean_ci_low"] <= 0.3 <= r["mean_ci_high"]
    assert 0.88 <= covered / 200 <= 0.99


def test_auc_ci_covers_true_value():
    # Scores ~ N(label, 1): true AUC = Phi(1 / sqrt(2)) = 0.7602.
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(100):
        y = rng.integers(0, 2, 120)
        s = y + rng.normal(size=120)
        r = stats.estimate("auc", [y, s], seed=rep, n_resamples=500)
        covered += r["auc_ci_low"] <= 0.7602 <= r["auc_ci_high"]
    assert covered >= 88  # nominal 95 of 100


def test_cluster_resampling_is_wider_when_items_within_a_cluster_are_correlated():
    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(20), 10)
    x = rng.normal(size=20)[clusters] + 0.1 * rng.normal(size=200)  # cluster effect dominates
    item = stats.estimate("mean", [x], None, seed=0)
    clus = stats.estimate("mean", [x], clusters, seed=0)
    assert item["n_clusters"] == 200 and clus["n_clusters"] == 20 and clus["n"] == 200
    w_item = item["mean_ci_high"] - item["mean_ci_low"]
    w_clus = clus["mean_ci_high"] - clus["mean_ci_low"]
    assert w_clus > 2 * w_item  # design effect ~ sqrt(10)


def test_same_seed_same_result_other_seed_other_interval():
    rng = np.random.default_rng(3)
    y, s, users = rng.integers(0, 2, 80), rng.random(80), rng.integers(0, 15, 80)
    a = stats.report({"auc": ("auc", [y, s]), "acc": ("mean", [(s >= 0.5) == y])}, users, seed=7)
    b = stats.report({"auc": ("auc", [y, s]), "acc": ("mean", [(s >= 0.5) == y])}, users, seed=7)
    c = stats.report({"auc": ("auc", [y, s]), "acc": ("mean", [(s >= 0.5) == y])}, users, seed=8)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["auc"] == c["auc"] and a["auc_ci_low"] != c["auc_ci_low"]


def test_mse_point_and_interval():
    pred, target = np.array([0.0, 1.0, 0.5, 0.5]), np.array([0.0, 0.0, 1.0, 0.5])
    r = stats.estimate("mse", [pred, target], seed=0)
    assert r["mse"] == pytest.approx((0 + 1 + 0.25 + 0) / 4)
    assert r["mse_ci_low"] <= r["mse"] <= r["mse_ci_high"]


def test_paired_difference_exact_and_excludes_zero():
    rng = np.random.default_rng(4)
    old = (rng.random(300) < 0.5).astype(int)
    new = old.copy()
    flip = np.flatnonzero(old == 0)[:60]
    new[flip] = 1  # 60 of 300 items become correct, none worse: +0.2 exactly
    r = stats.difference("mean", [new], [old], np.arange(300) // 3, seed=0, name="acc_diff")
    assert r["acc_diff"] == pytest.approx(0.2)
    assert r["acc_diff_ci_low"] > 0
    same = stats.difference("mean", [old], [old], None, seed=0, name="d")
    assert same["d"] == 0 and same["d_ci_low"] == 0 and same["d_ci_high"] == 0


def test_paired_difference_is_tighter_than_unpaired_spread():
    # Two scorers sharing most of their per-item signal: pairing cancels it.
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    base = y + rng.normal(size=200)
    other = base + 0.05 * rng.normal(size=200)
    d = stats.difference("auc", [y, other], [y, base], seed=0)
    one = stats.estimate("auc", [y, base], seed=0)
    assert (d["auc_diff_ci_high"] - d["auc_diff_ci_low"]) < 0.5 * (one["auc_ci_high"] - one["auc_ci_low"])


def test_empty_input_gives_nulls_not_nan():
    r = stats.estimate("mean", [[]], [], seed=0)
    assert r == {"mean": None, "mean_ci_low": None, "mean_ci_high": None, "n": 0, "n_clusters": 0}
    a = stats.estimate("auc", [[], []], seed=0)
    assert a["auc"] is None and a["n"] == 0
    json.dumps(r, allow_nan=False)
    d = stats.difference("mse", [[], []], [[], []], seed=0, name="d")
    assert d["d"] is None and d["d_ci_low"] is None


def test_one_cluster_has_a_value_but_no_interval():
    r = stats.estimate("mean", [[1, 0, 1]], ["u1", "u1", "u1"], seed=0)
    assert r["mean"] == pytest.approx(2 / 3) and r["n_clusters"] == 1
    assert r["mean_ci_low"] is None and r["mean_ci_high"] is None


def test_auc_one_class_is_null_and_one_class_resamples_are_skipped_and_counted():
    one = stats.estimate("auc", [[1, 1, 1], [0.2, 0.5, 0.9]], seed=0)
    assert one["auc"] is None and one["auc_ci_low"] is None
    # One positive among 6 items: a resample misses it with probability (5/6)^6 ~ 0.33.
    skipped = {}
    r = stats.estimate("auc", [[1, 0, 0, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]], seed=0, n_resamples=1000,
                       skipped=skipped)
    assert r["auc"] == 1.0
    assert 250 < skipped["auc"] < 420 and "one_class_resamples" not in r  # counted beside the block
    assert r["auc_ci_low"] == 1.0


def test_all_zero_proportion_gets_the_exact_cluster_bound_not_a_zero_width_interval():
    # 64 misses over 8 problems: the bootstrap would say [0, 0]; the bound counts problems, not samples.
    clusters = [f"p{i // 8}" for i in range(64)]
    r = stats.estimate("proportion", [np.zeros(64)], clusters, seed=0, name="pass_rate")
    assert r["pass_rate"] == 0 and r["pass_rate_ci_low"] == 0 and r["n"] == 64 and r["n_clusters"] == 8
    hi = r["pass_rate_ci_high"]
    assert hi == pytest.approx(1 - 0.025 ** (1 / 8), abs=1e-6) and 0.3 < hi < 0.4
    # the bound is tight: at a true rate of hi, 8 independent problems all miss 2.5% of the time
    assert (1 - hi) ** 8 == pytest.approx(0.025, rel=1e-4)
    assert stats.estimate("mean", [np.zeros(64)], clusters, seed=0)["mean_ci_high"] == 0  # what it replaces
    ones = stats.estimate("proportion", [np.ones(64)], clusters, seed=0)
    assert ones["proportion_ci_low"] == pytest.approx(1 - hi, abs=1e-6) and ones["proportion_ci_high"] == 1


def test_all_zero_proportion_bound_covers_rates_it_cannot_rule_out():
    # Simulated 8 problems x 8 samples, each problem solvable with its own rate (mean 0.2):
    # whenever all 64 miss, the reported interval must still cover the true mean rate 0.2
    # unless such a miss is rarer than 2.5% (it is: the bound holds at any correlation).
    rng = np.random.default_rng(0)
    clusters = [f"p{i // 8}" for i in range(64)]
    misses = covered = 0
    for _ in range(4000):
        rate = rng.beta(0.5, 2.0, size=8)  # mean 0.2, strongly clustered
        x = (rng.random(64) < np.repeat(rate, 8)).astype(int)
        if x.sum() == 0:
            misses += 1
            covered += stats.estimate("proportion", [x], clusters, seed=0)["proportion_ci_high"] >= 0.2
    assert misses > 0 and covered == misses


def test_mixed_proportion_is_the_bootstrap_and_non_proportions_are_refused():
    x = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])
    clusters = [f"u{i // 3}" for i in range(12)]
    p = stats.estimate("proportion", [x], clusters, seed=3, name="v")
    m = stats.estimate("mean", [x], clusters, seed=3, name="v")
    assert p == m
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.estimate("proportion", [[0.5, 2.0, 0.0]], seed=0)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError):
        stats.estimate("mse", [[1, 2], [1]], seed=0)
    with pytest.raises(ValueError):
        stats.estimate("mean", [[1, 2]], ["a"], seed=0)


def test_vectorized_resample_auc_equals_sklearn_weighted_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.random(50), 1)  # many ties
    w = stats.resample_weights(rng.integers(0, 12, 50), 50, seed=0, n_resamples=300)
    got = stats.METRICS["auc"](w, y, s)
    for r in range(300):
        keep = w[r] > 0
        if 0 < y[keep].sum() < keep.sum():
            assert got[r] == pytest.approx(roc_auc_score(y[keep], s[keep], sample_weight=w[r][keep]))
        else:
            assert np.isnan(got[r])


def test_mean_diff_is_the_mean_change_and_report_gathers_skipped_resamples():
    x, y = [3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 1.0, 1.0]
    r = stats.estimate("mean_diff", [x, y], ["a", "a", "b", "c"], seed=0)
    assert r["mean_diff"] == pytest.approx(1.75) and r["mean_diff_ci_low"] <= 1.75 <= r["mean_diff_ci_high"]
    skipped, alone = {}, {}
    rep = stats.report({"auc": ("auc", [[1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3]]), "acc": ("mean", [[1, 1, 0, 1]]),
                        "auc2": ("auc", [[1, 0, 0, 0], [0.1, 0.9, 0.2, 0.3]])}, seed=0, skipped=skipped)
    stats.estimate("auc", [[1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3]], seed=0, skipped=alone)
    assert skipped["auc"] == alone["auc"] > 0 and set(skipped) == {"auc", "auc2", "acc"}
    assert skipped["acc"] == 0 and set(rep) == {"auc", "auc_ci_low", "auc_ci_high", "acc", "acc_ci_low",
                                                 "acc_ci_high", "auc2", "auc2_ci_low", "auc2_ci_high", "n", "n_clusters"}


def test_split_estimates_keeps_only_eval_blocks_in_the_metrics():
    from posttrain.core.stats import split_estimates

    metrics = {"heldout": {"n": 4, "n_clusters": 3, "acc": 0.5, "acc_ci_low": 0.2, "acc_ci_high": 0.8},
               "buckets": {"rare": {"n": 2, "acc": 1.0, "acc_ci_low": 1.0, "acc_ci_high": 1.0}, "label": "x"},
               "pairs": {"train": 10, "per_source": {"a": 10}}, "density_aware": True}
    est, facts = split_estimates(metrics)
    assert est == {"heldout": {"n": 4, "acc": 0.5, "acc_ci_low": 0.2, "acc_ci_high": 0.8},
                   "buckets": {"rare": metrics["buckets"]["rare"]}}
    assert facts == {"buckets": {"label": "x"}, "pairs": {"train": 10, "per_source": {"a": 10}},
                     "density_aware": True, "n_clusters": {"heldout": 3}}


# ------------------------------------------------------------------ several runs (seeds) per arm

def test_group_difference_of_one_run_per_arm_is_the_paired_difference():
    rng = np.random.default_rng(0)
    clusters = np.arange(200) // 2
    x, y = (rng.random(200) < 0.5).astype(int), (rng.random(200) < 0.6).astype(int)
    old = stats.difference("proportion", [y], [x], clusters, seed=3, name="d")
    new = stats.group_difference("proportion", [[y]], [[x]], clusters, seed=3, name="d")
    assert {k: new[k] for k in old} == old
    assert (new["d_items_ci_low"], new["d_items_ci_high"]) == (old["d_ci_low"], old["d_ci_high"])
    one = stats.group_estimate("proportion", [[x]], clusters, seed=3, name="p")
    assert {k: one[k] for k in ("p", "p_ci_low", "p_ci_high")} == {
        k: v for k, v in stats.estimate("proportion", [x], clusters, seed=3, name="p").items() if k.startswith("p")}


def test_group_difference_finds_a_planted_difference_across_seeds():
    rng = np.random.default_rng(1)
    item = rng.normal(0, 1, 300)
    old = [[item + rng.normal(0, 0.05) + rng.normal(0, 0.3, 300)] for _ in range(3)]
    new = [[item + 0.3 + rng.normal(0, 0.05) + rng.normal(0, 0.3, 300)] for _ in range(3)]
    d = stats.group_difference("mean", new, old, np.arange(300) // 3, seed=0, name="d")
    assert d["d_ci_low"] > 0 and d["new_runs"] == d["old_runs"] == 3
    assert d["old_sd"] == pytest.approx(np.std([r[0].mean() for r in old], ddof=1), abs=1e-6)


def test_two_level_interval_covers_a_null_with_seed_noise_and_items_only_does_not():
    """Both arms the same setup; each run = shared item effect + its own level (seed noise) +
    item noise, 3 seeds per arm as the density sweep runs them. The two-level 95% interval
    covers 0 in >= 90% of repeats; the items-only one, blind to the seeds, far less often."""
    n, reps = 160, 120
    clusters = np.arange(n) // 2
    covered = {"two": 0, "items": 0}
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        item = rng.normal(0, 1, n)
        runs = [[item + rng.normal(0, 0.1) + rng.normal(0, 0.2, n)] for _ in range(6)]
        d = stats.group_difference("mean", runs[:3], runs[3:], clusters, seed=rep, name="d", n_resamples=2000)
        covered["two"] += d["d_ci_low"] <= 0 <= d["d_ci_high"]
        covered["items"] += d["d_items_ci_low"] <= 0 <= d["d_items_ci_high"]
    assert covered["two"] / reps >= 0.90
    assert covered["items"] / reps < 0.5
