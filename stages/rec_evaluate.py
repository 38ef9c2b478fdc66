"""rec_evaluate: P(Yes) vs P(No) of the fine-tuned model and a non-LLM baseline on the
same test rows -> AUC, accuracy, n, user-clustered 95% CIs and the paired LLM - baseline
difference (one metrics file), per-row scores (predictions jsonl) and ROC points (DVC plots).

    python stages/rec_evaluate.py --model data/models/policy --adapter data/rec/adapter \
        --data-dir data/rec --max-test-examples 300 --cutoff-len 1024 --truncation left
"""

from pathlib import Path

import click

from posttrain.rec import scoring
from posttrain.rec.baseline import LikeRateBaseline
from posttrain.core.io import read_jsonl, write_json, write_jsonl
from posttrain.rec.lora import load_for_eval
from posttrain.rec.tokenization import STRATEGIES, tokenize_prompts
from posttrain.core.cli import run
from posttrain.core.stats import write_split


@click.command()
@click.option("--model", "model_dir", default="data/models/policy", show_default=True)
@click.option("--adapter", "adapter_dir", default="data/rec/adapter", show_default=True,
              help="peft adapter folder; empty string scores the base model.")
@click.option("--data-dir", default="data/rec", show_default=True, type=click.Path(exists=True, file_okay=False))
@click.option("--max-test-examples", "--max_test_examples", required=True, type=click.IntRange(min=0),
              help="0 = all test rows.")
@click.option("--cutoff-len", "--cutoff_len", required=True, type=click.IntRange(min=1))
@click.option("--truncation", required=True, type=click.Choice(STRATEGIES))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--seed", required=True, type=int)
@click.option("--metrics", "metrics_path", default="metrics/rec_evaluate.json", show_default=True)
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--roc-llm", default="metrics/rec_evaluate_roc_llm.json", show_default=True)
@click.option("--roc-baseline", default="metrics/rec_evaluate_roc_baseline.json", show_default=True)
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per-row scores (jsonl) for `posttrain compare`.")
def main(model_dir, adapter_dir, data_dir, max_test_examples, cutoff_len, truncation, batch_size, seed,
         metrics_path, facts_path, roc_llm, roc_baseline, predictions_path):
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    data_dir = Path(data_dir)
    test = read_jsonl(data_dir / "test_raw.jsonl", required=("user_id", "item_id", "rating", "label", "output"))
    if max_test_examples > 0:
        test = test[:max_test_examples]  # rows were shuffled with the seed in rec_prepare
    labels = [r["label"] for r in test]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_for_eval(model_dir, adapter_dir or None)
    yes_id, no_id = scoring.answer_token_id(tokenizer, "Yes"), scoring.answer_token_id(tokenizer, "No")
    prompts = tokenize_prompts(tokenizer, test, cutoff_len=cutoff_len, strategy=truncation)
    p_yes = scoring.score_prompts(model, tokenizer, prompts, yes_id, no_id, batch_size=batch_size)

    train_meta = read_jsonl(data_dir / "train_meta.jsonl", required=("user_id", "item_id", "rating", "label"))
    base = LikeRateBaseline(seed=seed).fit(train_meta).predict_proba(test)

    users = [r["user_id"] for r in test]  # a user's rows are correlated: the bootstrap resamples users
    metrics = {"llm": scoring.binary_metrics(labels, p_yes, users, seed=seed),
               "baseline": scoring.binary_metrics(labels, base, users, seed=seed),
               "llm_minus_baseline": scoring.paired_metrics(labels, p_yes, base, users, seed=seed),
               "test": scoring.split_counts(labels, users), "adapter": bool(adapter_dir)}
    write_split(metrics, metrics_path, facts_path, write_json)
    write_json(roc_llm, scoring.roc_points(labels, p_yes))
    write_json(roc_baseline, scoring.roc_points(labels, base))
    write_jsonl(predictions_path, scoring.prediction_rows(test, p_yes, base))
    click.echo(f"rec_evaluate: llm {metrics['llm']}, baseline {metrics['baseline']}", err=True)


if __name__ == "__main__":
    run(main)
