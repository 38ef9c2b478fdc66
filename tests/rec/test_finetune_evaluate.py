"""rec stages end to end on a tiny random model, and the baseline's no-leakage rule."""

from pathlib import Path

import numpy as np
import pytest
from stage_runner import MACHINE_ARGS, param_args, run

from posttrain.rec.baseline import LikeRateBaseline
from posttrain.core.io import read_json, read_jsonl
from posttrain.rec.scoring import binary_metrics, paired_metrics, roc_points, split_counts

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
                         "--metrics", met / "ft.json", "--live", met / "dvclive", *MACHINE_ARGS])
    assert (data / "adapter" / "adapter_config.json").is_file()
    ft = read_json(met / "ft.json")
    assert ft["steps"] == 2 and ft["train_examples"] == 8 and "eval_loss" in ft
    loss_rows = (met / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in loss_rows] == ["step", "1", "2"]
    assert read_json(met / "dvclive" / "metrics.json")["eval"]["loss"] == pytest.approx(ft["eval_loss"], abs=1e-6)

    run("rec_evaluate", ["--model", tiny_model_dir, "--adapter", data / "adapter", "--data-dir", data,
                         "--max-test-examples", 12, "--batch-size", 8, "--cutoff-len", 128,
                         "--truncation", "history", "--seed", 13,
                         "--metrics", met / "eval.json", "--facts", met / "eval_run.json", "--roc-llm", met / "roc_llm.json",
                         "--roc-baseline", met / "roc_base.json", "--predictions", met / "pred.jsonl",
                         *MACHINE_ARGS])
    ev = read_json(met / "eval.json")
    assert ev["llm"]["n"] == ev["baseline"]["n"] == ev["llm_minus_baseline"]["n"] == 12
    assert read_json(met / "eval_run.json")["test"]["rows"] == 12 and set(ev) == {"llm", "baseline", "llm_minus_baseline"}
    pred = read_jsonl(met / "pred.jsonl")
    assert [r["id"] for r in pred] == sorted(r["id"] for r in pred) and len(pred) == 12
    # The metrics are those of the predictions file, so `posttrain compare` measures the same thing.
    assert ev["llm"]["accuracy"] == pytest.approx(np.mean([r["llm_correct"] for r in pred]), abs=1e-6)
    assert ev["llm_minus_baseline"]["accuracy"] == pytest.approx(
        np.mean([r["llm_correct"] - r["baseline_correct"] for r in pred]), abs=1e-6)
    assert read_json(met / "eval_run.json")["n_clusters"]["llm"] == len({r["user"] for r in pred})
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
    assert {k: m[k] for k in ("n", "n_clusters", "auc", "accuracy")} == \
        {"n": 4, "n_clusters": 3, "auc": 0.75, "accuracy": 0.5}
    assert split_counts([0, 0, 1, 1], ["a", "a", "b", "c"]) == {"rows": 4, "users": 3, "positives": 2}
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


def test_qlora_takes_real_optimizer_steps_on_a_4bit_base(tmp_path, tiny_model_dir):
    """rec_finetune with quantization 4bit: bitsandbytes NF4 base (Linear4bit), LoRA on top;
    the loss falls on a repeated batch and the adapter's B matrices (zero at init) move."""
    from safetensors.torch import load_file

    from posttrain.rec.lora import load_base

    try:
        load_base(tiny_model_dir, "4bit")
    except RuntimeError as e:
        pytest.skip(f"bitsandbytes 4-bit unavailable here, QLoRA untested: {e}")
    src = synthetic_movielens(tmp_path / "ml")
    data, met = tmp_path / "data", tmp_path / "metrics"
    run("rec_prepare", ["--source", src, "--history-len", 5, "--rating-threshold", 4.0, "--val-ratio", 0.1,
                        "--test-ratio", 0.25, "--seed", 13, "--out-dir", data, "--metrics", met / "prepare.json"])
    run("rec_tokenize", ["--model", tiny_model_dir, "--data-dir", data, "--cutoff-len", 128, "--truncation", "left",
                         "--out", data / "tokenized", "--metrics", met / "tokenize.json", "--hist", met / "hist.json"])
    run("rec_finetune", ["--model", tiny_model_dir, "--data", data / "tokenized", "--out", data / "adapter",
                         *param_args("rec.finetune", max_train_examples=2, max_eval_examples=0, max_steps=6,
                                     batch_size=2, lr=0.01, quantization="4bit"), "--seed", 13,
                         "--metrics", met / "ft.json", "--live", met / "dvclive", *MACHINE_ARGS])
    ft = read_json(met / "ft.json")
    assert ft["quantization"] == "4bit" and ft["steps"] == 6
    rows = (met / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]
    loss = [float(r.split("\t")[-1]) for r in rows]
    assert loss[-1] < loss[0], loss
    weights = load_file(str(data / "adapter" / "adapter_model.safetensors"))
    b = [v for k, v in weights.items() if "lora_B" in k]
    assert b and all(v.abs().max() > 0 for v in b)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_adapter_bytes_do_not_depend_on_the_hash_seed(tmp_path, tiny_model_dir):
    """Two identical LoRA trainings in fresh processes with different PYTHONHASHSEED write
    byte-identical adapters (weights and config: peft stores target_modules as a set) and
    dvclive files. Without posttrain.core.adapters' sorting the config bytes differ."""
    import os
    import subprocess
    import sys

    import datasets

    rng = np.random.default_rng(0)

    def rows(n):
        ids = [rng.integers(10, 200, size=int(rng.integers(12, 20))).tolist() for _ in range(n)]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
                "labels": [[-100] * (len(x) - 2) + x[-2:] for x in ids]}

    tokenized = tmp_path / "tokenized"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(8)),
                          "eval": datasets.Dataset.from_dict(rows(4))}).save_to_disk(str(tokenized))

    def train(name, hash_seed):
        out = tmp_path / name
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed),
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, str(REPO / "stages" / "rec_finetune.py"), "--model", str(tiny_model_dir),
               "--data", str(tokenized), "--out", str(out / "adapter"),
               *param_args("rec.finetune", max_train_examples=8, max_eval_examples=4, max_steps=2, batch_size=2,
                           lr=1e-3, lora_dropout=0.0, target_modules="q_proj,k_proj,v_proj,o_proj"),
               "--seed", "0", "--metrics", str(out / "metrics.json"), "--live", str(out / "dvclive"), *MACHINE_ARGS]
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        return out

    a, b = train("a", 1), train("b", 2)
    cfg = read_json(a / "adapter" / "adapter_config.json")
    assert cfg["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    for sub in ("adapter", "dvclive"):
        ta, tb = _tree_bytes(a / sub), _tree_bytes(b / sub)
        assert sorted(ta) == sorted(tb) and ta, sub
        assert [f for f in ta if ta[f] != tb[f]] == [], sub
    assert "adapter_model.safetensors" in _tree_bytes(a / "adapter")
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
