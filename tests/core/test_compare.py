"""`posttrain compare` on hand-written prediction files committed at revisions of a tiny git+dvc repo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from posttrain.core import cli_main, compare
from posttrain.core.io import DataError, write_jsonl

REC = compare.SPECS["rec_evaluate"].path
RM = compare.SPECS["pref_rm"].path


def rec_rows(correct: np.ndarray, labels: np.ndarray) -> list[dict]:
    rows = []
    for k, (c, y) in enumerate(zip(correct, labels)):
        llm = (0.9 if y else 0.1) if c else (0.1 if y else 0.9)
        rows.append({"id": f"{k // 5}:{k}", "user": str(k // 5), "label": int(y), "llm": llm, "baseline": 0.5,
                     "llm_correct": int(c), "baseline_correct": int(y == 1)})
    return rows


def rm_rows(correct: np.ndarray) -> list[dict]:
    return [{"id": f"pair{k:03d}", "prefix_id": f"p{k // 2}", "bucket": ("rare", "middle", "common")[k % 3],
             "chosen_score": float(c), "rejected_score": 0.0, "margin": float(c), "correct": int(c > 0)}
            for k, c in enumerate(correct)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Commits: A; B = A with 30 wrong items made right (+0.15 exactly); C = A with 20 made right
    and 20 made wrong (0 exactly); a branch `other` at B; an experiment `exp-b` (C + B's rec file)."""
    root = tmp_path_factory.mktemp("cmp")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)

    def git(*args):
        sh("git", "-c", "user.name=t", "-c", "user.email=t@t", *args)

    sh("git", "init", "-q", "-b", "main")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    a = (rng.random(200) < 0.5).astype(int)
    wrong, right = np.flatnonzero(a == 0), np.flatnonzero(a == 1)
    b = a.copy()
    b[wrong[:30]] = 1
    c = a.copy()
    c[wrong[:20]], c[right[:20]] = 1, 0
    revs = {}
    for name, corr in (("A", a), ("B", b), ("C", c)):
        write_jsonl(root / REC, rec_rows(corr, labels))
        write_jsonl(root / RM, rm_rows(corr))
        git("add", "-A")
        git("commit", "-qm", name)
        revs[name] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                    check=True).stdout.strip()
        if name == "B":
            git("branch", "other")
    # A `dvc exp` on top of C whose rec predictions are B's.
    write_jsonl(root / REC, rec_rows(b, labels))
    sh(sys.executable, "-m", "dvc", "exp", "save", "-q", "-n", "exp-b")
    git("checkout", "-q", "--", ".")
    return root, revs, {"a": a, "b": b, "c": c}


def rec_row(result, metric, group=None):
    rows = result["stages"]["rec_evaluate"]["rows"]
    return next(r for r in rows if r["metric"] == metric and r["group"] == group)


def test_known_difference_is_exact_and_its_ci_excludes_zero(repo):
    root, revs, _ = repo
    res = compare.compare(revs["A"], "other", repo=str(root), stages=["rec_evaluate"], seed=0)
    r = rec_row(res, "llm_accuracy")
    assert r["diff"] == pytest.approx(30 / 200) and r["b"] - r["a"] == pytest.approx(0.15)
    assert r["diff_ci_low"] > 0 and r["n"] == 200 and r["n_clusters"] == 40
    # The baseline did not change: exactly 0, a zero-width interval.
    base = rec_row(res, "baseline_accuracy")
    assert base["diff"] == 0 and base["diff_ci_low"] == 0 == base["diff_ci_high"]
    assert rec_row(res, "llm_auc")["diff"] > 0


def test_experiment_names_resolve_as_revisions(repo):
    root, revs, _ = repo
    res = compare.compare(revs["A"], "exp-b", repo=str(root), stages=["rec_evaluate"], seed=0)
    assert rec_row(res, "llm_accuracy")["diff"] == pytest.approx(0.15)


def test_no_difference_ci_contains_zero(repo):
    root, revs, _ = repo
    res = compare.compare(revs["A"], revs["C"], repo=str(root), stages=["rec_evaluate"], seed=0)
    r = rec_row(res, "llm_accuracy")
    assert r["diff"] == 0 and r["diff_ci_low"] < 0 < r["diff_ci_high"]


