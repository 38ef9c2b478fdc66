"""pref_dpo: DPO with LoRA on the policy, optionally density-aware (weighted sampler).

The held-out split uses the reward model's split params (--split-*), so both stages
are evaluated on the same held-out prompts.
"""

import logging

import click

from posttrain.pref.dpo import train_dpo
from posttrain.core.io import write_json, write_jsonl


@click.command()
@click.option("--pairs", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--curve", "curve_path", required=True, type=click.Path(dir_okay=False))
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per evaluated pair implicit rewards (jsonl) for `posttrain compare`.")
@click.option("--density-aware", type=bool, default=True, show_default=True)
@click.option("--split-max-pairs", type=int, default=0, show_default=True)
@click.option("--split-heldout-fraction", type=float, default=0.2, show_default=True)
@click.option("--split-seed", type=int, default=0, show_default=True)
@click.option("--bucket-quantile", type=float, default=0.25, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--max-steps", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--beta", type=float, default=0.1, show_default=True)
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=0.0, show_default=True)
@click.option("--lora-layers", type=int, default=0, show_default=True,
              help="LoRA only on the top N decoder layers (0 = all)")
@click.option("--eval-pairs", type=int, default=0, show_default=True,
              help="held-out pairs evaluated (seeded subset; 0 = all, plus rare/common buckets)")
@click.option("--seed", type=int, default=0, show_default=True)
def main(pairs, ids, weights, policy, out_dir, metrics_path, curve_path, predictions_path, density_aware,
         split_max_pairs, split_heldout_fraction, split_seed, bucket_quantile, max_length, max_steps,
         batch_size, grad_accum, lr, beta, lora_r, lora_alpha, lora_dropout, lora_layers, eval_pairs, seed):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    res = train_dpo(
        pairs, ids, weights, policy, out_dir, density_aware=density_aware, max_pairs=split_max_pairs,
        heldout_fraction=split_heldout_fraction, split_seed=split_seed, bucket_quantile=bucket_quantile,
        max_length=max_length, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        lr=lr, beta=beta, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_layers=lora_layers, eval_pairs=eval_pairs, seed=seed)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_json(metrics_path, res["metrics"])
    write_json(curve_path, res["curve"])
    write_jsonl(predictions_path, res["predictions"])
    h = res["metrics"]["heldout"]
    click.echo(f"pref_dpo: held-out reward accuracy {h['reward_accuracy']}, "
               f"margin {h['reward_margin']} on {h['n']} pairs", err=True)


if __name__ == "__main__":
    main()
