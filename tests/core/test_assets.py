import sys
from pathlib import Path

import pytest

from posttrain.core import assets

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_every_asset_resolves_to_an_existing_path(name):
    before = set(sys.modules)
    p = assets.asset_path(name)
    assert p.exists()
    # located, not imported
    assert assets.ASSETS[name].package not in set(sys.modules) - before


def test_known_files():
    assert assets.asset_path("smollm2-135m-instruct").suffix == ".gguf"
    assert (assets.asset_path("all-minilm-l6-v2") / "modules.json").is_file()
    assert (assets.asset_path("ml-100k") / "ml-100k.inter").is_file()
    assert sorted(p.name for p in assets.asset_path("aime2025").glob("*.jsonl")) == [
        "aime2025-I.jsonl", "aime2025-II.jsonl"]


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "ml-100k", assets.Asset(
        "ml-100k", "no_such_pkg_xyz", "recbole==1.2.1", "dataset_example/ml-100k", "MovieLens"))
    with pytest.raises(assets.AssetMissing) as e:
        assets.asset_path("ml-100k")
    msg = str(e.value)
    assert "recbole==1.2.1" in msg and "--no-deps" in msg and "requirements-assets.txt" in msg


def test_unknown_name_is_path_or_hub_id(tmp_path):
    assert assets.resolve(str(tmp_path)) == tmp_path
    assert assets.resolve("Anthropic/hh-rlhf") == "Anthropic/hh-rlhf"
    with pytest.raises(KeyError, match="known assets"):
        assets.asset_path("nope")


def test_pins_match_requirements_file():
    pinned = {line.strip() for line in (REPO / assets.REQUIREMENTS_FILE).read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert {a.requirement for a in assets.ASSETS.values() if a.requirement} == pinned


def test_vendored_hh_rlhf_ships_with_its_license():
    path = assets.asset_path("hh-rlhf-harmless")
    assert path.stat().st_size > 500_000 and assets.ASSETS["hh-rlhf-harmless"].requirement is None
    assert "MIT License" in (path.parent / "LICENSE").read_text()
