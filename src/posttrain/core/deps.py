"""Stage code deps derived from imports, so dvc.yaml never lists them by hand.

A stage's code deps are its script plus every file of `src/posttrain` that running it
executes: the import closure of the script (and of a `python -m posttrain...` launcher in
its command), package `__init__.py` files included. A module that sets a top-level
`REQUIREMENTS_FILE = "..."` names the pinned requirements of what it wraps, and a stage that
reaches it depends on that file too: `posttrain.core.assets` -> `requirements-assets.txt`
(the asset packages are the files it reads), `posttrain.core.llamacpp` ->
`requirements-llamacpp.txt` (a new engine version can change samples).

    python -m posttrain.core.deps --write   # rewrite the derived deps in dvc.yaml (`make deps`)
    python -m posttrain.core.deps --check   # exit 1 and name the stages whose deps differ

Only the `src/posttrain/...` and `requirements-*.txt` lines of each stage's `deps:`
are managed; data deps and comments stay as written.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import click

PKG = "posttrain"


def _module_file(src: Path, dotted: str) -> Path | None:
    base = src.joinpath(*dotted.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, dotted: str | None) -> set[str]:
    """Dotted posttrain modules that `path` imports anywhere (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = None
    if dotted:
        pkg = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if pkg is None:
                    continue
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PKG:
                continue
            found.add(base)
            # `from posttrain.x import y` may name a submodule y
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def closure(script: Path, src: Path, extra_modules=()) -> set[Path]:
    """Files of `src` (the folder holding `posttrain/`) that importing `script` executes."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(_imports(script, None)) + list(extra_modules)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
            todo.append(".".join(parts[:i]))
        f = _module_file(src, mod)
        if f is None:
            continue  # an attribute named in `from x import attr`, not a module
        files.add(f)
        todo.extend(_imports(f, mod))
    return files


def stage_code_deps(cmd: str, root: Path) -> list[str]:
    """Sorted code deps (relative to `root`) of a dvc.yaml stage command."""
    src = root / "src"
    scripts = re.findall(r"(stages/[\w/]+\.py)", cmd)
    launchers = re.findall(r"-m\s+(posttrain[\w.]*)", cmd)
    files: set[Path] = set()
    for s in scripts:
        files |= closure(root / s, src)
    if launchers:
        files |= closure(src / PKG / "__init__.py", src, launchers)
    deps = sorted(str(f.relative_to(root)) for f in files)
    return deps + sorted({r for f in files if (r := requirements_file(f))})


def requirements_file(path: Path) -> str | None:
    """The module's top-level `REQUIREMENTS_FILE = "..."`, if it sets one."""
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "REQUIREMENTS_FILE"
                                                for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
            raise ValueError(f"{path}: REQUIREMENTS_FILE must be a string literal")
    return None


def _managed(line: str) -> bool:
    item = line.strip()[2:].strip() if line.strip().startswith("- ") else ""
    return ((item.startswith(f"src/{PKG}/") and item.endswith(".py"))
            or re.fullmatch(r"requirements-[\w-]+\.txt", item) is not None)


def rewrite(text: str, root: Path) -> tuple[str, list[str]]:
    """dvc.yaml text with every stage's managed deps replaced; (new text, changed stages)."""
    import yaml

    stages = yaml.safe_load(text)["stages"]
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    changed: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w[\w-]*):\s*$", line)
        if m:
            stage = m.group(1)
        if stage in stages and re.match(r"^    deps:\s*$", line):
            out.append(line)
            i += 1
            block = []
            while i < len(lines) and (lines[i].startswith("      ") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            kept = [b for b in block if not _managed(b)]
            want = stage_code_deps(stages[stage]["cmd"], root)
            have = [b.strip()[2:].strip() for b in block if _managed(b)]
            if have != want:
                changed.append(stage)
            # script first, then derived code deps, then data deps as written
            script = [b for b in kept if b.strip().startswith("- stages/")]
            rest = [b for b in kept if b not in script]
            out.extend(script + [f"      - {d}\n" for d in want] + rest)
            continue
        out.append(line)
        i += 1
    return "".join(out), changed


@click.command()
@click.option("--write", "mode", flag_value="write", help="rewrite dvc.yaml in place")
@click.option("--check", "mode", flag_value="check", default=True, help="exit 1 if dvc.yaml is stale")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="project root (holds dvc.yaml and src/)")
def main(mode: str, root: Path) -> None:
    path = root / "dvc.yaml"
    new, changed = rewrite(path.read_text(encoding="utf-8"), root)
    if mode == "write":
        if changed:
            path.write_text(new, encoding="utf-8")
        click.echo(f"dvc.yaml: derived deps updated for {len(changed)} stage(s) {' '.join(changed)}".rstrip(),
                   err=True)
        return
    if changed:
        click.echo(f"dvc.yaml code deps are stale for: {', '.join(changed)}; run `make deps`", err=True)
        sys.exit(1)
    click.echo("dvc.yaml code deps match the import closures", err=True)


if __name__ == "__main__":
    main()
