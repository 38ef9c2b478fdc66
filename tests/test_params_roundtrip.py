"""params.yaml survives DVC's own writer: `dvc exp run -S KEY=VALUE` rewrites params.yaml
through `dvc.utils.hydra.apply_overrides` (ruamel round-trip + merge), and that must change
exactly the one line of KEY, keeping every comment, list style and quoting around it."""

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def set_with_dvc(path: Path, override: str) -> list[str]:
    """The diff lines (-/+) that DVC's writer makes for one override."""
    from dvc.utils.hydra import apply_overrides

    before = path.read_text(encoding="utf-8").splitlines()
    apply_overrides(path, [override])
    after = path.read_text(encoding="utf-8").splitlines()
    return [d for d in difflib.unified_diff(before, after, lineterm="", n=0)
            if d[:1] in "+-" and not d.startswith(("+++", "---"))]


@pytest.mark.parametrize("override, line", [
    ("pref.grpo.seed=1", "    seed: 1"),
    ("rec.seed=7", "  seed: 7"),
    ("reason.mix_math=3", "  mix_math: 3"),
    ("reason.verifier.max_steps=5", "    max_steps: 5"),
    ("pref.density_aware=false", "  density_aware: false"),
])
def test_one_set_param_changes_exactly_its_line(tmp_path, override, line):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    diff = set_with_dvc(params, override)
    # the changed line keeps its comment (its column may shift with the value's width)
    assert len(diff) == 2 and diff[0].startswith("-") and diff[1].split("#")[0].rstrip() == "+" + line, diff
    assert ("#" in diff[0]) == ("#" in diff[1]), diff
    key, value = override.split("=")
    node = yaml.safe_load(params.read_text(encoding="utf-8"))
    for part in key.split("."):
        node = node[part]
    assert str(node).lower() == value.lower()


def test_no_value_needs_quoting():
    """A quoted value is one DVC's writer may write back unquoted (it did: "1:1" became 1:1,
    which YAML 1.1 reads as 61)."""
    code = [line.split("#")[0] for line in (REPO / "params.yaml").read_text(encoding="utf-8").splitlines()]
    quoted = [c for c in code if ":" in c and c.split(":", 1)[1].strip()[:1] in ("'", '"')]
    assert quoted == []
