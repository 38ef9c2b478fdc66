"""3-D projection of prefix embeddings for viewing (PCA), with weights and snippets.

Records: {id, x, y, z, weight, text}; coordinates rounded so the file is stable
across platforms' last-bit float differences. Fewer than 3 points or dimensions
pad the missing axes with 0.
"""

from __future__ import annotations

import numpy as np


def pca_3d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    out = np.zeros((n, 3), dtype=np.float64)
    if n == 0:
        return out
    m = min(3, n, x.shape[1])
    if n >= 2 and m > 0:
        # full SVD: deterministic (sklearn fixes component signs)
        out[:, :m] = PCA(n_components=m, svd_solver="full", random_state=seed).fit_transform(x)
    return out


def snippet(text: str, limit: int = 160) -> str:
    t = " ".join(text.split())
    return t if len(t) <= limit else t[: limit - 1] + "\u2026"


def projection_records(ids: list[str], x: np.ndarray, weights: np.ndarray, texts: list[str], *,
                       seed: int, snippet_chars: int = 160) -> list[dict]:
    if not (len(ids) == len(x) == len(weights) == len(texts)):
        raise ValueError(f"length mismatch: ids {len(ids)}, vectors {len(x)}, weights {len(weights)}, "
                         f"texts {len(texts)}")
    xyz = pca_3d(x, seed)
    return [{"id": i, "x": round(float(a), 5), "y": round(float(b), 5), "z": round(float(c), 5),
             "weight": float(w), "text": snippet(t, snippet_chars)}
            for i, (a, b, c), w, t in zip(ids, xyz, weights, texts)]
