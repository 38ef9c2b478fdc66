"""dvc.yaml wiring of the reason stages, checked statically against the code.

Every `${...}` a command interpolates is a tracked param, and every posttrain module a
stage script reaches (transitively) is a dep, so `dvc status` notices the changes
that matter. (Behavioural invalidation is tested elsewhere, on a real DVC copy.)
"""

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STAGES = ["reason_collect", "reason_generate", "reason_filter", "reason_format"]


@pytest.fixture(scope="module")
def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", STAGES)
def test_stage_params_cover_interpolations(dvc_stages, name):
    st = dvc_stages[name]
    used = set(re.findall(r"\$\{([^}]+)\}", st["cmd"]))
    assert used <= set(st["params"]), f"{name}: interpolated but not tracked: {used - set(st['params'])}"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in st["params"]:
        node = params
        for part in key.split("."):
            assert part in node, f"{name}: {key} not in params.yaml"
            node = node[part]


def test_stages_chain_through_the_contract_files(dvc_stages):
    def paths(entries):  # an out is a path, or {path: {cache: false, ...}}
        return {e if isinstance(e, str) else next(iter(e)) for e in entries}

    outs = {name: paths(dvc_stages[name]["outs"]) for name in STAGES}
    assert outs["reason_collect"] == {"data/reason/problems.jsonl"}
    assert outs["reason_generate"] == {"data/reason/samples.jsonl", "data/reason/gen_cache"}
    cache = next(e for e in dvc_stages["reason_generate"]["outs"] if not isinstance(e, str))
    assert cache == {"data/reason/gen_cache": {"persist": True}}  # kept across runs, never a dep
    assert outs["reason_filter"] == {"data/reason/graded.jsonl", "data/reason/filtered.jsonl",
                                     "data/reason/graded_pairs.jsonl", "metrics/reason_filter_predictions.jsonl",
                                     "metrics/reason_filter_run.json"}
    assert {"data/reason/samples.jsonl", "data/reason/problems.jsonl"} <= set(dvc_stages["reason_filter"]["deps"])
    assert "data/models/policy" in dvc_stages["reason_generate"]["deps"]
    assert "data/reason/filtered.jsonl" in dvc_stages["reason_format"]["deps"]
    for name in STAGES:
        assert [next(iter(m)) for m in dvc_stages[name]["metrics"]] == [f"metrics/{name}.json"]