def test_pref_rm_buckets_and_workspace(repo):
    root, revs, arr = repo
    # Workspace: B's rm predictions uncommitted on top of C.
    write_jsonl(root / RM, rm_rows(arr["b"]))
    try:
        res = compare.compare(revs["A"], None, repo=str(root), stages=["pref_rm"], seed=0)
    finally:
        write_jsonl(root / RM, rm_rows(arr["c"]))
    rows = {(r["metric"], r["group"]): r for r in res["stages"]["pref_rm"]["rows"]}
    assert rows[("accuracy", None)]["diff"] == pytest.approx(0.15)
    flipped = np.flatnonzero(arr["b"] != arr["a"])
    for k, bucket in enumerate(("rare", "middle", "common")):
        members = np.arange(200) % 3 == k
        expect = np.isin(np.arange(200), flipped)[members].mean()
        assert rows[("accuracy", f"bucket={bucket}")]["diff"] == pytest.approx(expect, abs=1e-6)
        assert rows[("accuracy", f"bucket={bucket}")]["n"] == members.sum()
    assert res["b"] == "workspace"


def test_cli_markdown_and_json(repo):
    root, revs, _ = repo
    cwd = os.getcwd()
    os.chdir(root)
    try:
        md = CliRunner().invoke(compare.command, [revs["A"], "other", "--stage", "rec_evaluate"],
                                catch_exceptions=False)
        js = CliRunner().invoke(compare.command, [revs["A"], "other", "--stage", "rec_evaluate", "--json"],
                                catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert md.exit_code == 0 and js.exit_code == 0, md.output + js.output
    assert "| rec_evaluate | llm_accuracy | " in md.output and "| 0.1500 | [" in md.output
    data = json.loads(js.output)
    assert data["a"] == revs["A"] and data["b"] == "other"
    assert rec_row(data, "llm_accuracy")["diff"] == pytest.approx(0.15)


def test_missing_file_is_listed_and_bad_records_are_located(repo, tmp_path):
    root, revs, _ = repo
    res = compare.compare(revs["A"], revs["B"], repo=str(root), stages=["rec_evaluate", "reason_filter"], seed=0)
    assert res["missing"] == ["reason_filter"] and "rec_evaluate" in res["stages"]
    a = {"x": {"id": "x", "user": "u", "label": 1, "llm": 0.2, "baseline": 0.5, "baseline_correct": 1}}
    with pytest.raises(DataError, match="llm_correct"):
        compare.compare_rows(compare.SPECS["rec_evaluate"], a, a, seed=0, where=REC)


def test_only_shared_items_are_compared():
    spec = compare.SPECS["pref_rm"]
    a = {r["id"]: r for r in rm_rows(np.array([1, 0, 1, 0]))}
    b = {r["id"]: r for r in rm_rows(np.array([1, 1, 1, 1, 1, 1]))}  # two extra pairs
    rows = compare.compare_rows(spec, a, b, seed=0)
    acc = next(r for r in rows if r["metric"] == "accuracy" and r["group"] is None)
    assert acc["n"] == 4 and acc["diff"] == pytest.approx(0.5)


def test_unknown_revision_is_one_line_error(repo, capsys):
    root, revs, _ = repo
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with pytest.raises(SystemExit) as exc:
            cli_main.main(["compare", revs["A"], "no-such-rev", "--stage", "rec_evaluate"])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "no-such-rev" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_identical_predictions_are_flagged(repo):
    # exp-b kept C's RM predictions (as a `dvc exp run TARGET` that does not reach pref_rm does)
    root, revs, _ = repo
    res = compare.compare(revs["C"], "exp-b", repo=str(root), stages=["pref_rm", "rec_evaluate"], seed=0)
    assert res["stages"]["pref_rm"]["identical"] and not res["stages"]["rec_evaluate"]["identical"]
    md = compare.to_markdown(res)
    assert "pref_rm: identical predictions" in md and "rec_evaluate: identical" not in md


# ------------------------------------------------------------------ arms of several runs (seeds)

def seeded_rm_rows(rng: np.random.Generator, n: int, rate: float) -> list[dict]:
    """RM predictions of one training run: the run's own accuracy level (seed noise) + items."""
    level = rate + rng.normal(0, 0.03)
    return rm_rows((rng.random(n) < level).astype(float))


@pytest.fixture(scope="module")
def seeds_repo(tmp_path_factory):
    """Experiments u-s0..u-s2 (accuracy ~0.5) and d-s0..d-s2 (~0.7), saved with `dvc exp save`."""
    root = tmp_path_factory.mktemp("seeds")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)

    sh("git", "init", "-q", "-b", "main")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    rng = np.random.default_rng(1)
    write_jsonl(root / RM, seeded_rm_rows(rng, 240, 0.5))
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    runs = {}
    for name, rate in [(f"u-s{i}", 0.5) for i in range(3)] + [(f"d-s{i}", 0.7) for i in range(3)]:
        runs[name] = seeded_rm_rows(rng, 240, rate)
        write_jsonl(root / RM, runs[name])
        sh(sys.executable, "-m", "dvc", "exp", "save", "-q", "-n", name)
        sh("git", "checkout", "-q", "--", ".")
    return root, runs


