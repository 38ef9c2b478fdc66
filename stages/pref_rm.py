"""pref_rm: reward model (Bradley-Terry) on preference pairs, uniform or density-aware; held-out
estimates, run facts, per-pair predictions for `posttrain compare`, dvclive curves."""

import click

from posttrain.core.cli import IN_FILE, OUT_DIR, eval_outputs, run, settings
from posttrain.core.io import outputs
from posttrain.core.training import TrainSettings
from posttrain.core.stats import write_split
from posttrain.pref.common import PairData
from posttrain.pref.reward import RewardSettings, train_reward_model


@click.command()
@click.option("--pairs", required=True, type=IN_FILE)
@click.option("--ids", required=True, type=IN_FILE)
@click.option("--weights", required=True, type=IN_FILE)
@click.option("--out", required=True, type=OUT_DIR)
@eval_outputs
@click.option("--live", required=True, type=OUT_DIR, help="dvclive folder for the training curves.")
@settings(PairData, dest="data")
@settings(RewardSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(pairs, ids, weights, out, metrics, facts, live, predictions, data, settings, machine):
    res = train_reward_model(pairs, ids, weights, out, settings, data, machine, live_dir=live)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        write_split(res["metrics"], metrics, facts, o.write_json)
        o.write_jsonl(predictions, res["predictions"])
    h, b = res["metrics"]["heldout"], res["metrics"]["heldout_buckets"]
    click.echo(f"pref_rm: held-out accuracy {h['accuracy']} on {h['n']} pairs "
               f"(rare {b['rare']['accuracy']}, common {b['common']['accuracy']})", err=True)


if __name__ == "__main__":
    run(main)
