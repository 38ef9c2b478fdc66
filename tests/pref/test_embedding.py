"""pref_embed: text modes, content-addressed cache (hits/misses, model key, bad shards),
and the real packaged MiniLM on a few texts."""

import numpy as np
import pytest

from posttrain.core.fingerprint import model_key
from posttrain.pref.embedding import EmbeddingCache, embed_texts, prefix_text


class FakeModel:
    """Deterministic stand-in: vector from the text's bytes; records what it was asked."""

    def __init__(self, dim=8):
        self.dim, self.calls = dim, []

    def encode(self, texts, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
               normalize_embeddings=False):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            v = np.random.default_rng(abs(hash(t)) % (2**32)).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)

    def get_embedding_dimension(self):
        return self.dim


def test_prefix_text_modes():
    prefix = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                           {"role": "user", "content": "bye"}]}
    assert prefix_text(prefix, "first_user") == "hi"
    assert prefix_text(prefix, "full") == "user: hi\n\nassistant: yo\n\nuser: bye"
    with pytest.raises(ValueError):
        prefix_text(prefix, "nope")


def test_cache_embeds_only_new_texts(tmp_path):
    m = FakeModel()
    texts = [f"prompt {i}" for i in range(10)]
    e1, s1 = embed_texts(texts, "fake-model", batch_size=64, cache_dir=tmp_path, model=m, show_progress=False)
    assert s1["embedded"] == 10 and s1["cache_hits"] == 0 and e1.shape == (10, 8)
    # rerun with one appended text and a repeat: only the new one reaches the model
    e2, s2 = embed_texts(texts + ["prompt new", "prompt 3"], "fake-model", batch_size=64, cache_dir=tmp_path, model=m,
                         show_progress=False)
    assert m.calls[-1] == ["prompt new"] and s2["embedded"] == 1 and s2["cache_hits"] == 10
    assert np.array_equal(e2[:10], e1) and np.array_equal(e2[11], e1[3])
    # all cached: the model is not needed at all
    e3, s3 = embed_texts(texts, "fake-model", batch_size=64, cache_dir=tmp_path, model=None, show_progress=False)
    assert s3["embedded"] == 0 and np.array_equal(e3, e1)
    # a different model never sees another model's vectors
    m2 = FakeModel()
    _, s4 = embed_texts(texts[:2], "other-model", batch_size=64, cache_dir=tmp_path, model=m2, show_progress=False)
    assert s4["embedded"] == 2 and model_key("other-model") != model_key("fake-model")


def test_cache_ignores_incomplete_shards(tmp_path):
    key = model_key("fake-model")
    c = EmbeddingCache(tmp_path, key)
    c.add(["k1", "k2"], np.ones((2, 4), dtype=np.float32))
    assert len(EmbeddingCache(tmp_path, key)) == 2
    # a shard whose vector file disagrees with its key list is ignored, not trusted
    (tmp_path / key / "broken.keys").write_text("k3\nk4\nk5\n")
    np.save(tmp_path / key / "broken.npy", np.zeros((2, 4), dtype=np.float32))
    c2 = EmbeddingCache(tmp_path, key)
    assert len(c2) == 2 and "k3" not in c2


def test_no_cache_dir_and_empty(tmp_path):
    m = FakeModel()
    e, s = embed_texts(["a", "a", "b"], "fake-model", batch_size=64, cache_dir=None, model=m, show_progress=False)
    assert m.calls == [["a", "b"]] and np.array_equal(e[0], e[1]) and s["unique_texts"] == 2
    e0, _ = embed_texts([], "fake-model", batch_size=64, cache_dir=tmp_path, model=m, show_progress=False)
    assert e0.shape == (0, 8)


def test_real_minilm_embeddings(tmp_path):
    texts = ["How do I bake bread?", "What is a good bread recipe?", "Prove that sqrt(2) is irrational."]
    e, s = embed_texts(texts, "all-minilm-l6-v2", batch_size=2, cache_dir=tmp_path, show_progress=False)
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # the two bread questions are neighbours
