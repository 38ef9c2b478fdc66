"""The held-out pair report shared by the reward model and DPO."""

import json

import numpy as np

from posttrain.pref.heldout import pair_report, pair_rows

PAIRS = [{"id": f"x{i}", "prefix_id": f"p{i // 2}", "src": "a" if i < 4 else "b", "density": 1.0}
         for i in range(8)]


def test_report_has_cis_and_empty_buckets_are_null():
    chosen, rejected = np.array([1, 1, 1, 0, 1, 1, 0, 1.0]), np.zeros(8)
    blocks = pair_report(chosen, rejected, PAIRS, (0.5, 2.0), seed=0)
    rep = blocks["heldout"]
    assert rep["n"] == 8 and rep["n_clusters"] == 4 and rep["accuracy"] == 0.75
    assert rep["accuracy_ci_low"] <= 0.75 <= rep["accuracy_ci_high"]
    assert rep["accuracy_ci_low"] < rep["accuracy_ci_high"]
    assert blocks["heldout_per_source"]["a"]["accuracy"] == 0.75 and blocks["heldout_per_source"]["b"]["n"] == 4
    assert blocks["heldout_buckets"]["middle"]["n"] == 8
    assert blocks["heldout_buckets"]["rare"] == {"accuracy": None, "accuracy_ci_low": None, "accuracy_ci_high": None,
                                                 "margin": None, "margin_ci_low": None, "margin_ci_high": None,
                                                 "n": 0, "n_clusters": 0}
    json.dumps(blocks, allow_nan=False)  # a NaN here once crashed pref_rm after saving the model


def test_prefixed_names_and_extra_columns_get_their_own_ci():
    flags = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    blocks = pair_report(np.ones(8), np.zeros(8), PAIRS, (0.5, 2.0), seed=0, prefix="reward_",
                         extra={"identical_fraction": flags})
    rep = blocks["heldout"]
    assert rep["reward_accuracy"] == 1.0 and "accuracy" not in rep
    assert rep["identical_fraction"] == 0.25
    # all flags sit in one of 4 prefixes: resamples without it give 0, with it twice give 0.5
    assert rep["identical_fraction_ci_low"] == 0.0 and rep["identical_fraction_ci_high"] >= 0.5
    assert "identical_fraction" not in blocks["heldout_per_source"]["a"]


def test_rows_are_sorted_and_named_by_score_kind():
    rows = pair_rows([0.2, 0.9], [0.5, 0.1], [PAIRS[5], PAIRS[1]], (0.5, 2.0), score="reward")
    assert [r["id"] for r in rows] == ["x1", "x5"]
    assert rows[0]["chosen_reward"] == 0.9 and rows[0]["correct"] == 1
    assert rows[1]["margin"] == -0.3 and rows[1]["correct"] == 0
