"""pref_density: exact (faiss) k-NN vs a brute-force reference, edge cases, weights,
pynndescent agreement, 3-D projection."""

import numpy as np
import pytest

from posttrain.pref.density import (choose_method, density_weights, knn_density, knn_faiss, knn_pynndescent,
                                    weight_histogram, weight_stats)
from posttrain.pref.projection import projection_records


def knn(x, k, method="auto"):
    """knn_density with the auto threshold and seed of params.yaml (pref.density, pref.seed)."""
    return knn_density(x, k=k, method=method, auto_threshold=20000, seed=0)


def brute_force_density(x, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    top = -np.sort(-s, axis=1)[:, : min(k, len(x) - 1)]
    return np.clip(top.mean(axis=1), 0, None)


def clustered(n_dense=200, n_rare=10, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim)
    dense = centre + 0.1 * rng.normal(size=(n_dense, dim))
    rare = rng.normal(size=(n_rare, dim)) * 3
    return np.vstack([dense, rare]).astype(np.float32), n_dense


def test_exact_matches_brute_force():
    x = np.random.default_rng(1).normal(size=(157, 24)).astype(np.float32)
    idx, sim = knn_faiss(x, 7)
    d, info = knn(x, 7, method="exact")
    assert np.allclose(d, brute_force_density(x, 7), atol=1e-6)
    assert (idx != np.arange(157)[:, None]).all()  # never self
    assert (np.diff(sim, axis=1) <= 1e-7).all()  # most similar first
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(sim, np.einsum("nd,nkd->nk", xn, xn[idx]), atol=1e-6)  # the indices go with the sims
    assert info == {"method": "exact", "method_requested": "exact", "k": 7, "k_effective": 7, "n": 157}


def test_exact_excludes_self_among_many_copies():
    # 6 identical rows, k = 2: the search's k + 1 may not hold the row itself; still never self
    x = np.vstack([np.tile([[1.0, 2.0, 3.0]], (6, 1)), np.eye(3)]).astype(np.float32)
    idx, sim = knn_faiss(x, 2)
    assert (idx != np.arange(len(x))[:, None]).all()
    assert np.allclose(sim[:6], 1.0, atol=1e-6)
    same = idx[(sim[:, 0] == sim[:, 1])]
    assert (same[:, 0] < same[:, 1]).all()  # equal similarities in index order


def test_exact_weights_do_not_depend_on_the_thread_count():
    faiss = pytest.importorskip("faiss")
    x = np.random.default_rng(4).normal(size=(3000, 64)).astype(np.float32)  # big enough for faiss' BLAS path
    before = faiss.omp_get_max_threads()
    try:
        out = []
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            out.append(knn(x, 10, method="exact")[0].tobytes())
    finally:
        faiss.omp_set_num_threads(before)
    assert out[0] == out[1]


def test_edge_cases():
    d, info = knn(np.zeros((0, 5)), 3)
    assert d.shape == (0,) and density_weights(d, 0.01, 1.0).shape == (0,) and info["k_effective"] == 0
    d, info = knn(np.ones((1, 5)), 3)  # one point: no neighbours -> density 0, weight 1
    assert d.tolist() == [0.0] and density_weights(d, 0.01, 1.0).tolist() == [1.0]
    x = np.random.default_rng(0).normal(size=(4, 5))
    d, info = knn(x, 50)  # k >= N: all others
    assert info["k_effective"] == 3 and np.allclose(d, brute_force_density(x, 3), atol=1e-6)
    d, _ = knn(np.tile([[1.0, 2.0, 3.0]], (6, 1)), 3)  # identical vectors
    assert np.allclose(d, 1.0, atol=1e-6)
    w = density_weights(d, 0.01, 1.0)
    assert np.allclose(w, 1 / 6)
    d, _ = knn(np.array([[1.0, 0.0], [-1.0, 0.0]]), 1)  # opposite: clipped at 0
    assert d.tolist() == [0.0, 0.0]
    d, _ = knn(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1]]), 1)  # zero vector: similarity 0
    assert d[0] == 0.0 and np.isfinite(d).all()
    with pytest.raises(ValueError):
        knn(np.ones((3, 2)), 0)
    with pytest.raises(ValueError):
        knn(np.ones(3), 1)
    with pytest.raises(ValueError):
        density_weights(np.ones(3), 0.0, 1.0)


