"""k-NN cosine density of prefix embeddings -> sampling weights.

density_i = mean cosine similarity of i to its k nearest neighbours, i itself
excluded (by index: an identical copy of i elsewhere is a neighbour at
similarity 1). weight_i = 1 / (max(density_i, 0) + eps), normalized to sum 1,
so prompts in crowded regions of embedding space are down-weighted and rare
ones up-weighted.

Defined edge cases:
- N = 0: empty density and weights.
- k >= N: every other point is a neighbour (k_eff = N - 1).
- N = 1 (k_eff = 0): no neighbours, density 0, weight 1.
- identical vectors: density 1 for all, uniform weights.
- zero vectors: similarity 0 to everything.
- a mean similarity below 0 (anti-correlated neighbourhood) is clipped to 0 so
  weights stay positive and finite.

Methods: `exact` is faiss' flat inner-product index (exact search, blocked, never
an N x N matrix); `pynndescent` is approximate (NN-descent graph); `auto` picks
exact up to `auto_threshold` points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from posttrain.core.io import DataError, read_json
from posttrain.core.settings import param

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "pynndescent")


@dataclass(frozen=True)
class DensitySettings:
    """pref_density's params: pref.k, pref.eps, pref.density.*, pref.seed."""

    k: int = param("neighbours of the k-NN density (self excluded)", min=1)
    eps: float = param("weight = 1 / (density + eps); bounds the weight ratio", min=0, min_open=True)
    method: str = param("k-NN search", choices=METHODS)
    auto_threshold: int = param("auto: exact search up to this many prefixes, pynndescent above", min=0)
    power: float = param("weight = (1/(density+eps))**power; 1 = the seed's formula", min=0)
    cap_quantile: float = param("weights above this quantile of the weights are cut to it (1 = no cap): a "
                                "strong power's rare/common ratio without a few prompts taking every draw",
                                min=0.5, max=1)
    seed: int = param("seed of pynndescent and the projection")


def density_run(emb: np.ndarray, ids: list[str], texts: list[str], s: DensitySettings) -> dict:
    """pref_density's outputs: {weights, metadata, projection, metrics, hist}."""
    from posttrain.pref.projection import projection_records

    density, info = knn_density(emb, k=s.k, method=s.method, auto_threshold=s.auto_threshold, seed=s.seed)
    w = density_weights(density, s.eps, s.power, s.cap_quantile)
    stats = weight_stats(w)
    dens = ({"min": float(density.min()), "max": float(density.max()), "mean": float(density.mean())}
            if len(density) else {})
    return {"weights": w, "info": info,
            "metadata": {"density": {**info, "eps": s.eps, "power": s.power, "cap_quantile": s.cap_quantile, "seed": s.seed,
                                     "auto_threshold": s.auto_threshold, "similarity": "cosine", "stats": dens},
                         "weights": stats},
            "projection": projection_records(ids, emb, w, texts, seed=s.seed),
            "metrics": {**info, "eps": s.eps, "power": s.power, "cap_quantile": s.cap_quantile, "density_mean": dens.get("mean"), **stats},
            "hist": weight_histogram(w)}


