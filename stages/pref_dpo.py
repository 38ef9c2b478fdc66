"""pref_dpo: DPO with LoRA on the policy, optionally density-aware (weighted sampler).

The held-out split uses the reward model's split params (--split-*), so both stages
are evaluated on the same held-out prompts.
"""

import click

from posttrain.pref.dpo import train_dpo
from posttrain.core.io import write_json, write_jsonl
from posttrain.core.cli import finite, run
from posttrain.core.stats import write_split


@click.command()
@click.option("--pairs", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--live", "live_dir", required=True, type=click.Path(file_okay=False),
              help="dvclive folder for the training curves (metrics.json, plots/metrics/*.tsv).")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per evaluated pair implicit rewards (jsonl) for `posttrain compare`.")
@click.option("--density-aware", "--density_aware", required=True, type=bool)
@click.option("--split-max-pairs", required=True, type=click.IntRange(min=0))
@click.option("--split-heldout-fraction", required=True, type=finite(0, 1, min_open=True, max_open=True))
@click.option("--split-seed", required=True, type=int)
@click.option("--bucket-quantile", required=True, type=finite(0, 0.5, min_open=True))
@click.option("--max-length", "--max_length", required=True, type=click.IntRange(min=1))
@click.option("--max-steps", "--max_steps", required=True, type=click.IntRange(min=1))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--eval-batch-size", "--eval_batch_size", required=True, type=click.IntRange(min=1),
              help="held-out rows per scoring batch")
@click.option("--grad-accum", "--grad_accum", required=True, type=click.IntRange(min=1))
@click.option("--lr", required=True, type=finite(0, min_open=True))
@click.option("--beta", required=True, type=finite(0, min_open=True))
@click.option("--lora-r", "--lora_r", required=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", "--lora_alpha", required=True, type=click.IntRange(min=1))
@click.option("--lora-dropout", "--lora_dropout", required=True, type=finite(0, 1, max_open=True))
@click.option("--lora-layers", "--lora_layers", required=True, type=click.IntRange(min=0),
              help="LoRA only on the top N decoder layers (0 = all)")
@click.option("--seed", required=True, type=int)
def main(pairs, ids, weights, policy, out_dir, metrics_path, facts_path, live_dir, predictions_path, density_aware,
         split_max_pairs, split_heldout_fraction, split_seed, bucket_quantile, max_length, max_steps,
         batch_size, eval_batch_size, grad_accum, lr, beta, lora_r, lora_alpha, lora_dropout, lora_layers, seed):
    res = train_dpo(
        pairs, ids, weights, policy, out_dir, density_aware=density_aware, max_pairs=split_max_pairs,
        heldout_fraction=split_heldout_fraction, split_seed=split_seed, bucket_quantile=bucket_quantile,
        max_length=max_length, max_steps=max_steps, batch_size=batch_size, eval_batch_size=eval_batch_size, grad_accum=grad_accum,
        lr=lr, beta=beta, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_layers=lora_layers, seed=seed, live_dir=live_dir)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_split(res["metrics"], metrics_path, facts_path, write_json)
    write_jsonl(predictions_path, res["predictions"])
    h = res["metrics"]["heldout"]
    click.echo(f"pref_dpo: held-out reward accuracy {h['reward_accuracy']}, "
               f"margin {h['reward_margin']} on {h['n']} pairs", err=True)


if __name__ == "__main__":
    run(main)