def test_weights_sum_to_one_and_rare_prompts_weigh_more():
    x, n_dense = clustered()
    d, _ = knn(x, 10)
    w = density_weights(d, 0.01, 1.0)
    assert w.dtype == np.float64 and np.isfinite(w).all() and (w > 0).all()
    assert abs(w.sum() - 1.0) < 1e-12
    assert w[n_dense:].min() > w[:n_dense].max()
    s = weight_stats(w)
    assert s["max_min_ratio"] > 1 and s["n"] == len(w) and s["min"] == w.min()
    assert s["relative_quantiles"]["p01"] <= s["relative_quantiles"]["p50"] <= s["relative_quantiles"]["p99"]
    hist = weight_histogram(w)
    assert sum(r["count"] for r in hist) == len(w)


def test_method_choice():
    assert choose_method(100, "auto", 1000) == "exact"
    assert choose_method(1001, "auto", 1000) == "pynndescent"
    assert choose_method(10, "pynndescent", 1000) == "pynndescent"
    with pytest.raises(ValueError):
        choose_method(10, "faiss", 1000)


def test_pynndescent_tiny_inputs_fall_back_to_exact():
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    i1, s1 = knn_pynndescent(x, 10, 0)  # k >= N - 1: the whole set, computed exactly
    i2, s2 = knn_faiss(x, 10)
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)


@pytest.mark.slow  # the first pynndescent call JIT-compiles numba code: minutes of CPU here
def test_pynndescent_agrees_with_exact():
    x, _ = clustered(n_dense=300, n_rare=30, dim=16, seed=2)
    ie, se = knn_faiss(x, 10)
    ia, sa = knn_pynndescent(x, 10, seed=0)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ie, ia)])
    assert recall >= 0.95
    de, _ = knn(x, 10, method="exact")
    da, info = knn(x, 10, method="pynndescent")
    assert info["method"] == "pynndescent" and np.abs(de - da).max() < 0.02
    assert (ia != np.arange(len(x))[:, None]).all()
    ia2, _ = knn_pynndescent(x, 10, seed=0)
    assert np.array_equal(ia, ia2)  # reproducible for a seed


