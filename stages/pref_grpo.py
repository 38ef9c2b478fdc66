"""pref_grpo: GRPO with LoRA on the policy, rewarded by the trained reward model, on the prefixes
the reward model held out; mean RM reward before/after on eval prompts."""

import click

from posttrain.core.cli import IN_DIR, IN_FILE, OUT_DIR, eval_outputs, run, settings
from posttrain.core.io import outputs
from posttrain.core.training import TrainSettings
from posttrain.core.stats import write_split
from posttrain.pref.grpo import GRPOSettings, train_grpo


@click.command()
@click.option("--prefixes", required=True, type=IN_FILE)
@click.option("--policy", required=True, type=IN_DIR)
@click.option("--rm", required=True, type=IN_DIR)
@click.option("--out", required=True, type=OUT_DIR)
@eval_outputs
@click.option("--live", required=True, type=OUT_DIR, help="dvclive folder for the training curves.")
@click.option("--gen-cache", required=True, type=OUT_DIR, help="Cache of the base policy's greedy eval outputs.")
@settings(GRPOSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(prefixes, policy, rm, out, metrics, facts, live, predictions, gen_cache, settings, machine):
    res = train_grpo(prefixes, policy, rm, out, settings, machine, live_dir=live, gen_cache_dir=gen_cache)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        write_split(res["metrics"], metrics, facts, o.write_json)
        o.write_jsonl(predictions, res["predictions"])
    r = res["metrics"]["eval_reward"]
    click.echo(f"pref_grpo: mean RM reward on eval prompts {r['before']:.4f} -> {r['after']:.4f}", err=True)


if __name__ == "__main__":
    run(main)
