"""pref_dpo: DPO with LoRA on the policy, optionally density-aware, judged on the reward model's
held-out prompts (the split's params, --split-*, are pref_rm's)."""

import click

from posttrain.core.cli import IN_DIR, IN_FILE, OUT_DIR, eval_outputs, run, settings
from posttrain.core.io import outputs
from posttrain.core.training import TrainSettings
from posttrain.core.stats import write_split
from posttrain.pref.common import PairData
from posttrain.pref.dpo import DPOSettings, train_dpo


@click.command()
@click.option("--pairs", required=True, type=IN_FILE)
@click.option("--ids", required=True, type=IN_FILE)
@click.option("--weights", required=True, type=IN_FILE)
@click.option("--policy", required=True, type=IN_DIR)
@click.option("--out", required=True, type=OUT_DIR)
@eval_outputs
@click.option("--live", required=True, type=OUT_DIR, help="dvclive folder for the training curves.")
@settings(PairData, dest="data", prefix="split")
@settings(DPOSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(pairs, ids, weights, policy, out, metrics, facts, live, predictions, data, settings, machine):
    res = train_dpo(pairs, ids, weights, policy, out, settings, data, machine, live_dir=live)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        write_split(res["metrics"], metrics, facts, o.write_json)
        o.write_jsonl(predictions, res["predictions"])
    h = res["metrics"]["heldout"]
    click.echo(f"pref_dpo: held-out reward accuracy {h['reward_accuracy']}, "
               f"margin {h['reward_margin']} on {h['n']} pairs", err=True)


if __name__ == "__main__":
    run(main)
