"""Stage code deps are derived from imports (posttrain.core.deps), never hand-kept.

The committed dvc.yaml must equal what `make deps` would write, so a stage that imports
a module its deps do not cover fails here before it can skip a needed rerun.
"""

from pathlib import Path

import yaml

from posttrain.core import deps

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_matches_import_closures():
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    new, changed = deps.rewrite(text, REPO)
    assert not changed, f"stale code deps for {changed}: run `make deps`"
    assert new == text


def test_every_stage_covers_its_script_and_each_imported_module():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        listed = set(st["deps"])
        script = f"stages/{name}.py"
        assert script in listed and script in st["cmd"], name
        for f in deps.closure(REPO / script, REPO / "src"):
            assert str(f.relative_to(REPO)) in listed, f"{name}: imports {f} but does not depend on it"


def test_a_dropped_dep_is_detected_and_restored():
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    broken = text.replace("      - src/posttrain/core/assets.py\n", "", 1)
    assert broken != text
    fixed, changed = deps.rewrite(broken, REPO)
    assert changed and fixed == text


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    pkg = tmp_path / "src" / "posttrain"
    for rel, body in {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/io.py": "",
        "core/assets.py": "from .io import x\nREQUIREMENTS_FILE = \"requirements-assets.txt\"\n",
        "rec/__init__.py": "",
        "rec/a.py": "def f():\n    from posttrain.core import assets\n",
        "rec/unused.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(body)
    script = tmp_path / "stages" / "s.py"
    script.parent.mkdir()
    script.write_text("import click\nfrom posttrain.rec.a import f\n")
    got = {str(p.relative_to(tmp_path)) for p in deps.closure(script, tmp_path / "src")}
    assert got == {"src/posttrain/__init__.py", "src/posttrain/rec/__init__.py", "src/posttrain/rec/a.py",
                   "src/posttrain/core/__init__.py", "src/posttrain/core/assets.py", "src/posttrain/core/io.py"}
    cmd = "python -m posttrain.core.io stages/s.py --x 1"
    assert deps.stage_code_deps(cmd, tmp_path)[-1] == "requirements-assets.txt"


def test_a_wrapped_engine_pins_its_stage_through_its_requirements_file():
    """posttrain.core.llamacpp sets REQUIREMENTS_FILE: reason_generate (which may run it) depends on
    the pinned engine, so a new llama-cpp-python version reruns it; GRPO (transformers only) does not."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert deps.requirements_file(REPO / "src/posttrain/core/llamacpp.py") == "requirements-llamacpp.txt"
    assert "requirements-llamacpp.txt" in stages["reason_generate"]["deps"]
    assert "requirements-llamacpp.txt" not in stages["pref_grpo"]["deps"]
    assert (REPO / "requirements-llamacpp.txt").read_text().count("llama-cpp-python==") == 1
