"""rec stages end to end on a tiny random model, and the baseline's no-leakage rule."""

from pathlib import Path

import numpy as np
import pytest
from stage_runner import param_args, run

from posttrain.rec.baseline import LikeRateBaseline
from posttrain.core.io import read_json, read_jsonl
from posttrain.rec.scoring import binary_metrics, paired_metrics, roc_points

REPO = Path(__file__).resolve().parents[2]


def synthetic_movielens(folder: Path, n_users=8, n_ratings=14) -> Path:
    folder.mkdir(parents=True)
    movies = ["movieId,title,genres"] + [f"{i},Film {i} ({1980 + i}),Drama" for i in range(1, 21)]
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, n_users + 1):
        for k in range(n_ratings):
            rows.append(f"{u},{(u * 5 + k * 3) % 20 + 1},{(u * k) % 5 + 1}.0,{100 * k + u}")
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_stages_smoke_on_tiny_model(tmp_path, tiny_model_dir):
    src = synthetic_movielens(tmp_path / "ml")
    data, met = tmp_path / "data", tmp_path / "metrics"
    run("rec_prepare", ["--source", src, "--history-len", 5, "--rating-threshold", 4.0, "--val-ratio", 0.1,
                        "--test-ratio", 0.25, "--seed", 13, "--out-dir", data, "--metrics", met / "prepare.json"])
    res = run("rec_tokenize", ["--model", tiny_model_dir, "--data-dir", data, "--cutoff-len", 128,
                               "--truncation", "history", "--out", data / "tokenized",
                               "--metrics", met / "tokenize.json", "--hist", met / "hist.json",
                               "--show-examples", 1])
    assert "TRAINED TEXT:" in res.output
    tok = read_json(met / "tokenize.json")
    assert tok["train"]["n"] == read_json(met / "prepare.json")["splits"]["train"]["n"]
    assert tok["train"]["truncated"] > 0 and tok["train"]["answer_truncated"] == 0
    assert any(row["cutoff"] == 128 for row in tok["cutoff_table"])
    import datasets

    dd = datasets.load_from_disk(str(data / "tokenized"))
    assert set(dd) == {"train", "eval"} and max(len(x) for x in dd["train"]["input_ids"]) <= 128
    assert set(dd["train"].column_names) == {"input_ids", "attention_mask", "labels"}

    run("rec_finetune", ["--model", tiny_model_dir, "--data", data / "tokenized", "--out", data / "adapter",
                         *param_args("rec.finetune", max_train_examples=8, max_eval_examples=4, max_steps=2,
                                     batch_size=2), "--seed", 13,
                         "--metrics", met / "ft.json", "--loss-plot", met / "loss.json"])
    assert (data / "adapter" / "adapter_config.json").is_file()
    ft = read_json(met / "ft.json")
    assert ft["steps"] == 2 and ft["train_examples"] == 8 and "eval_loss" in ft
    assert [p["step"] for p in read_json(met / "loss.json")] == [1, 2]

    run("rec_evaluate", ["--model", tiny_model_dir, "--adapter", data / "adapter", "--data-dir", data,
                         "--max-test-examples", 12, "--batch-size", 8, "--cutoff-len", 128,
                         "--truncation", "history", "--seed", 13,
                         "--metrics", met / "eval.json", "--roc-llm", met / "roc_llm.json",
                         "--roc-baseline", met / "roc_base.json", "--predictions", met / "pred.jsonl"])
    ev = read_json(met / "eval.json")
    assert ev["llm"]["n"] == ev["baseline"]["n"] == ev["llm_minus_baseline"]["n"] == 12
    pred = read_jsonl(met / "pred.jsonl")
    assert [r["id"] for r in pred] == sorted(r["id"] for r in pred) and len(pred) == 12
    # The metrics are those of the predictions file, so `posttrain compare` measures the same thing.
    assert ev["llm"]["accuracy"] == pytest.approx(np.mean([r["llm_correct"] for r in pred]), abs=1e-6)
    assert ev["llm_minus_baseline"]["accuracy"] == pytest.approx(
        np.mean([r["llm_correct"] - r["baseline_correct"] for r in pred]), abs=1e-6)
    assert ev["llm"]["n_clusters"] == len({r["user"] for r in pred})
    for block in ("llm", "baseline"):
        m = ev[block]
        if m["auc_ci_low"] is not None:
            assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    assert read_json(met / "roc_llm.json")[-1] == {"fpr": 1.0, "tpr": 1.0}