def acc_row(result, group=None):
    return next(r for r in result["stages"]["pref_rm"]["rows"] if r["metric"] == "accuracy" and r["group"] == group)


def test_arms_of_seeds_find_a_planted_difference_with_both_cis_and_the_spread(seeds_repo):
    root, runs = seeds_repo
    res = compare.compare([f"u-s{i}" for i in range(3)], [f"d-s{i}" for i in range(3)], repo=str(root),
                          stages=["pref_rm"], seed=0)
    r = acc_row(res)
    mean = lambda names: np.mean([np.mean([x["correct"] for x in runs[k]]) for k in names])  # noqa: E731
    assert r["diff"] == pytest.approx(mean([f"d-s{i}" for i in range(3)]) - mean([f"u-s{i}" for i in range(3)]),
                                      abs=1e-6)
    assert r["diff_ci_low"] > 0 and r["runs_a"] == r["runs_b"] == 3
    # the seeds' spread widens the interval beyond the items-only one
    assert r["diff_ci_high"] - r["diff_ci_low"] > r["diff_items_ci_high"] - r["diff_items_ci_low"]
    sd = np.std([np.mean([x["correct"] for x in runs[f"u-s{i}"]]) for i in range(3)], ddof=1)
    assert r["a_sd"] == pytest.approx(sd, abs=1e-6)
    md = compare.to_markdown(res)
    assert "95% CI, seeds + items" in md and f"± {sd:.4f} (3)" in md


def test_one_run_per_arm_is_todays_paired_answer():
    spec = compare.SPECS["pref_rm"]
    rng = np.random.default_rng(3)
    a = {r["id"]: r for r in seeded_rm_rows(rng, 120, 0.5)}
    b = {r["id"]: r for r in seeded_rm_rows(rng, 120, 0.6)}
    today = compare.compare_rows(spec, a, b, seed=4)
    groups = compare.compare_group_rows(spec, [a], [b], seed=4)
    for t, g in zip(today, groups, strict=True):
        assert {k: g[k] for k in t} == t
        assert (g["diff_items_ci_low"], g["diff_items_ci_high"]) == (t["diff_ci_low"], t["diff_ci_high"])
        assert g["a_sd"] is None and g["b_sd"] is None


def test_cli_arms_by_list_and_by_glob(seeds_repo):
    root, _ = seeds_repo
    assert compare.expand_revs("u-s*", str(root)) == ["u-s0", "u-s1", "u-s2"]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        by_glob = CliRunner().invoke(cli_main.group, ["compare", "--a", "u-s*", "--b", "d-s0,d-s1,d-s2", "--json"],
                                     catch_exceptions=False)
        none = CliRunner().invoke(cli_main.group, ["compare", "--a", "x-s*", "--b", "d-s0"])
        both = CliRunner().invoke(cli_main.group, ["compare", "u-s0", "--a", "u-s1"])
    finally:
        os.chdir(cwd)
    assert by_glob.exit_code == 0, by_glob.output
    data = json.loads(by_glob.output)
    assert data["a_revs"] == ["u-s0", "u-s1", "u-s2"] and acc_row(data)["runs_b"] == 3
    assert none.exit_code == 2 and "matches no experiment" in none.output
    assert both.exit_code == 2 and "not both" in both.output


def test_an_arm_whose_seeds_changed_nothing_is_flagged(seeds_repo):
    root, _ = seeds_repo
    res = compare.compare(["u-s0", "u-s0"], ["d-s0", "d-s1"], repo=str(root), stages=["pref_rm"], seed=0)
    assert res["stages"]["pref_rm"]["identical_within"] == ["a"]
    assert "every run of arm A has the same predictions" in compare.to_markdown(res)
