"""rec_finetune: LoRA (or QLoRA) SFT of the policy model on the tokenized rec data.

    python stages/rec_finetune.py --model data/models/policy --data data/rec/tokenized \
        --out data/rec/adapter --max-train-examples 256 --max-steps 32 ...
"""

import click

from posttrain.core.io import write_json
from posttrain.rec.lora import QUANTIZATIONS, LoraSettings, train
from posttrain.core.cli import finite, run


@click.command()
@click.option("--model", "model_dir", default="data/models/policy", show_default=True)
@click.option("--data", "data_dir", default="data/rec/tokenized", show_default=True)
@click.option("--out", "out_dir", default="data/rec/adapter", show_default=True)
@click.option("--lora-r", "--lora_r", required=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", "--lora_alpha", required=True, type=click.IntRange(min=1))
@click.option("--lora-dropout", "--lora_dropout", required=True, type=finite(0, 1, max_open=True))
@click.option("--target-modules", "--target_modules", required=True,
              help="Comma-separated module names, or all-linear.")
@click.option("--lr", required=True, type=finite(0, min_open=True))
@click.option("--max-steps", "--max_steps", required=True, type=click.IntRange(min=1))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--grad-accum", "--grad_accum", required=True, type=click.IntRange(min=1))
@click.option("--warmup-steps", "--warmup_steps", required=True, type=click.IntRange(min=0))
@click.option("--max-train-examples", "--max_train_examples", required=True, type=click.IntRange(min=0),
              help="0 = all.")
@click.option("--max-eval-examples", "--max_eval_examples", required=True, type=click.IntRange(min=0),
              help="0 = all.")
@click.option("--quantization", required=True, type=click.Choice(QUANTIZATIONS))
@click.option("--seed", required=True, type=int)
@click.option("--metrics", "metrics_path", default="metrics/rec_finetune.json", show_default=True)
@click.option("--loss-plot", "loss_path", default="metrics/rec_finetune_loss.json", show_default=True)
def main(model_dir, data_dir, out_dir, lora_r, lora_alpha, lora_dropout, target_modules, lr, max_steps,
         batch_size, grad_accum, warmup_steps, max_train_examples, max_eval_examples, quantization, seed,
         metrics_path, loss_path):
    modules = "all-linear" if target_modules == "all-linear" else [m for m in target_modules.split(",") if m]
    settings = LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=modules,
                            learning_rate=lr, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                            warmup_steps=warmup_steps, max_train_examples=max_train_examples,
                            max_eval_examples=max_eval_examples, seed=seed, quantization=quantization)
    result = train(model_dir, data_dir, out_dir, settings)
    if result is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_json(loss_path, result["loss_history"])
    write_json(metrics_path, result["metrics"])
    click.echo(f"rec_finetune: {result['metrics']}", err=True)


if __name__ == "__main__":
    run(main)