def test_baseline_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    train = [{"user_id": str(u), "item_id": str(i), "rating": float(r), "label": int(r >= 4)}
             for u in range(20) for i, r in zip(rng.integers(0, 30, 15), rng.integers(1, 6, 15))]
    test = [{"user_id": str(u), "item_id": str(i), "rating": 5.0, "label": 1} for u, i in [(1, 2), (3, 99)]]
    flipped = [{**t, "rating": 1.0, "label": 0} for t in test]
    base = LikeRateBaseline(seed=0).fit(train)
    # Test ratings never reach the features: changing them changes nothing.
    assert np.array_equal(base.predict_proba(test), base.predict_proba(flipped))
    # Cross-fitting: a train row's own label and rating are not in its features...
    flipped_row = [{**train[0], "rating": 6.0 - train[0]["rating"], "label": 1 - train[0]["label"]}] + train[1:]
    b_flip = LikeRateBaseline(seed=0).fit(flipped_row)
    assert np.array_equal(b_flip.train_features_[0], base.train_features_[0])
    assert not np.array_equal(b_flip.features(train[:1]), base.features(train[:1]))  # ...but in unseen rows'
    # Unseen rows: the user's like-rate over all train rows, shrunk with prior_weight pseudo-ratings.
    u1 = [r["label"] for r in train if r["user_id"] == "1"]
    prior = np.mean([r["label"] for r in train])
    assert np.isclose(base.features(test)[0, 0], (sum(u1) + 5 * prior) / (len(u1) + 5))
    # A user who likes everything in train scores higher than one who likes nothing.
    train2 = train + [{"user_id": "fan", "item_id": "0", "rating": 5.0, "label": 1}] * 10 \
        + [{"user_id": "hater", "item_id": "0", "rating": 1.0, "label": 0}] * 10
    b2 = LikeRateBaseline(seed=0).fit(train2)
    p = b2.predict_proba([{"user_id": "fan", "item_id": "5"}, {"user_id": "hater", "item_id": "5"}])
    assert p[0] > p[1]


def test_metrics_helpers():
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], ["a", "a", "b", "c"], seed=0)
    assert {k: m[k] for k in ("n", "n_clusters", "positives", "auc", "accuracy")} == \
        {"n": 4, "n_clusters": 3, "positives": 2, "auc": 0.75, "accuracy": 0.5}
    assert m["accuracy_ci_low"] <= 0.5 <= m["accuracy_ci_high"]
    one = binary_metrics([1, 1], [0.2, 0.9], seed=0)
    assert one["auc"] is None and one["auc_ci_low"] is None and one["accuracy"] == 0.5
    d = paired_metrics([0, 1, 1, 0], [0.2, 0.8, 0.9, 0.1], [0.6, 0.4, 0.9, 0.1], seed=0)
    assert d["accuracy"] == 0.5 and d["auc"] == 0.25
    pts = roc_points([0, 1], [0.2, 0.9])
    assert pts[0] == {"fpr": 0.0, "tpr": 0.0} and pts[-1] == {"fpr": 1.0, "tpr": 1.0}


def test_4bit_quantization_loads_or_says_why(tiny_model_dir):
    from posttrain.rec.lora import load_base

    try:
        model = load_base(tiny_model_dir, "4bit")
    except RuntimeError as e:
        assert "quantization 'none'" in str(e)
        pytest.skip(f"bitsandbytes 4-bit unavailable here: {e}")
    assert getattr(model, "is_loaded_in_4bit", False) or getattr(model, "quantization_method", None)
