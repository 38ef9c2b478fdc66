"""k-NN density: exact search with faiss (what `exact` uses) vs scikit-learn brute force,
and pynndescent's speed and recall.

    python bench/density.py [--n 5000] [--dim 384] [--k 20] [--repeat 2]

Clustered unit vectors (a few dense clusters plus scattered points), like prompt
embeddings. Prints seconds side by side (best of `--repeat`, the methods taking turns so
a busy machine slows them alike), the sklearn / faiss time ratio, the largest density
difference between the two, and recall@k of pynndescent against the exact neighbours
(its first call includes numba JIT compilation, reported apart from a warm call).
"""

import time

import click
import numpy as np

from posttrain.pref.density import knn_faiss, knn_pynndescent, normalize_rows


def clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    sizes = rng.multinomial(int(n * 0.9), np.linspace(1, 5, 20) / np.linspace(1, 5, 20).sum())
    parts = [c + 0.3 * rng.normal(size=(s, dim)) for c, s in zip(centres, sizes)]
    parts.append(rng.normal(size=(n - sizes.sum(), dim)) * 2)
    return normalize_rows(np.vstack(parts).astype(np.float32))


def sklearn_brute(x, k):
    """(indices, similarities), self excluded by index (kneighbors() without X)."""
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x).kneighbors()
    return idx, 1.0 - dist


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


@click.command()
@click.option("--n", default=5000, show_default=True)
@click.option("--dim", default=384, show_default=True)
@click.option("--k", default=20, show_default=True)
@click.option("--repeat", default=2, show_default=True)
def main(n, dim, k, repeat):
    x = clustered(n, dim)
    times = {"faiss": [], "sklearn": []}
    for _ in range(repeat):
        t, (ie, se) = timed(knn_faiss, x, k)
        times["faiss"].append(t)
        t, (_, ss) = timed(sklearn_brute, x, k)
        times["sklearn"].append(t)
    t_f, t_sk = min(times["faiss"]), min(times["sklearn"])
    print(f"n={n} dim={dim} k={k} (best of {repeat})")
    print(f"{'method':<34} {'seconds':>8}")
    print(f"{'faiss IndexFlatIP (exact, ours)':<34} {t_f:>8.2f}")
    print(f"{'sklearn NearestNeighbors brute':<34} {t_sk:>8.2f}")
    print(f"sklearn / faiss time ratio: {t_sk / t_f:.2f}; max |mean-sim diff|: "
          f"{np.abs(se.mean(1) - ss.mean(1)).max():.2e}")
    for label in ("pynndescent (cold, JIT)", "pynndescent (warm)"):
        secs, (ia, _) = timed(knn_pynndescent, x, k, 0)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ie, ia)])
        print(f"{label:<34} {secs:>8.2f}  faiss/pynndescent time ratio {t_f / secs:.2f}; "
              f"recall@{k} vs exact: {recall:.4f} (aim >= 0.95)")


if __name__ == "__main__":
    main()
