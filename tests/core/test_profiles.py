import shutil
from pathlib import Path

import pytest
import yaml

from posttrain.core import profiles

REPO = Path(__file__).resolve().parents[2]


def test_deep_merge_overrides_nested_and_rejects_unknown_keys():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert profiles.deep_merge(base, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": "x"}
    assert base["a"]["c"] == [1, 2]  # input untouched
    with pytest.raises(KeyError, match="a.typo"):
        profiles.deep_merge(base, {"a": {"typo": 2}})


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")))
def test_every_profile_only_overrides_existing_params(name):
    merged = profiles.deep_merge(profiles.load_yaml(REPO / "params.yaml"), profiles.load_profile(name, REPO))
    assert merged


def test_extends_lays_a_profile_over_another(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.yaml").write_text(
        "models: {policy: big}\nrec: {finetune: {max_steps: 100, batch_size: 8}}\npref: {sources: {a: 1, b: 2}}\n")
    (tmp_path / "profiles" / "small.yaml").write_text(
        "extends: big\nrec: {finetune: {max_steps: 2}}\npref: {sources: {a: 5}}\n")
    over = profiles.load_profile("small", tmp_path)
    # nested settings merge; pref.sources (its keys are data) is replaced whole
    assert over == {"models": {"policy": "big"}, "rec": {"finetune": {"max_steps": 2, "batch_size": 8}},
                    "pref": {"sources": {"a": 5}}}
    (tmp_path / "profiles" / "big.yaml").write_text("extends: small\n")
    with pytest.raises(Exception, match="extends itself"):
        profiles.load_profile("small", tmp_path)


def test_apply_and_set_args(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    merged = profiles.apply_profile("tiny", tmp_path)
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == merged
    assert merged["models"]["policy"] == "tiny-random"
    args = profiles.set_args("tiny", tmp_path)
    assert args[0::2] == ["-S"] * (len(args) // 2)
    assert 'models.policy="tiny-random"' in args[1::2]


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_set_args_parse_as_dvc_exp_run_overrides(name):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    args = profiles.set_args(name, REPO)
    over = profiles.flatten(profiles.load_yaml(REPO / "profiles" / f"{name}.yaml"))
    parsed = {}
    for arg in args[1::2]:
        o = parser.parse_override(arg)
        parsed[o.key_or_group] = o.value()
    assert parsed == over  # every value survives the round trip through Hydra's grammar
