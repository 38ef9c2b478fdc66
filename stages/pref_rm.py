"""pref_rm: reward model (Bradley-Terry) on preference pairs, uniform or density-aware.

    python stages/pref_rm.py --pairs data/pref/pairs_all.jsonl --ids data/pref/ids.json \
        --weights data/pref/density_weights.npy --backbone data/models/policy --out data/pref/rm \
        --metrics metrics/pref_rm.json --live dvclive/pref_rm --density-aware true ...
"""

import click

from posttrain.core.io import outputs
from posttrain.pref.reward import train_reward_model
from posttrain.core.cli import finite, run
from posttrain.core.stats import write_split


@click.command()
@click.option("--pairs", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--backbone", required=True, help="Model folder or hub id; a sequence-classification head is added.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--live", "live_dir", required=True, type=click.Path(file_okay=False),
              help="dvclive folder for the training curves (metrics.json, plots/metrics/*.tsv).")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per held-out pair scores (jsonl) for `posttrain compare`.")
@click.option("--density-aware", "--density_aware", required=True, type=bool)
@click.option("--max-pairs", "--max_pairs", required=True, type=click.IntRange(min=0), help="0 = all pairs")
@click.option("--heldout-fraction", "--heldout_fraction", required=True,
              type=finite(0, 1, min_open=True, max_open=True))
@click.option("--bucket-quantile", "--bucket_quantile", required=True, type=finite(0, 0.5, min_open=True),
              help="rare = top quantile of prefix weights, common = bottom quantile")
@click.option("--max-length", "--max_length", required=True, type=click.IntRange(min=1))
@click.option("--max-steps", "--max_steps", required=True, type=click.IntRange(min=1))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--eval-batch-size", "--eval_batch_size", required=True, type=click.IntRange(min=1),
              help="held-out rows per scoring batch")
@click.option("--grad-accum", "--grad_accum", required=True, type=click.IntRange(min=1))
@click.option("--lr", required=True, type=finite(0, min_open=True))
@click.option("--lora-r", "--lora_r", required=True, type=click.IntRange(min=0), help="0 = full fine-tune")
@click.option("--lora-alpha", "--lora_alpha", required=True, type=click.IntRange(min=1))
@click.option("--num-layers", "--num_layers", required=True, type=click.IntRange(min=0),
              help="keep the first N decoder layers of the backbone (0 = all)")
@click.option("--trainable-layers", "--trainable_layers", required=True, type=click.IntRange(min=0),
              help="train only the top N kept layers + head (0 = all)")
@click.option("--seed", required=True, type=int)
def main(pairs, ids, weights, backbone, out_dir, metrics_path, facts_path, live_dir, predictions_path, density_aware, max_pairs,
         heldout_fraction, bucket_quantile, max_length, max_steps, batch_size, eval_batch_size, grad_accum, lr,
         lora_r, lora_alpha, num_layers, trainable_layers, seed):
    res = train_reward_model(
        pairs, ids, weights, backbone, out_dir, density_aware=density_aware, max_pairs=max_pairs,
        heldout_fraction=heldout_fraction, bucket_quantile=bucket_quantile, max_length=max_length,
        max_steps=max_steps, batch_size=batch_size, eval_batch_size=eval_batch_size, grad_accum=grad_accum, lr=lr, lora_r=lora_r,
        lora_alpha=lora_alpha, num_layers=num_layers, trainable_layers=trainable_layers, seed=seed, live_dir=live_dir)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        write_split(res["metrics"], metrics_path, facts_path, o.write_json)
        o.write_jsonl(predictions_path, res["predictions"])
    h, b = res["metrics"]["heldout"], res["metrics"]["heldout_buckets"]
    click.echo(f"pref_rm: held-out accuracy {h['accuracy']} on {h['n']} pairs "
               f"(rare {b['rare']['accuracy']}, common {b['common']['accuracy']})",
               err=True)


if __name__ == "__main__":
    run(main)
