"""k-NN density at the seed's scale: exact (faiss, what `exact` uses) vs scikit-learn brute
force vs approximate (pynndescent), with recall, time and peak memory, and the `auto`
switch point that follows from the measurement.

    python bench/density.py [--sizes 28000,200000] [--sweep 5000,10000,20000,50000] [--dim 384] [--k 20]

Data: clustered unit vectors (20 dense clusters of unequal size plus 10% scattered
points), like prompt embeddings. Every (size, method) runs in its own child process, one
thread each (faiss, BLAS and numba pinned to 1, as the stage runs faiss), so its peak RSS
is its own (pynndescent's sizes share one process, ascending); "extra MB" is the peak minus the RSS just before the search (the data alone).
pynndescent's numba compilation is timed apart (a warm-up fit on 2,000 points; then every
size in that one process): a stage pays it once per run, since each stage is a new process.

recall@k counts an approximate neighbour as found when its exact similarity is at least
the k-th exact similarity (so ties at the k-th place are not misses); "max |d|" is the
largest density difference from exact, the quantity the weights are made of.

The sweep sizes (exact vs pynndescent only) place the switch point: the smallest measured
size from which pynndescent (compile included) is faster with recall >= 0.95.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                              "NUMBA_NUM_THREADS")}


def clustered(n, dim, seed=0):
    import numpy as np

    from posttrain.pref.density import normalize_rows

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32)
    sizes = rng.multinomial(int(n * 0.9), np.linspace(1, 5, 20) / np.linspace(1, 5, 20).sum())
    parts = [c + 0.3 * rng.standard_normal(size=(s, dim), dtype=np.float32) for c, s in zip(centres, sizes)]
    parts.append(rng.standard_normal(size=(n - sizes.sum(), dim), dtype=np.float32) * 2)
    return normalize_rows(np.vstack(parts))


def rss_mb() -> float:
    # VmRSS now; ru_maxrss for the peak (Linux: kB)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(method, sizes, dim, k, tmp, queries):
    """Measurements in this process, one JSON line per size. pynndescent takes every size
    in one process (ascending, so the peak RSS so far is the current size's): its numba
    compilation, minutes on this box, is paid once, in the warm-up."""
    compile_s = None
    if method == "pynndescent":
        from posttrain.pref.density import knn_pynndescent

        t0 = time.perf_counter()
        knn_pynndescent(clustered(2000, dim, seed=1), k, 0)
        compile_s = time.perf_counter() - t0
    for n in sorted(sizes):
        out = child_one(method, n, dim, k, str(Path(tmp) / f"exact-{n}.npz"), queries)
        if compile_s is not None:
            out["compile_s"] = compile_s
        print(json.dumps(out), flush=True)


def query_rows(n, queries):
    """All rows, or a seeded sample of `queries` of them: exact search costs the same per
    query, so above `--queries` points the exact methods search a sample against all n
    and their time is scaled by n / queries."""
    import numpy as np

    if n <= queries:
        return np.arange(n)
    return np.sort(np.random.default_rng(2).choice(n, queries, replace=False))


def exact_sample(method, x, q, k):
    """(indices, similarities) of the k nearest other points of rows q, searched in all x."""
    import numpy as np

    if method == "faiss":
        import faiss

        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        faiss.omp_set_num_threads(1)
        sim, idx = index.search(x[q], k + 1)
    else:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x[q])
        sim = 1.0 - dist
    keep = idx != q[:, None]
    keep[keep.all(axis=1), -1] = False
    return idx[keep].reshape(len(q), k), sim[keep].reshape(len(q), k).astype(np.float32)


def child_one(method, n, dim, k, exact_path, queries) -> dict:
    import resource

    import numpy as np

    from posttrain.pref.density import knn_faiss, knn_pynndescent

    x = clustered(n, dim)
    q = query_rows(n, queries)
    out = {"method": method, "n": n}
    base = rss_mb()
    t0 = time.perf_counter()
    if method == "faiss" and len(q) == n:
        idx, sim = knn_faiss(x, k)  # the library's own path
    elif method == "sklearn" and len(q) == n:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x).kneighbors()
        sim = (1.0 - dist).astype(np.float32)
    elif method in ("faiss", "sklearn"):
        idx, sim = exact_sample(method, x, q, k)
        out["queries"] = len(q)
    else:
        idx, sim = knn_pynndescent(x, k, 0)
        idx, sim = idx[q], sim[q]
    out["seconds"] = (time.perf_counter() - t0) * (n / len(q) if "queries" in out else 1)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["extra_mb"] = out["peak_mb"] - base
    density = sim.mean(axis=1)
    if method == "faiss":
        np.savez(exact_path, kth=sim[:, -1], density=density)
    else:
        ref = np.load(exact_path)
        # exact similarity of each found neighbour (recomputed, not the method's own value)
        true_sim = np.einsum("nd,nkd->nk", x[q], x[idx])
        out["recall"] = float((true_sim >= ref["kth"][:, None] - 1e-5).mean())
        out["max_abs_density_diff"] = float(np.abs(density - ref["density"]).max())
    return out


def measure(method, sizes, dim, k, tmp, queries) -> list[dict]:
    env = {**os.environ, **ONE_THREAD}
    p = subprocess.run([sys.executable, __file__, "--child", method, "--sizes", ",".join(map(str, sizes)),
                        "--dim", str(dim), "--k", str(k), "--tmp", tmp, "--queries", str(queries)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise click.ClickException(f"{method} at n={sizes} failed:\n{p.stderr[-2000:]}")
    return [json.loads(line) for line in p.stdout.strip().splitlines() if line.startswith("{")]


def row(r) -> str:
    extra = (f"{r['recall']:>8.4f} {r['max_abs_density_diff']:>9.1e}" if "recall" in r else f"{'exact':>8} {'':>9}")
    comp = f"{r['compile_s']:>8.1f}" if "compile_s" in r else f"{'':>8}"
    secs = f"{r['seconds']:.1f}" + ("*" if "queries" in r else "")
    return (f"{r['n']:>8} {r['method']:<12} {secs:>9} {comp} {r['peak_mb']:>8.0f} "
            f"{r['extra_mb']:>8.0f} {extra}")


def ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


@click.command()
@click.option("--sizes", default="28000,200000", show_default=True,
              help="Sizes measured with all three methods.")
@click.option("--sweep", default="5000,10000,20000,50000", show_default=True,
              help="Extra sizes (faiss vs pynndescent) for the switch point; '' for none.")
@click.option("--dim", default=384, show_default=True)
@click.option("--k", default=20, show_default=True)
@click.option("--queries", default=20000, show_default=True,
              help="Above this many points the exact methods search this many sampled queries "
                   "(time scaled by n / queries); recall is measured on the same rows.")
@click.option("--json", "json_path", default=None, help="Also write the figures here.")
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/density.json.")
@click.option("--child", "child_method", default=None, hidden=True)
@click.option("--tmp", default=None, hidden=True)
def main(sizes, sweep, dim, k, queries, json_path, save, child_method, tmp):
    if child_method:
        return child(child_method, ints(sizes), dim, k, tmp, queries)
    full, extra = ints(sizes), [n for n in ints(sweep) if n not in ints(sizes)]
    print(f"dim={dim} k={k}, one thread per method; seconds exclude making the data")
    print(f"{'n':>8} {'method':<12} {'seconds':>9} {'compile':>8} {'peak MB':>8} {'extra MB':>8} "
          f"{'recall':>8} {'max |d|':>9}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # exact first (the others' recall is against it), one process per size
        for n in sorted(full + extra):
            results += measure("faiss", [n], dim, k, tmp, queries)
            print(row(results[-1]), flush=True)
        for r in measure("pynndescent", sorted(full + extra), dim, k, tmp, queries):
            results.append(r)
            print(row(r), flush=True)
        for n in sorted(full):
            results += measure("sklearn", [n], dim, k, tmp, queries)
            print(row(results[-1]), flush=True)
    if any("queries" in r for r in results):
        print(f"* exact search of {queries} sampled queries against all n, time scaled by n / {queries}")
    by = {(r["n"], r["method"]): r for r in results}
    print()
    for n in sorted(full + extra):
        f, p = by[(n, "faiss")], by[(n, "pynndescent")]
        line = (f"n={n}: faiss/pynndescent time {f['seconds'] / p['seconds']:.2f} (fit only), "
                f"{f['seconds'] / (p['seconds'] + p['compile_s']):.2f} (with compile)")
        if (n, "sklearn") in by:
            line += f"; sklearn/faiss {by[(n, 'sklearn')]['seconds'] / f['seconds']:.2f}"
        print(line)
    wins = [n for n in sorted(full + extra)
            if by[(n, "pynndescent")]["seconds"] + by[(n, "pynndescent")]["compile_s"] < by[(n, "faiss")]["seconds"]
            and by[(n, "pynndescent")]["recall"] >= 0.95]
    # the switch is where approximate wins from then on (every larger measured size too)
    ns = sorted(full + extra)
    switch = next((n for n in ns if all(m in wins for m in ns if m >= n)), None)
    print(f"auto switch point: {'pynndescent from n=' + str(switch) if switch else 'exact wins at every measured size'}"
          " (pref.density.auto_threshold)")
    result = {"dim": dim, "k": k, "queries": queries, "results": results, "switch": switch}
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    if save:
        from posttrain.core.report import save_bench

        save_bench("density", result)


if __name__ == "__main__":
    main()
