"""rec_finetune: LoRA SFT (QLoRA with quantization 4bit) on the label-masked rec examples; the
adapter, training facts and dvclive curves."""

import click

from posttrain.core.cli import IN_DIR, OUT_DIR, OUT_FILE, run, settings
from posttrain.core.io import outputs
from posttrain.core.training import TrainSettings
from posttrain.rec.lora import LoraSettings, train


@click.command()
@click.option("--model", required=True, type=IN_DIR)
@click.option("--data", required=True, type=IN_DIR, help="rec_tokenize's dataset folder.")
@click.option("--out", required=True, type=OUT_DIR)
@click.option("--metrics", required=True, type=OUT_FILE)
@click.option("--live", required=True, type=OUT_DIR, help="dvclive folder for the training curves.")
@settings(LoraSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(model, data, out, metrics, live, settings, machine):
    result = train(model, data, out, settings, machine, live_dir=live)
    if result is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        o.write_json(metrics, result["metrics"])
    click.echo(f"rec_finetune: {result['metrics']}", err=True)


if __name__ == "__main__":
    run(main)
