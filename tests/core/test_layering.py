"""core is the floor: no module under posttrain.core imports a pipeline package (rec, pref,
reason), not even lazily inside a function, so each pipeline builds on core alone."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "posttrain" / "core"
PIPELINES = ("posttrain.rec", "posttrain.pref", "posttrain.reason")


def upward_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names
                      if any(n == p or n.startswith(p + ".") for p in PIPELINES)]
    return found


def test_no_core_module_imports_a_pipeline():
    assert upward_imports(CORE) == []


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from posttrain.pref.common import load_split\n")
    assert upward_imports(tmp_path) == ["m.py:2 imports posttrain.pref.common"]
