"""rec_evaluate: P(Yes) vs P(No) on the first answer token -> AUC and accuracy of the LLM and of a
like-rate baseline on the same test rows, their paired difference, ROC curves, per-row scores."""

import click

from posttrain.core.cli import IN_DIR, OUT_FILE, eval_outputs, run, settings
from posttrain.core.training import TrainSettings
from posttrain.core.io import outputs
from posttrain.core.stats import write_split
from posttrain.rec.evaluate import EvalSettings, evaluate
from posttrain.rec.tokenization import TokenizeSettings


@click.command()
@click.option("--model", required=True, type=IN_DIR)
@click.option("--adapter", required=True, help="peft adapter folder; empty string scores the base model.")
@click.option("--data-dir", required=True, type=IN_DIR)
@eval_outputs
@click.option("--roc-llm", required=True, type=OUT_FILE)
@click.option("--roc-baseline", required=True, type=OUT_FILE)
@settings(TokenizeSettings, dest="tok")
@settings(EvalSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(model, adapter, data_dir, metrics, facts, roc_llm, roc_baseline, predictions, tok, settings, machine):
    r = evaluate(model, adapter, data_dir, settings, tok, machine)
    with outputs() as o:
        write_split(r["metrics"], metrics, facts, o.write_json)
        o.write_json(roc_llm, r["roc_llm"])
        o.write_json(roc_baseline, r["roc_baseline"])
        o.write_jsonl(predictions, r["predictions"])
    click.echo(f"rec_evaluate: llm {r['metrics']['llm']}, baseline {r['metrics']['baseline']}", err=True)


if __name__ == "__main__":
    run(main)
