"""reason_verifier: a proof verifier (regression head on the policy) trained on (problem,
solution, score) from reason_filter's grades and CHAMP's annotations, held out by problem."""

import click

from posttrain.core.cli import IN_DIR, OUT_DIR, OUT_FILE, eval_outputs, run, settings
from posttrain.core.io import outputs
from posttrain.core.training import TrainSettings
from posttrain.core.models import save_folder
from posttrain.core.stats import write_split
from posttrain.reason.verifier import VerifierSettings, verifier_run


@click.command()
@click.option("--model", required=True, type=IN_DIR, help="Policy folder the verifier starts from.")
@click.option("--graded", required=True, type=click.Path(dir_okay=False))
@click.option("--problems", required=True, type=click.Path(dir_okay=False))
@click.option("--out-model", required=True, type=OUT_DIR)
@click.option("--out-scores", required=True, type=OUT_FILE)
@eval_outputs
@click.option("--live", required=True, type=OUT_DIR, help="dvclive folder for the training curves.")
@settings(VerifierSettings)
@settings(TrainSettings, dest="machine", prefix="train")
def main(model, graded, problems, out_model, out_scores, metrics, facts, live, predictions, settings, machine):
    r = verifier_run(model, graded, problems, settings, machine, live_dir=live)
    if r is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    with outputs() as o:
        save_folder(r["model"], r["tokenizer"], o.path(out_model, directory=True),
                    {"source": str(model), "task": "verifier-regression"})
        o.write_jsonl(out_scores, r["scored"])
        write_split(r["metrics"], metrics, facts, o.write_json)
        o.write_jsonl(predictions, r["predictions"])


if __name__ == "__main__":
    run(main)
