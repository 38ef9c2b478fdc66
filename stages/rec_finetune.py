"""rec_finetune: LoRA (or QLoRA) SFT of the policy model on the tokenized rec data.

    python stages/rec_finetune.py --model data/models/policy --data data/rec/tokenized \
        --out data/rec/adapter --max-train-examples 256 --max-steps 32 ...
"""

import logging

import click

from posttrain.core.io import write_json
from posttrain.rec.lora import QUANTIZATIONS, LoraSettings, train


@click.command()
@click.option("--model", "model_dir", default="data/models/policy", show_default=True)
@click.option("--data", "data_dir", default="data/rec/tokenized", show_default=True)
@click.option("--out", "out_dir", default="data/rec/adapter", show_default=True)
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--target-modules", default="q_proj,k_proj,v_proj,o_proj", show_default=True,
              help="Comma-separated module names, or all-linear.")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--max-steps", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--warmup-steps", type=int, default=0, show_default=True)
@click.option("--max-train-examples", type=int, default=0, show_default=True, help="0 = all.")
@click.option("--max-eval-examples", type=int, default=0, show_default=True, help="0 = all.")
@click.option("--quantization", type=click.Choice(QUANTIZATIONS), default="none", show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/rec_finetune.json", show_default=True)
@click.option("--live", "live_dir", required=True, type=click.Path(file_okay=False),
              help="dvclive folder for the training curves (metrics.json, plots/metrics/*.tsv).")
def main(model_dir, data_dir, out_dir, lora_r, lora_alpha, lora_dropout, target_modules, lr, max_steps,
         batch_size, grad_accum, warmup_steps, max_train_examples, max_eval_examples, quantization, seed,
         metrics_path, live_dir):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    modules = "all-linear" if target_modules == "all-linear" else [m for m in target_modules.split(",") if m]
    settings = LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=modules,
                            learning_rate=lr, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                            warmup_steps=warmup_steps, max_train_examples=max_train_examples,
                            max_eval_examples=max_eval_examples, seed=seed, quantization=quantization)
    result = train(model_dir, data_dir, out_dir, settings, live_dir=live_dir)
    if result is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_json(metrics_path, result["metrics"])
    click.echo(f"rec_finetune: {result['metrics']}", err=True)


if __name__ == "__main__":
    main()
