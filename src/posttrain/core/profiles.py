"""Params profiles: named override files in profiles/ deep-merged onto params.yaml.

params.yaml holds the defaults (2-core CPU, offline). A profile (profiles/tiny.yaml
for tests and CI, profiles/full.yaml for a GPU machine with a hub) overrides some
keys. Two ways to use one:

    python -m posttrain.core.profiles apply tiny      # rewrite params.yaml in place (git diff shows it)
    dvc exp run $(python -m posttrain.core.profiles set-args tiny)   # an experiment, params.yaml untouched

A profile may only override keys that params.yaml has: a typo fails loudly
instead of silently adding an unused key. `extends: OTHER` at a profile's top lays it
over another profile (profiles/scale-smoke.yaml is full with only the sizes shrunk).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from posttrain.core.io import atomic_open


def load_yaml(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


# Mappings whose keys are data, not settings (source name -> cap): a profile that sets
# one replaces it whole (its sources are the run's sources), so it may name new keys.
OPEN_MAPPINGS = {"pref.sources"}


def deep_merge(base: dict, over: dict, where: str = "") -> dict:
    """A copy of `base` with `over` merged in; every key of `over` must exist in `base`
    (except inside OPEN_MAPPINGS)."""
    out = dict(base)
    for key, val in over.items():
        path = f"{where}.{key}" if where else str(key)
        if path in OPEN_MAPPINGS:
            out[key] = val
            continue
        if key not in base:
            raise KeyError(f"profile key {path!r} is not in params.yaml")
        if isinstance(val, dict) and isinstance(base[key], dict):
            out[key] = deep_merge(base[key], val, path)
        else:
            out[key] = val
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    out: dict[str, object] = {}
    for key, val in d.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(val, dict) and val:
            out.update(flatten(val, path))
        else:
            out[path] = val
    return out


def profile_path(name: str, root=".") -> Path:
    p = Path(root) / "profiles" / f"{name}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in (Path(root) / "profiles").glob("*.yaml"))
        raise click.BadParameter(f"no profile {name!r}; known: {', '.join(known)}")
    return p


def _overlay(base: dict, over: dict, where: str = "") -> dict:
    """Two profiles' overrides as one: `over` wins, nested settings merge, OPEN_MAPPINGS replace."""
    out = dict(base)
    for key, val in over.items():
        path = f"{where}.{key}" if where else str(key)
        if path not in OPEN_MAPPINGS and isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _overlay(out[key], val, path)
        else:
            out[key] = val
    return out


def load_profile(name: str, root=".", _seen: tuple[str, ...] = ()) -> dict:
    """A profile's overrides, with its `extends:` chain resolved."""
    if name in _seen:
        raise click.BadParameter(f"profile {name!r} extends itself ({' -> '.join((*_seen, name))})")
    over = load_yaml(profile_path(name, root))
    parent = over.pop("extends", None)
    if parent is None:
        return over
    return _overlay(load_profile(str(parent), root, (*_seen, name)), over)


def apply_profile(name: str, root=".") -> dict:
    """Rewrite root/params.yaml with the profile merged in; returns the merged params."""
    params_file = Path(root) / "params.yaml"
    merged = deep_merge(load_yaml(params_file), load_profile(name, root))
    with atomic_open(params_file) as fh:
        fh.write(f"# params.yaml with profiles/{name}.yaml applied (git checkout params.yaml to undo)\n")
        yaml.safe_dump(merged, fh, sort_keys=False, allow_unicode=True)
    return merged


def hydra_value(val) -> str:
    """A value in Hydra's override grammar (what `dvc exp run -S` parses): bare dict
    keys, quoted strings, null/true/false."""
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, (int, float)):
        return repr(val)
    if isinstance(val, list):
        return "[" + ", ".join(hydra_value(v) for v in val) + "]"
    if isinstance(val, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in val.items()) + "}"
    return json.dumps(str(val))


def set_args(name: str, root=".") -> list[str]:
    """`-S key=value` arguments for `dvc exp run`; `+key` where the profile adds a key."""
    over = load_profile(name, root)
    base = load_yaml(Path(root) / "params.yaml")
    deep_merge(base, over)  # validate keys
    known = flatten(base)
    args: list[str] = []
    for key, val in flatten(over).items():
        args += ["-S", f"{'' if key in known else '+'}{key}={hydra_value(val)}"]
    return args


@click.group()
def cli() -> None:
    """Switch params.yaml between profiles (see profiles/)."""


@cli.command("apply")
@click.argument("name")
def apply_cmd(name: str) -> None:
    apply_profile(name)
    click.echo(f"params.yaml: profile {name} applied", err=True)


@cli.command("set-args")
@click.argument("name")
def set_args_cmd(name: str) -> None:
    import shlex

    click.echo(" ".join(shlex.quote(a) for a in set_args(name)))


if __name__ == "__main__":
    sys.exit(cli())
