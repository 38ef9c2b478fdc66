"""Sentence embeddings of prefixes, with a content-addressed cache.

The cache maps (model, text) -> vector, so a rerun after appending pairs embeds
only prefixes it has not seen. Layout under `cache_dir`:

    <model_key>/<shard>.npy    float32 [n, dim] vectors
    <model_key>/<shard>.keys   n lines: sha256(text) hex, same order

`model_key` is a hash of the model reference and, for a local folder, of every
file's bytes (a changed model never reuses old vectors). Each run that embeds
something appends one shard named by the hash of its keys; the `.keys` file is
written last, so a killed run leaves no readable half-shard. In the DVC
pipeline the cache is `data/pref/embed_cache/`, a `persist: true` out of
`pref_embed`: DVC does not delete it before a run, and keeps it in its cache so
`dvc push` / `dvc pull` carry it to a fresh clone (which then reports the stage
up to date); deleting it only costs a full re-embed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posttrain.core.io import atomic_path
from posttrain.core.fingerprint import model_key
from posttrain.core.settings import param
from posttrain.pref.pairs import first_user_content

log = logging.getLogger(__name__)

TEXT_MODES = ("first_user", "full")


def prefix_text(prefix: dict, mode: str) -> str:
    """The text embedded for a prefix: its first user message, or the whole
    conversation as `role: content` blocks (`full`)."""
    msgs = prefix["messages"]
    if mode == "first_user":
        return first_user_content(msgs)
    if mode == "full":
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)
    raise ValueError(f"unknown text mode {mode!r}; use one of {TEXT_MODES}")


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_model(ref: str):
    from sentence_transformers import SentenceTransformer

    from posttrain.core.assets import resolve

    return SentenceTransformer(str(resolve(ref)), device="cpu")


def _dimension(model) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(model, name, None)
        if fn is not None and fn() is not None:
            return int(fn())
    return int(model.encode(["x"], convert_to_numpy=True).shape[1])


class EmbeddingCache:
    """(model_key, text) -> float32 vector, stored as append-only shards."""

    def __init__(self, cache_dir, model_key: str):
        self.dir = Path(cache_dir) / model_key
        self._vectors: dict[str, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for keys_file in sorted(self.dir.glob("*.keys")):
            keys = keys_file.read_text(encoding="ascii").split()
            try:
                vecs = np.load(keys_file.with_suffix(".npy"))
            except (OSError, ValueError):
                log.warning("embed cache: unreadable shard %s ignored", keys_file)
                continue
            if vecs.ndim != 2 or len(vecs) != len(keys):
                log.warning("embed cache: shard %s has %d keys for %s vectors; ignored",
                            keys_file, len(keys), vecs.shape)
                continue
            for k, v in zip(keys, vecs):
                self._vectors.setdefault(k, v)

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, key: str) -> np.ndarray:
        return self._vectors[key]

    def add(self, keys: list[str], vectors: np.ndarray) -> Path | None:
        """Persist new entries as one shard (named by the hash of its keys)."""
        new = [(k, v) for k, v in zip(keys, vectors) if k not in self._vectors]
        if not new:
            return None
        ks = [k for k, _ in new]
        arr = np.asarray([v for _, v in new], dtype=np.float32)
        name = hashlib.sha256("\n".join(ks).encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"{name}.npy", suffix=".npy") as tmp:
            np.save(tmp, arr)
        with atomic_path(self.dir / f"{name}.keys") as tmp:
            tmp.write_text("\n".join(ks) + "\n", encoding="ascii")
        for k, v in zip(ks, arr):
            self._vectors[k] = v
        return self.dir / f"{name}.keys"


def embed_texts(texts: list[str], model_ref: str, *, batch_size: int, cache_dir=None,
                model=None, show_progress: bool = True) -> tuple[np.ndarray, dict]:
    """Unit-normalized float32 embeddings [len(texts), dim] and cache stats.

    Only texts missing from the cache are encoded (each distinct text once); the
    model is loaded only when something is missing.
    """
    keys = [text_key(t) for t in texts]
    mkey = model_key(model_ref)
    cache = EmbeddingCache(cache_dir, mkey) if cache_dir is not None else None
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if (cache is None or k not in cache) and k not in todo:
            todo[k] = t
    fresh: dict[str, np.ndarray] = {}
    if todo:
        model = model if model is not None else load_model(model_ref)
        vecs = model.encode(list(todo.values()), batch_size=batch_size, show_progress_bar=show_progress,
                            convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)
        fresh = dict(zip(todo, vecs))
        if cache is not None:
            cache.add(list(todo), vecs)
    dim = None
    rows = []
    for k in keys:
        v = fresh[k] if k in fresh else cache.get(k)
        rows.append(v)
        dim = len(v)
    if dim is None:  # no texts: still give the [0, dim] shape downstream code expects
        model = model if model is not None else load_model(model_ref)
        dim = _dimension(model)
    emb = np.asarray(rows, dtype=np.float32).reshape(len(texts), dim)
    n_unique = len(set(keys))
    stats = {"texts": len(texts), "unique_texts": n_unique, "embedded": len(todo),
             "cache_hits": n_unique - len(todo), "model_key": mkey}
    return emb, stats


@dataclass(frozen=True)
class EmbedSettings:
    """pref_embed's params: pref.embedder and pref.embed.*."""

    embedder: str = param("asset name, local sentence-transformers folder or hub id")
    text: str = param("what is embedded: the first user message, or the whole prefix", choices=TEXT_MODES)
    batch_size: int = param("texts per encode batch", min=1)


def embed_prefixes(prefixes: list[dict], s: EmbedSettings, cache_dir=None) -> tuple[np.ndarray, dict, dict]:
    """(embeddings aligned with `prefixes`, info for the density stage, metrics)."""
    if cache_dir:  # exists even when nothing new was embedded (it is a declared DVC out)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    texts = [prefix_text(p["prefix"], s.text) for p in prefixes]
    emb, stats = embed_texts(texts, s.embedder, batch_size=s.batch_size, cache_dir=cache_dir)
    info = {"embedder": s.embedder, "model_key": stats["model_key"], "text_mode": s.text,
            "n": int(emb.shape[0]), "dim": int(emb.shape[1]), "normalized": True}
    return emb, info, {**info, **{k: stats[k] for k in ("unique_texts", "embedded", "cache_hits")}}
