"""The DVC workflow as a tested guarantee, on the tiny profile.

One tiny end-to-end `dvc repro` in a temporary copy of the project, then:
a second repro does nothing; each headline param makes exactly its stage and
everything downstream stale; data stages are byte-identical on rerun; outputs
survive push/pull; plots draw offline; and the training stages run under
`accelerate launch` with 2 CPU processes.
"""

from __future__ import annotations

import pytest
import yaml

from dvc_project import Project

REC = {"rec_prepare", "rec_tokenize", "rec_finetune", "rec_evaluate"}
PREF_TRAIN = {"pref_rm", "pref_dpo", "pref_grpo"}
REASON = {"reason_collect", "reason_generate", "reason_filter", "reason_format", "reason_verifier"}

# The contract between params.yaml and dvc.yaml, one row per headline param:
#   param: (new value,
#           stages that read it            -> what `dvc status` must report,
#           those plus everything downstream -> what `dvc repro --dry --force-downstream` runs)
# Nothing else may be touched: no other pipeline's stage, no upstream stage.
INVALIDATION = {
    "models.policy": ("tiny-random:smollm2-135m-instruct", {"base_models"},
                      {"base_models", "rec_tokenize", "rec_finetune", "rec_evaluate", "pref_rm", "pref_dpo",
                       "pref_grpo"} | REASON - {"reason_collect"}),
    "rec.history_len": (6, {"rec_prepare"}, REC),
    "rec.cutoff_len": (300, {"rec_tokenize", "rec_evaluate"}, REC - {"rec_prepare"}),
    "rec.finetune.lora_r": (4, {"rec_finetune"}, {"rec_finetune", "rec_evaluate"}),
    "pref.sources.hh-rlhf-harmless": (20, {"pref_download"},
                           {"pref_download", "pref_prefixes", "pref_embed", "pref_density"} | PREF_TRAIN),
    "pref.embed.text": ("full", {"pref_embed"}, {"pref_embed", "pref_density"} | PREF_TRAIN),
    "pref.k": (4, {"pref_density"}, {"pref_density"} | PREF_TRAIN),
    "pref.density_aware": (False, {"pref_rm", "pref_dpo"}, PREF_TRAIN),
    "reason.sample": (3, {"reason_collect"}, REASON),
    "reason.temperature": (0.5, {"reason_generate"}, REASON - {"reason_collect"}),
    "reason.timeout_s": (3, {"reason_filter"}, {"reason_filter", "reason_format", "reason_verifier"}),
    "reason.mix_math": (2, {"reason_format"}, {"reason_format"}),
    "reason.verifier.max_steps": (3, {"reason_verifier"}, {"reason_verifier"}),
    # every trainer, and rec_evaluate (it scores in the adapter's precision)
    "train.precision": ("fp32", {"rec_finetune", "rec_evaluate", "pref_rm", "pref_dpo", "pref_grpo",
                                 "reason_verifier"},
                        {"rec_finetune", "rec_evaluate", "reason_verifier"} | PREF_TRAIN),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = Project.copy_of_repo(tmp_path_factory.mktemp("project"))
    proj.dvc("repro")
    return proj


def test_second_repro_does_nothing(project):
    out = project.dvc("repro")
    assert "Data and pipelines are up to date" in out
    assert project.stale_stages() == set()


EVAL_STAGES = ("rec_evaluate", "pref_rm", "pref_dpo", "pref_grpo", "reason_filter", "reason_verifier")


def _unestimated(node: dict, path: str = "") -> list[str]:
    """Keys of an eval metrics file that are not an estimate with both CI bounds or its n
    inside an eval block (a dict with "n"): numbers, flags and strings outside any
    block, other keys and nested dicts inside one. Dicts of blocks (breakdowns) are walked."""
    bad = []
    for k, v in node.items():
        if "n" in node:
            if k != "n" and not k.endswith(("_ci_low", "_ci_high")) \
                    and (isinstance(v, (dict, list, bool, str)) or not {f"{k}_ci_low", f"{k}_ci_high"} <= set(node)):
                bad.append(f"{path}{k}")
        elif isinstance(v, dict):
            bad += _unestimated(v, f"{path}{k}.")
        else:
            bad.append(f"{path}{k}")
    return bad


def test_eval_metrics_hold_only_estimates_with_their_ci(project):
    """Every number an eval stage's metrics file holds is an n or an estimate with its 95% CI;
    the run's counts, flags, training facts and each block's n_clusters are in its `_run.json`."""
    import json

    for stage in EVAL_STAGES:
        m = json.loads((project.root / "metrics" / f"{stage}.json").read_text(encoding="utf-8"))
        assert _unestimated(m) == [], stage
        facts = json.loads((project.root / "metrics" / f"{stage}_run.json").read_text(encoding="utf-8"))
        assert facts and not set(facts) & {k for k, v in m.items() if "n" in v}, stage
        assert facts["n_clusters"], stage  # the resampled clusters of each block, beside it
    assert _unestimated({"x": {"n": 3, "acc": 0.5, "acc_ci_low": 0.1}}) == ["x.acc"]  # the check can fail
    assert _unestimated({"x": {"n": 3, "skipped": 2, "by": {"a": {"n": 1}}}}) == ["x.skipped", "x.by"]
    assert _unestimated({"x": {"n": 3, "n_clusters": 2}}) == ["x.n_clusters"]
    assert _unestimated({"counts": {"rows": 3}, "flag": True, "by": {"a": {"n": 1}}}) == ["counts.rows", "flag"]


def _set_param(text: str, dotted: str, value) -> str:
    params = yaml.safe_load(text)
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    assert leaf in node, dotted
    assert node[leaf] != value, f"{dotted} already {value!r}"
    node[leaf] = value
    return yaml.safe_dump(params, sort_keys=False)


@pytest.mark.parametrize("param", list(INVALIDATION))
def test_param_invalidates_exactly_its_stages(project, param):
    value, readers, with_downstream = INVALIDATION[param]
    path = project.root / "params.yaml"
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(_set_param(original, param, value), encoding="utf-8")
        assert project.stale_stages() == readers
        assert project.would_run() == with_downstream
    finally:
        path.write_text(original, encoding="utf-8")
    assert project.stale_stages() == set()


def test_killed_stage_leaves_nothing_finished(tmp_path_factory):
    """SIGKILL mid-write: no output DVC would take as finished; the next repro redoes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proj = Project.copy_of_repo(tmp_path_factory.mktemp("crash"))
    out = proj.root / "data/models/policy"
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "base_models"], cwd=proj.root, env=proj.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    # Kill the moment the stage starts writing its temp folder (posttrain.core.io.atomic_path).
    while time.monotonic() < deadline and proc.poll() is None:
        if out.parent.is_dir() and any(p.name.startswith(".policy.") for p in out.parent.iterdir()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "stage finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "config.json").exists()
    assert "base_models" in proj.stale_stages()
    proj.dvc("repro", "base_models")
    assert (out / "model.safetensors").is_file()
    assert "base_models" not in proj.stale_stages()


# Stages whose outputs must be byte-identical for the same inputs and params.
DATA_STAGES = ["rec_prepare", "rec_tokenize", "pref_download", "pref_prefixes", "pref_embed", "pref_density",
               "reason_collect", "reason_generate", "reason_filter", "reason_format"]


def _out_hashes(lock: dict, stage: str) -> dict[str, str]:
    # metrics may say how the run went (e.g. embedding cache hits); the data may not differ
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"] if not o["path"].startswith("metrics/")}


def test_data_stages_are_byte_identical_on_rerun(project):
    before = project.lock()
    project.dvc("repro", "--force", "--single-item", *DATA_STAGES)
    after = project.lock()
    for stage in DATA_STAGES:
        assert _out_hashes(after, stage) == _out_hashes(before, stage), stage
    assert project.stale_stages() == set()


def test_push_then_pull_into_a_fresh_clone(project, tmp_path):
    remote = tmp_path / "remote"
    project.dvc("remote", "add", "--local", "-f", "storage", str(remote))
    project.dvc("push", "-r", "storage")
    project.git("add", "-A")
    project.git("commit", "-qm", "pipeline outputs: dvc.lock and metrics")
    clone = Project(tmp_path / "clone")
    project.run("git", "clone", "-q", str(project.root), str(clone.root))
    assert not (clone.root / "data/rec/train.json").exists()
    clone.dvc("remote", "add", "--local", "-f", "storage", str(remote))
    clone.dvc("pull", "-r", "storage")
    assert (clone.root / "data/rec/train.json").read_bytes() == (project.root / "data/rec/train.json").read_bytes()
    assert clone.stale_stages() == set()


def test_plots_render_offline(project, tmp_path):
    """`posttrain.core.plots show` writes HTML with Vega inlined; headless Chromium with no
    network draws every plot (one canvas per plot)."""
    import re
    import shutil
    import subprocess
    import sys

    from dvc_project import REPO

    if shutil.which("npm") is None:
        pytest.skip("npm is needed once to fetch vega")
    out = tmp_path / "plots"
    project.run(sys.executable, "-m", "posttrain.core.plots", "show", "--out", str(out),
                "--js-dir", str(REPO / ".venv" / "plots-js"))
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script src=" not in html and "vegaEmbed" in html
    n_plots = len(re.findall(r"<div id ?= ?\"[^\"]+\"", html))
    assert n_plots >= 8  # loss curves, ROC, histograms, ... of the three pipelines
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=15000", "--dump-dom",
         (out / "index.html").as_uri()], capture_output=True, text=True, timeout=180).stdout
    assert dom.count("<canvas") == n_plots, "some plots did not draw"


# Training stage -> its params group, which holds `num_processes`.
TRAINING = {"rec_finetune": "rec.finetune", "pref_rm": "pref.rm", "pref_dpo": "pref.dpo",
            "pref_grpo": "pref.grpo", "reason_verifier": "reason.verifier"}


def test_training_stages_run_under_two_processes(project, tmp_path):
    """`num_processes: 2` runs every training stage under `accelerate launch` (gloo DDP on
    CPU) through dvc.yaml's own commands; rank 0 alone writes outputs and metrics.
    Runs last: it restores the 1-process outputs from the DVC cache afterwards."""
    import json
    import shutil

    saved = {name: (project.root / name).read_text(encoding="utf-8") for name in ("params.yaml", "dvc.lock")}
    # metrics/ and dvclive/ are cache: false outs (git's, not DVC's): keep copies to restore
    for d in ("metrics", "dvclive"):
        shutil.copytree(project.root / d, tmp_path / d)
    text = saved["params.yaml"]
    for group in TRAINING.values():
        text = _set_param(text, f"{group}.num_processes", 2)
    try:
        (project.root / "params.yaml").write_text(text, encoding="utf-8")
        assert project.stale_stages() == set(TRAINING)
        project.dvc("repro")
        assert project.stale_stages() == set()

        def metrics(name: str) -> dict:
            return json.loads((project.root / "metrics" / f"{name}.json").read_text(encoding="utf-8"))

        params = yaml.safe_load(text)
        assert metrics("rec_finetune")["world_size"] == 2
        assert metrics("reason_verifier_run")["train"]["world_size"] == 2
        assert metrics("pref_grpo_run")["train"]["world_size"] == 2
        # The weighted sampler's draws of both ranks add up: one draw of steps x batch x 2 pairs.
        rm, dpo = metrics("pref_rm_run"), metrics("pref_dpo_run")
        assert rm["train"]["world_size"] == dpo["train"]["world_size"] == 2
        p = params["pref"]
        assert json.loads((project.root / "data/pref/rm/sampling.json").read_text())["draws"] == rm["train"]["steps"] * p["rm"]["batch_size"] * p["rm"]["grad_accum"] * 2
        assert dpo["train"]["draws"] == dpo["train"]["steps"] * p["dpo"]["batch_size"] * p["dpo"]["grad_accum"] * 2
        for out in ("data/rec/adapter/adapter_config.json", "data/pref/rm/split.json",
                    "data/pref/dpo_adapter/adapter_config.json", "data/pref/grpo_adapter/eval_completions.jsonl",
                    "data/reason/verifier/config.json", "data/reason/verifier_scores.jsonl"):
            assert (project.root / out).is_file(), out
    finally:
        for name, content in saved.items():
            (project.root / name).write_text(content, encoding="utf-8")
        for d in ("metrics", "dvclive"):
            shutil.rmtree(project.root / d)
            shutil.copytree(tmp_path / d, project.root / d)
        project.dvc("checkout", "--force")
    assert project.stale_stages() == set()
