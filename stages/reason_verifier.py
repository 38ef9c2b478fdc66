"""reason_verifier: train a proof verifier (sequence regression on the score).

    python stages/reason_verifier.py --model data/models/policy \
        --graded data/reason/graded.jsonl --problems data/reason/problems.jsonl --champ champ \
        --out-model data/reason/verifier --out-scores data/reason/verifier_scores.jsonl \
        --metrics metrics/reason_verifier.json --live dvclive/reason_verifier

Data sources, score mapping, split and metrics: see posttrain.reason.verifier.
"""

import logging
import time

import click

from posttrain.reason import verifier
from posttrain.core.io import write_json, write_jsonl
from posttrain.core.models import save_folder
from posttrain.core.cli import finite, run
from posttrain.core.stats import write_split

log = logging.getLogger("reason_verifier")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Policy model folder (data/models/policy) the verifier starts from.")
@click.option("--graded", default="data/reason/graded.jsonl", show_default=True)
@click.option("--problems", default="data/reason/problems.jsonl", show_default=True)
@click.option("--use-graded/--no-use-graded", "--use_graded/--no-use_graded", required=True,
              help="Train on reason_filter's graded solutions (needs --graded and --problems); "
                   "--no-use-graded: CHAMP only.")
@click.option("--champ", required=True, help="CHAMP asset name or v0.json path; 'none' to skip CHAMP.")
@click.option("--max-champ", "--max_champ", required=True, type=click.IntRange(min=0),
              help="Cap on CHAMP records (0: all).")
@click.option("--max-graded", "--max_graded", required=True, type=click.IntRange(min=0),
              help="Cap on graded records (0: all).")
@click.option("--heldout-frac", "--heldout_frac", required=True, type=finite(0, 1, min_open=True, max_open=True))
@click.option("--seed", required=True, type=int)
@click.option("--max-length", "--max_length", required=True, type=click.IntRange(min=1))
@click.option("--padding", required=True, type=click.Choice(["longest", "max_length"]))
@click.option("--chat-template/--no-chat-template", "--chat_template/--no-chat_template", required=True,
              help="Render texts as a user turn of the tokenizer's chat template.")
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--eval-batch-size", "--eval_batch_size", required=True, type=click.IntRange(min=1))
@click.option("--max-steps", "--max_steps", required=True, type=click.IntRange(min=1))
@click.option("--lr", required=True, type=finite(0, min_open=True))
@click.option("--warmup-ratio", "--warmup_ratio", required=True, type=finite(0, 1, max_open=True))
@click.option("--weight-decay", "--weight_decay", required=True, type=finite(0))
@click.option("--num-layers", "--num_layers", required=True, type=click.IntRange(min=0),
              help="Keep only the bottom N transformer blocks of the policy (0: all).")
@click.option("--trainable-layers", "--trainable_layers", required=True, type=click.IntRange(min=-1),
              help="Top transformer blocks to train (+ norm + head); -1 trains all.")
@click.option("--threshold", required=True, type=finite(0, 1),
              help="Prediction threshold for accuracy on 'fully correct'.")
@click.option("--out-model", required=True, type=click.Path(file_okay=False))
@click.option("--out-scores", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--live", "live_dir", required=True, type=click.Path(file_okay=False),
              help="dvclive folder for the training curves (metrics.json, plots/metrics/*.tsv).")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per held-out record predictions (jsonl) for `posttrain compare`.")
def main(model_dir, graded, problems, use_graded, champ, max_champ, max_graded, heldout_frac, seed,
         max_length, padding, chat_template, batch_size, eval_batch_size, max_steps, lr, warmup_ratio,
         weight_decay, num_layers, trainable_layers, threshold, out_model, out_scores, metrics_path, facts_path, live_dir,
         predictions_path):
    t0 = time.perf_counter()
    records, counts = verifier.load_records(
        champ=None if champ.lower() == "none" else champ,
        graded=graded if use_graded else None, problems=problems if use_graded else None,
        max_champ=max_champ or None, max_graded=max_graded or None)
    train, heldout = verifier.split_by_problem(records, heldout_frac, seed)
    log.info("records: %d train / %d held-out (%s)", len(train), len(heldout), counts)

    model, tokenizer = verifier.load_regressor(model_dir, trainable_layers=trainable_layers, seed=seed,
                                              num_layers=num_layers)
    history, model = verifier.train(
        model, tokenizer, train, max_steps=max_steps, batch_size=batch_size, lr=lr, max_length=max_length,
        seed=seed, warmup_ratio=warmup_ratio, weight_decay=weight_decay, padding=padding,
        chat_template=chat_template, live_dir=live_dir,
        rebuild=lambda: verifier.load_regressor(model_dir, trainable_layers=trainable_layers, seed=seed,
                                                num_layers=num_layers)[0])
    t_train = time.perf_counter() - t0
    if model is None:  # another rank of `accelerate launch`; rank 0 evaluates and writes
        return
    scored = verifier.predict(model, tokenizer, heldout, batch_size=eval_batch_size,
                              max_length=max_length, chat_template=chat_template)
    metrics = verifier.summarize(model, train, heldout, scored, history, counts, threshold, seed=seed)

    save_folder(model, tokenizer, out_model, {"source": str(model_dir), "task": "verifier-regression"})
    write_jsonl(out_scores, scored)
    write_split(metrics, metrics_path, facts_path, write_json)
    write_jsonl(predictions_path, verifier.heldout_predictions(train, scored, threshold))
    # Wall time goes to the log, not the metrics: outputs stay byte-identical across runs.
    log.info("train %.1fs, total %.1fs; held-out %s", t_train, time.perf_counter() - t0,
             {k: metrics["heldout"].get(k) for k in ("n", "auc", "accuracy", "mse", "baseline_mse_train_mean")})


if __name__ == "__main__":
    run(main)
