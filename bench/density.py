"""k-NN density: our exact blocked search vs scikit-learn brute force, and pynndescent recall.

    python bench/density.py [--n 5000] [--dim 384] [--k 20]

Clustered unit vectors (a few dense clusters plus scattered points), like prompt
embeddings. Prints seconds side by side and the ratio; recall@k of pynndescent
against the exact neighbours (the first pynndescent call includes numba JIT
compilation, reported separately from a second, warm call).
"""

import time

import click
import numpy as np

from posttrain.pref.density import knn_exact, knn_pynndescent, normalize_rows


def clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    sizes = rng.multinomial(int(n * 0.9), np.linspace(1, 5, 20) / np.linspace(1, 5, 20).sum())
    parts = [c + 0.3 * rng.normal(size=(s, dim)) for c, s in zip(centres, sizes)]
    parts.append(rng.normal(size=(n - sizes.sum(), dim)) * 2)
    return normalize_rows(np.vstack(parts).astype(np.float32))


@click.command()
@click.option("--n", default=5000, show_default=True)
@click.option("--dim", default=384, show_default=True)
@click.option("--k", default=20, show_default=True)
def main(n, dim, k):
    from sklearn.neighbors import NearestNeighbors

    x = clustered(n, dim)
    t0 = time.perf_counter()
    ie, se = knn_exact(x, k)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist, isk = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    t_sk = time.perf_counter() - t0
    sk_sim = np.sort(1 - dist, axis=1)[:, ::-1][:, 1:]  # drop self (similarity 1)
    print(f"n={n} dim={dim} k={k}")
    print(f"{'method':<28} {'seconds':>8}")
    print(f"{'exact (blocked, ours)':<28} {t_ours:>8.2f}")
    print(f"{'sklearn brute cosine':<28} {t_sk:>8.2f}")
    print(f"ours / sklearn time ratio: {t_ours / t_sk:.2f}; max |mean-sim diff|: "
          f"{np.abs(se.mean(1) - sk_sim.mean(1)).max():.2e}")
    for label in ("pynndescent (cold, JIT)", "pynndescent (warm)"):
        t0 = time.perf_counter()
        ia, _ = knn_pynndescent(x, k, seed=0)
        secs = time.perf_counter() - t0
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ie, ia)])
        print(f"{label:<28} {secs:>8.2f}  recall@{k} vs exact: {recall:.4f} (aim >= 0.95)")


if __name__ == "__main__":
    main()
