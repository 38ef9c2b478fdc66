"""reason_verifier: train a proof verifier (sequence regression on the score).

    python stages/reason_verifier.py --model data/models/policy \
        --graded data/reason/graded.jsonl --problems data/reason/problems.jsonl --champ champ \
        --out-model data/reason/verifier --out-scores data/reason/verifier_scores.jsonl \
        --metrics metrics/reason_verifier.json --loss-plot metrics/reason_verifier_loss.csv

Data sources, score mapping, split and metrics: see posttrain.reason.verifier.
"""

import logging
import time

import click

from posttrain.reason import verifier
from posttrain.core.io import write_json, write_jsonl
from posttrain.core.launch import is_main_process
from posttrain.core.models import save_folder

log = logging.getLogger("reason_verifier")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Policy model folder (data/models/policy) the verifier starts from.")
@click.option("--graded", default="data/reason/graded.jsonl", show_default=True)
@click.option("--problems", default="data/reason/problems.jsonl", show_default=True)
@click.option("--use-graded", type=bool, default=True, show_default=True,
              help="Train on reason_filter's graded solutions (needs --graded and --problems); "
                   "false: CHAMP only.")
@click.option("--champ", default="champ", show_default=True,
              help="CHAMP asset name or v0.json path; 'none' to skip CHAMP.")
@click.option("--max-champ", type=int, default=0, help="Cap on CHAMP records (0: all).")
@click.option("--max-graded", type=int, default=0, help="Cap on graded records (0: all).")
@click.option("--heldout-frac", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-length", type=int, default=256, show_default=True)
@click.option("--padding", type=click.Choice(["longest", "max_length"]), default="longest", show_default=True)
@click.option("--chat-template", type=bool, default=False, show_default=True,
              help="Render texts as a user turn of the tokenizer's chat template.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--eval-batch-size", type=int, default=8, show_default=True)
@click.option("--max-steps", type=int, default=40, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--num-layers", type=int, default=0, show_default=True,
              help="Keep only the bottom N transformer blocks of the policy (0: all).")
@click.option("--trainable-layers", type=int, default=2, show_default=True,
              help="Top transformer blocks to train (+ norm + head); -1 trains all.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Prediction threshold for accuracy on 'fully correct'.")
@click.option("--out-model", required=True, type=click.Path(file_okay=False))
@click.option("--out-scores", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--loss-plot", default=None, type=click.Path(dir_okay=False))
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per held-out record predictions (jsonl) for `posttrain compare`.")
def main(model_dir, graded, problems, use_graded, champ, max_champ, max_graded, heldout_frac, seed,
         max_length, padding, chat_template, batch_size, eval_batch_size, max_steps, lr, warmup_ratio,
         weight_decay, num_layers, trainable_layers, threshold, out_model, out_scores, metrics_path, loss_plot,
         predictions_path):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    records, counts = verifier.load_records(
        champ=None if champ.lower() == "none" else champ,
        graded=graded if use_graded else None, problems=problems if use_graded else None,
        max_champ=max_champ or None, max_graded=max_graded or None)
    train, heldout = verifier.split_by_problem(records, heldout_frac, seed)
    log.info("records: %d train / %d held-out (%s)", len(train), len(heldout), counts)

    model, tokenizer = verifier.load_regressor(model_dir, trainable_layers, seed, num_layers)
    history = verifier.train(model, tokenizer, train, max_steps=max_steps, batch_size=batch_size, lr=lr,
                             max_length=max_length, seed=seed, warmup_ratio=warmup_ratio,
                             weight_decay=weight_decay, padding=padding, chat_template=chat_template)
    t_train = time.perf_counter() - t0
    if not is_main_process():  # another rank of `accelerate launch`; rank 0 evaluates and writes
        return
    scored = verifier.predict(model, tokenizer, heldout, batch_size=eval_batch_size,
                              max_length=max_length, chat_template=chat_template)
    metrics = verifier.summarize(model, train, heldout, scored, history, counts, threshold, seed=seed)

    save_folder(model, tokenizer, out_model, {"source": str(model_dir), "task": "verifier-regression"})
    write_jsonl(out_scores, scored)
    if loss_plot:
        verifier.write_loss_csv(loss_plot, history)
    write_json(metrics_path, metrics)
    write_jsonl(predictions_path, verifier.heldout_predictions(train, scored, threshold))
    # Wall time goes to the log, not the metrics: outputs stay byte-identical across runs.
    log.info("train %.1fs, total %.1fs; held-out %s", t_train, time.perf_counter() - t0,
             {k: metrics["heldout"].get(k) for k in ("n", "auc", "accuracy", "mse", "baseline_mse_train_mean")})


if __name__ == "__main__":
    main()