def load_embeddings(emb_path, ids_path) -> tuple[np.ndarray, list[str]]:
    """`embeddings.npy` [N, dim] and the aligned `ids.json`, checked: a row with a NaN or
    inf would otherwise count as a zero vector and take most of the weight."""
    try:
        emb = np.load(emb_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(emb_path, f"not a readable .npy array ({e})") from None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.number):
        raise DataError(emb_path, f"expected a numeric [N, dim] array, got {emb.dtype} of shape {emb.shape}")
    ids = read_json(ids_path)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(ids_path, "expected a JSON list of prefix id strings")
    if len(ids) != len(emb):
        raise DataError(ids_path, f"{len(ids)} ids for {len(emb)} embedding rows in {emb_path}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        i = int(bad.argmax())
        raise DataError(emb_path, f"row {i} (id {ids[i]}) has non-finite values; "
                                  f"{int(bad.sum())} such row(s)", field="embedding")
    return emb, ids


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def effective_k(n: int, k: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return max(0, min(k, n - 1))


def knn_faiss(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (cosine): (indices [N, k_eff], similarities [N, k_eff]) of the k most
    similar other rows, most similar first, equal similarities in index order.

    faiss `IndexFlatIP` on unit rows (inner product = cosine; a zero row scores 0 with
    everything); it searches in blocks, so no N x N matrix. `python bench/density.py`
    measures it against scikit-learn's brute-force `NearestNeighbors`."""
    x = np.ascontiguousarray(normalize_rows(x))
    n = len(x)
    ke = effective_k(n, k)
    if ke == 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # One thread: faiss' threaded search changes the last bits of the similarities with the
    # thread count, and the weights must be byte-identical on any machine.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        sim, idx = index.search(x, ke + 1)  # one extra for the row itself
    finally:
        faiss.omp_set_num_threads(threads)
    # Drop the row itself by index; when identical copies crowd it out of the k + 1, drop
    # the last one instead (same similarity, so the same density).
    keep = idx != np.arange(n)[:, None]
    keep[keep.all(axis=1), -1] = False
    idx, sim = idx[keep].reshape(n, ke).astype(np.int64), sim[keep].reshape(n, ke)
    order = np.lexsort((idx, -sim), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(sim, order, axis=1)


def knn_pynndescent(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k-NN (cosine) with pynndescent; self removed by index."""
    n = len(x)
    ke = effective_k(n, k)
    if ke >= n - 1 or n <= 2:  # the graph would hold everything: exact is the same and cheaper
        return knn_faiss(x, k)
    from pynndescent import NNDescent  # imports numba: only when really used
    x = normalize_rows(x)
    # one extra neighbour for self; n_jobs=1 keeps the graph reproducible for a seed
    # a wider graph than k (pynndescent default 30) raises recall; we keep the first k
    index = NNDescent(x, metric="cosine", n_neighbors=min(n - 1, max(ke + 1, 30)), random_state=seed,
                      n_jobs=1, verbose=False)
    nbr, dist = index.neighbor_graph
    idx = np.zeros((n, ke), dtype=np.int64)
    sim = np.zeros((n, ke), dtype=np.float32)
    for i in range(n):
        keep = nbr[i] != i
        keep &= nbr[i] >= 0  # pynndescent pads missing neighbours with -1
        ni, si = nbr[i][keep][:ke], (1.0 - dist[i][keep][:ke]).astype(np.float32)
        idx[i, : len(ni)], sim[i, : len(si)] = ni, si
    return idx, sim


def choose_method(n: int, method: str, auto_threshold: int) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown density method {method!r}; use one of {METHODS}")
    if method == "auto":
        return "exact" if n <= auto_threshold else "pynndescent"
    return method


def knn_density(x: np.ndarray, *, k: int, method: str, auto_threshold: int,
                seed: int) -> tuple[np.ndarray, dict]:
    """density [N] float64 (mean similarity to the k nearest others, clipped at 0)
    and info {method, k, k_effective, n}."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [N, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"embeddings hold non-finite values (first in row {int((~np.isfinite(x)).any(1).argmax())})")
    n = len(x)
    used = choose_method(n, method, auto_threshold)
    ke = effective_k(n, k)
    if n == 0 or ke == 0:
        density = np.zeros(n, dtype=np.float64)
    else:
        _, sim = knn_faiss(x, k) if used == "exact" else knn_pynndescent(x, k, seed)
        density = np.clip(sim.astype(np.float64).mean(axis=1), 0.0, None)
    return density, {"method": used, "method_requested": method, "k": k, "k_effective": ke, "n": n}


def density_weights(density: np.ndarray, eps: float, power: float, cap_quantile: float = 1.0) -> np.ndarray:
    """(1 / (density + eps)) ** power, cut at its `cap_quantile` quantile, normalized to sum 1
    (float64).

    power 1 is the seed's formula. Sentence embeddings put most prompts at a mean
    neighbour similarity of 0.3-0.8, where power 1 spreads weights only ~2x between the
    rarest and the commonest quarter; `power` sets how strongly rare prompts are
    favoured (the realized ratio is in pref_rm's metrics). A power strong enough for a
    50-100x rare/common ratio hands most draws to a few dozen outliers (power 7 on the HH
    prompts: Kish ESS 5% of the prompts); cutting the weights above a quantile makes the
    rarest prompts equals instead, and a higher power then reaches the same ratio with
    most of the sample still drawn (`python bench/density_weights.py`). 1 = no cap."""
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    if not (np.isfinite(power) and power >= 0):
        raise ValueError(f"power must be a finite number >= 0, got {power}")
    if not (np.isfinite(cap_quantile) and 0 < cap_quantile <= 1):
        raise ValueError(f"cap_quantile must be in (0, 1], got {cap_quantile}")
    d = np.asarray(density, dtype=np.float64)
    if d.size == 0:
        return np.zeros(0, dtype=np.float64)
    # log space: large powers of small densities must not overflow
    logw = -power * np.log(d + eps)
    if cap_quantile < 1:  # 1 leaves the weights byte-identical to the uncapped formula
        logw = np.minimum(logw, np.quantile(logw, cap_quantile))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def weight_stats(w: np.ndarray) -> dict:
    """min/max/ratio and quantiles of the weights, also scaled by N (1.0 = uniform)."""
    if w.size == 0:
        return {"n": 0}
    q = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    rel = w * len(w)
    return {
        "n": int(len(w)),
        "sum": round(float(w.sum()), 12),
        "min": float(w.min()), "max": float(w.max()),
        "max_min_ratio": round(float(w.max() / w.min()), 6),
        "relative_quantiles": {f"p{int(p * 100):02d}": round(float(v), 6)
                               for p, v in zip(q, np.quantile(rel, q))},
        # Kish effective sample size: how many uniform samples the weighting is worth
        "effective_sample_size": round(float(1.0 / np.square(w).sum()), 3),
        "effective_sample_fraction": round(float(1.0 / np.square(w).sum() / len(w)), 6),
        # expected draws of a rare prompt over a common one, top vs bottom quarter of the
        # weights (pref.rm.bucket_quantile's default); pref_rm's sampling.json has the realized one
        "rare_vs_common_ratio_q25": rare_vs_common(w, 0.25),
    }


def rare_vs_common(w: np.ndarray, quantile: float) -> float | None:
    """Mean weight of the top `quantile` of prompts over that of the bottom `quantile`, with
    pref_rm's buckets (`posttrain.pref.common.rarity_thresholds`); None when they coincide."""
    w = np.asarray(w, dtype=np.float64)
    lo, hi = np.quantile(w, quantile), np.quantile(w, 1 - quantile)
    if not hi > lo:
        return None
    return round(float(w[w >= hi].mean() / w[w <= lo].mean()), 6)


def weight_histogram(w: np.ndarray, bins: int = 30) -> list[dict]:
    """Histogram of relative weights (w * N; 1.0 = uniform) as plot rows."""
    if w.size == 0:
        return []
    rel = w * len(w)
    counts, edges = np.histogram(rel, bins=bins)
    return [{"relative_weight": round(float((a + b) / 2), 6), "count": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts)]
