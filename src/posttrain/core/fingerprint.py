"""Content identity of a model, for the caches that must never serve a changed model's
outputs (sentence embeddings, sampled completions)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from posttrain.core import assets


@lru_cache(maxsize=8)
def model_key(ref: str) -> str:
    """The reference plus, when it resolves to a local folder or file, the bytes of
    every file in it (24 hex digits of sha256)."""
    h = hashlib.sha256(f"ref={ref}\n".encode())
    path = assets.resolve(ref)
    if isinstance(path, Path):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\n".encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:24]
