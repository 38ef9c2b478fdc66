"""`posttrain sweep`: the queued experiments, and the table and plot of finished ones built from
fake per-run prediction files (no DVC queue)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from posttrain.core import cli_main, sweep


def fake_run(rng, setting, seed, rare_rate, aware=True, ratio=None, ess=None):
    level = rng.normal(0, 0.02)
    preds = {}
    for k in range(300):
        bucket = ("rare", "middle", "common")[k % 3]
        rate = (rare_rate if bucket == "rare" else 0.55) + level
        c = float(rng.random() < rate)
        preds[f"pair{k:03d}"] = {"id": f"pair{k:03d}", "prefix_id": f"p{k // 2}", "bucket": bucket,
                                 "margin": c - 0.4, "correct": int(c)}
    return {"predictions": preds,
            "params": {"density_aware": aware, "power": 7, "cap_quantile": 1.0, "train_seed": seed},
            "density": {"effective_sample_fraction": ess, "rare_vs_common_ratio_q25": ratio, "n": 2173},
            "sampling": {"prompts": {"rare_vs_common_draw_ratio": None if ratio is None else ratio * 1.1}}}


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    runs = {"u": {f"dens-u-s{s}": fake_run(rng, "u", s, 0.55, aware=False) for s in range(3)},
            "p7": {f"dens-p7-s{s}": fake_run(rng, "p7", s, 0.6, ratio=76.0, ess=0.053) for s in range(3)},
            "p11c75": {f"dens-p11c75-s{s}": fake_run(rng, "p11c75", s, 0.8, ratio=75.8, ess=0.49) for s in range(3)}}
    return sweep.summarize(runs, baseline="u", seed=0)


def test_queue_commands_name_each_setting_and_seed_and_fix_the_split():
    cmds = sweep.queue_commands(seeds=range(3))
    assert len(cmds) == 3 * len(sweep.SETTINGS)
    first = cmds[0]
    assert first[:6] == ["dvc", "exp", "run", "--queue", "-n", "dens-u-s0"] and first[-1] == "pref_rm"
    assert "pref.density_aware=false" in first and "pref.rm.train_seed=0" in first
    capped = next(c for c in cmds if "dens-p11c75-s2" in c)
    assert {"pref.density.power=11", "pref.density.cap_quantile=0.75", "pref.rm.train_seed=2"} <= set(capped)
    assert not any("pref.rm.seed" in a for c in cmds for a in c)  # the held-out split never moves
    # every run shares the experiment profile's held-out fraction, so all score the same pairs
    assert all(f"pref.rm.heldout_fraction={sweep.SWEEP_HELDOUT}" in c for c in cmds)


def test_summary_finds_the_planted_rare_gain_with_seed_aware_cis(summary):
    s = summary["settings"]
    assert summary["shared_items"] == 300 and list(s["u"]["runs"]) == ["dens-u-s0", "dens-u-s1", "dens-u-s2"]
    rare = sweep._get(s["p11c75"]["vs_baseline"], "accuracy", "bucket=rare")
    assert rare["diff_ci_low"] > 0 and rare["new_runs"] == rare["old_runs"] == 3
    common = sweep._get(s["p11c75"]["vs_baseline"], "accuracy", "bucket=common")
    assert common["diff_ci_low"] < 0 < common["diff_ci_high"]
    e = sweep._get(s["p7"]["estimates"], "accuracy", None)
    assert e["runs"] == 3 and e["value_sd"] is not None and e["value_ci_low"] < e["value"] < e["value_ci_high"]
    assert s["u"]["expected_ratio"] == 1.0 and s["u"]["ess_fraction"] == 1.0 and s["u"]["vs_baseline"] == []
    assert s["p11c75"]["ess_fraction"] == 0.49 and s["p11c75"]["realized_ratio"] == pytest.approx(75.8 * 1.1)


def test_table_and_plot_are_written_from_the_summary(summary, tmp_path):
    paths = sweep.write_outputs(summary, tmp_path)
    data = json.loads(paths[0].read_text())
    assert set(data["settings"]) == {"u", "p7", "p11c75"}
    md = paths[1].read_text()
    assert "| p11c75 | 3 | 75.8x (83.4x) | 49.0% |" in md and "Difference from `u`" in md
    assert md.index("| u |") < md.index("| p11c75 |") < md.index("| p7 |")  # ordered by strength
    svg = paths[2].read_text()
    # 3 settings x 6 panels, plus one legend dot per setting
    assert svg.startswith("<svg") and svg.count("<circle") == 3 * 6 + 3
    assert svg.count("<title>p7: ") == 6 and "p11c75 (3 seeds, ESS 49%)" in svg
    assert "accuracy, rare prompts" in svg and "margin, common prompts" in svg
    assert sweep.plot_svg(summary) == svg  # same data, same bytes


def test_power_analysis_matches_the_normal_approximation():
    z = 1.959964 + 0.841621
    assert sweep.detectable(240, p=0.5) == pytest.approx(z * np.sqrt(0.5 / 240))
    assert sweep.detectable(240, discordance=0.5) == pytest.approx(sweep.detectable(240, p=0.5))
    assert sweep.detectable(53, discordance=0.2) > sweep.detectable(240, discordance=0.2)
    assert sweep.detectable(240, discordance=0.3, seeds=3, seed_sd=0.02) > sweep.detectable(240, discordance=0.3)
    lines = sweep.power_lines({"all": 240, "rare": 53})
    assert lines[-2].startswith("| all | 240 | ") and len(lines) == 6


def test_queue_dry_run_prints_commands_and_power(tmp_path):
    m = tmp_path / "pref_rm.json"
    m.write_text(json.dumps({"heldout": {"n": 240}, "heldout_buckets": {"rare": {"n": 53}, "common": {"n": 58}}}))
    r = CliRunner().invoke(cli_main.group, ["sweep", "queue", "--dry-run", "--seeds", "2", "--settings", "u,p7",
                                            "--metrics", str(m)])
    assert r.exit_code == 0, r.output
    assert "dvc exp run --queue -n dens-p7-s1 " in r.output and "| rare | 53 |" in r.output
    assert "queued" not in r.output
    bad = CliRunner().invoke(cli_main.group, ["sweep", "queue", "--dry-run", "--settings", "p99"])
    assert bad.exit_code == 2 and "unknown setting" in bad.output


def test_finished_experiments_are_grouped_by_setting_in_seed_order(monkeypatch):
    monkeypatch.setattr(sweep.compare, "rev_names", lambda repo=None: [
        "dens-p7-s1", "dens-p7-s0", "dens-u-s0", "main", "other-u-s0", "dens-p11c75-s2"])
    assert sweep.find_runs() == {"p7": ["dens-p7-s0", "dens-p7-s1"], "u": ["dens-u-s0"],
                                 "p11c75": ["dens-p11c75-s2"]}
