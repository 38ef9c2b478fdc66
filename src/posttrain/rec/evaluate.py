"""rec_evaluate as one call: P(Yes) of the fine-tuned LLM and a like-rate baseline on the test
rows, with AUC, accuracy and their paired difference (each with n and a 95% CI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posttrain.core.io import read_jsonl
from posttrain.core.settings import param
from posttrain.core.training import TrainSettings, autocast
from posttrain.rec import scoring
from posttrain.rec.baseline import LikeRateBaseline
from posttrain.rec.tokenization import TokenizeSettings, tokenize_prompts


@dataclass(frozen=True)
class EvalSettings:
    """rec_evaluate's params (rec.evaluate.*, rec.seed)."""

    max_test_examples: int = param("test rows scored (0 = all); CIs need n in the hundreds", min=0)
    batch_size: int = param("prompts per scoring batch", min=1)
    seed: int = param("seed of the bootstrap CIs and the baseline")


def evaluate(model_dir, adapter_dir, data_dir, s: EvalSettings, tok: TokenizeSettings, t: TrainSettings) -> dict:
    """{metrics, roc_llm, roc_baseline, predictions}; `adapter_dir` "" scores the base model;
    in the precision the adapter trained in (`t`)."""
    import torch
    from transformers import AutoTokenizer

    from posttrain.rec.lora import load_for_eval

    torch.manual_seed(s.seed)
    data_dir = Path(data_dir)
    test = read_jsonl(data_dir / "test_raw.jsonl", required=("user_id", "item_id", "rating", "label", "output"))
    if s.max_test_examples > 0:
        test = test[:s.max_test_examples]  # rows were shuffled with the seed in rec_prepare
    labels = [r["label"] for r in test]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_for_eval(model_dir, adapter_dir or None)
    yes_id, no_id = scoring.answer_token_id(tokenizer, "Yes"), scoring.answer_token_id(tokenizer, "No")
    prompts = tokenize_prompts(tokenizer, test, cutoff_len=tok.cutoff_len, strategy=tok.truncation)
    with autocast(t):
        p_yes = scoring.score_prompts(model, tokenizer, prompts, yes_id, no_id, batch_size=s.batch_size)

    train_meta = read_jsonl(data_dir / "train_meta.jsonl", required=("user_id", "item_id", "rating", "label"))
    base = LikeRateBaseline(seed=s.seed).fit(train_meta).predict_proba(test)

    users = [r["user_id"] for r in test]  # a user's rows are correlated: the bootstrap resamples users
    metrics = {"llm": scoring.binary_metrics(labels, p_yes, users, seed=s.seed),
               "baseline": scoring.binary_metrics(labels, base, users, seed=s.seed),
               "llm_minus_baseline": scoring.paired_metrics(labels, p_yes, base, users, seed=s.seed),
               "test": scoring.split_counts(labels, users), "adapter": bool(adapter_dir)}
    return {"metrics": metrics, "roc_llm": scoring.roc_points(labels, p_yes),
            "roc_baseline": scoring.roc_points(labels, base),
            "predictions": scoring.prediction_rows(test, p_yes, base)}