def test_projection_records():
    x, _ = clustered(20, 2, 8)
    w = density_weights(knn(x, 3)[0], 0.01, 1.0)
    ids = [f"id{i}" for i in range(len(x))]
    recs = projection_records(ids, x, w, ["t " * 200] * len(x), seed=0)
    assert [r["id"] for r in recs] == ids and set(recs[0]) == {"id", "x", "y", "z", "weight", "text"}
    assert len(recs[0]["text"]) <= 160 and recs == projection_records(ids, x, w, ["t " * 200] * len(x), seed=0)
    one = projection_records(["a"], x[:1], np.ones(1), ["t"], seed=0)
    assert (one[0]["x"], one[0]["y"], one[0]["z"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        projection_records(ids[:-1], x, w, ["t"] * len(x), seed=0)


def test_non_finite_embedding_row_is_a_located_error(tmp_path):
    import json

    from posttrain.core.io import DataError
    from posttrain.pref.density import knn_density, load_embeddings

    emb = np.eye(4, 8, dtype=np.float32)
    emb[2, 3] = np.nan
    np.save(tmp_path / "e.npy", emb)
    (tmp_path / "ids.json").write_text(json.dumps(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match=r"e\.npy: field 'embedding': row 2 \(id c\) has non-finite"):
        load_embeddings(tmp_path / "e.npy", tmp_path / "ids.json")
    with pytest.raises(ValueError, match="non-finite"):
        knn_density(emb, k=2, method="exact", auto_threshold=100, seed=0)


def test_power_sharpens_weights_and_one_is_the_seed_formula():
    d = np.array([0.1, 0.4, 0.8])
    seed = 1 / (d + 0.01)
    assert np.allclose(density_weights(d, 0.01, 1.0), seed / seed.sum())
    w7 = density_weights(d, 0.01, 7.0)
    assert np.allclose(w7, seed ** 7 / (seed ** 7).sum())
    assert w7[0] / w7[2] == pytest.approx((seed[0] / seed[2]) ** 7)
    assert np.allclose(density_weights(d, 0.01, 0.0), 1 / 3)  # power 0 = uniform
    assert np.isfinite(density_weights(np.array([0.0, 1.0]), 1e-6, 200.0)).all()  # no overflow
    with pytest.raises(ValueError, match="power"):
        density_weights(d, 0.01, float("nan"))


def test_cap_quantile_makes_the_rarest_equals_and_keeps_the_sample():
    d = np.random.default_rng(0).uniform(0.2, 0.9, 400)
    plain = density_weights(d, 0.01, 7.0)
    assert density_weights(d, 0.01, 7.0, 1.0).tobytes() == plain.tobytes()  # 1 = no cap, byte for byte
    capped = density_weights(d, 0.01, 11.0, 0.75)
    top = d <= np.quantile(d, 0.25)  # the sparsest quarter: every one of them at the cap
    assert np.allclose(capped[top], capped.max())
    assert np.argsort(-capped[~top], kind="stable").tolist() == np.argsort(-plain[~top], kind="stable").tolist()
    s_plain, s_cap = weight_stats(plain), weight_stats(capped)
    assert s_cap["effective_sample_fraction"] > s_plain["effective_sample_fraction"]
    assert s_plain["effective_sample_size"] == pytest.approx(s_plain["effective_sample_fraction"] * 400, abs=1e-2)
    assert s_cap["max_min_ratio"] < weight_stats(density_weights(d, 0.01, 11.0))["max_min_ratio"]
    # the quarter buckets pref_rm reports: rarest quarter's mean weight over the commonest's
    lo, hi = np.quantile(capped, [0.25, 0.75])
    assert s_cap["rare_vs_common_ratio_q25"] == pytest.approx(capped[capped >= hi].mean() / capped[capped <= lo].mean())
    assert weight_stats(np.full(4, 0.25))["rare_vs_common_ratio_q25"] is None  # uniform: no buckets
    with pytest.raises(ValueError, match="cap_quantile"):
        density_weights(d, 0.01, 7.0, 0.0)


@pytest.mark.slow  # ~1-2 min: numba compile plus a 50k-point graph
def test_pynndescent_at_50k_points_of_384_dims():
    # The full profile's scale: tens of thousands of 384-dim MiniLM prefixes. Mixture of
    # 200 topics (dense clusters) plus scattered rare prompts, unit-normalized like embeddings.
    rng = np.random.default_rng(0)
    n, dim = 50_000, 384
    centres = rng.normal(size=(200, dim))
    topic = rng.integers(0, 200, size=n)
    x = centres[topic] + 0.6 * rng.normal(size=(n, dim))
    x[-2000:] = 3 * rng.normal(size=(2000, dim))  # rare prompts, far from every topic
    x = x.astype(np.float32)
    ie, se = knn_faiss(x, 20)
    ia, sa = knn_pynndescent(x, 20, seed=0)
    assert ia.shape == ie.shape == (n, 20)
    assert (ia >= 0).all() and (ia != np.arange(n)[:, None]).all()  # no padding, self excluded
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(ie[::25], ia[::25])])
    de, da = se.mean(axis=1), sa.mean(axis=1)
    # The density ordering is what the weights use: rare prompts stay the low-density tail.
    rank_e, rank_a = np.argsort(np.argsort(de)), np.argsort(np.argsort(da))
    spearman = np.corrcoef(rank_e, rank_a)[0, 1]
    print(f"pynndescent at {n}x{dim}: recall@20 {recall:.3f}, spearman(density) {spearman:.4f}")
    assert recall >= 0.95 and spearman > 0.95  # measured 0.985 and 1.000
    assert np.median(de[-2000:]) < np.median(de[:-2000]) and np.median(da[-2000:]) < np.median(da[:-2000])
    assert (sa <= se[:, :1] + 1e-5).all()  # an approximate neighbour is never closer than the true nearest
