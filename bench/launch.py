"""One training stage on 1 process vs N under `accelerate launch` (gloo DDP on CPU), the
same global batch and steps, measured side by side in one run.

The stage is reason_verifier on CHAMP's annotated solutions (needs only the policy
folder from base_models). Wall time covers the whole command, start-up included,
since that is what `dvc repro` pays.

    python bench/launch.py [--model data/models/policy] [--num-processes 2] [--steps 20]

Saves the speed-up in bench/results/launch.json, one entry per (processes, steps, global
batch), replacing an earlier run of the same shape (`posttrain report` writes the docs table).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "reason_verifier.py"


def _verifier_args(**overrides) -> list[str]:
    """reason.verifier of params.yaml as dvc.yaml's `${reason.verifier}` renders it, with overrides."""
    import yaml

    values = {**yaml.safe_load((REPO / "params.yaml").read_text())["reason"]["verifier"], **overrides}
    values.pop("num_processes")  # the launcher's, given explicitly below
    out = []
    for k, v in values.items():
        out += [f"--{k}" if v else f"--no-{k}"] if isinstance(v, bool) else [f"--{k}", str(v)]
    return out


def _run(n: int, model: str, steps: int, global_batch: int, out: Path) -> tuple[float, dict]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "posttrain.core.launch", "--distributed", "ddp", "--num-processes", str(n), str(STAGE),
           "--model", model, *_verifier_args(use_graded=False, champ="champ", max_champ=200, num_layers=6,
                                             trainable_layers=2, max_length=256,
                                             batch_size=global_batch // n, max_steps=steps),
           "--out-model", str(out / "model"), "--out-scores", str(out / "scores.jsonl"),
           "--metrics", str(out / "metrics.json"), "--facts", str(out / "run.json"), "--live", str(out / "live"),
           "--predictions", str(out / "predictions.jsonl")]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"{n} process(es) failed:\n{p.stderr[-3000:]}")
    # the last logged training loss is dvclive's; the held-out MSE the metrics'
    return wall, {"final_loss": json.loads((out / "live" / "metrics.json").read_text())["loss"],
                  "heldout_mse": json.loads((out / "metrics.json").read_text())["heldout"]["mse"]}


@click.command()
@click.option("--model", default="data/models/policy", show_default=True, type=click.Path(exists=True))
@click.option("--num-processes", default=2, show_default=True)
@click.option("--steps", default=20, show_default=True)
@click.option("--global-batch", default=4, show_default=True, help="rows per optimizer step over all processes")
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/launch.json.")
def main(model, num_processes, steps, global_batch, save):
    if global_batch % num_processes:
        sys.exit("--global-batch must be a multiple of --num-processes")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(n, *_run(n, model, steps, global_batch, Path(tmp) / str(n))) for n in (1, num_processes)]
    print(f"{'processes':>9} {'wall_s':>8} {'final_loss':>10} {'heldout_mse':>11}")
    for n, wall, m in rows:
        print(f"{n:>9} {wall:>8.1f} {m['final_loss']:>10.4f} {m['heldout_mse']:>11.4f}")
    print(f"speedup {num_processes} processes vs 1 (same global batch {global_batch}, {steps} steps): "
          f"{rows[0][1] / rows[1][1]:.2f}x (cpu count {os.cpu_count()})")
    if save:
        from posttrain.core.report import RESULTS_DIR, save_bench

        run = {"num_processes": num_processes, "steps": steps, "global_batch": global_batch,
               "speedup": round(rows[0][1] / rows[1][1], 2), "wall_s": {str(n): round(w, 1) for n, w, _ in rows}}
        old = REPO / RESULTS_DIR / "launch.json"
        runs = json.loads(old.read_text())["runs"] if old.exists() else []
        same = ("num_processes", "steps", "global_batch")
        runs = [r for r in runs if any(r[k] != run[k] for k in same)] + [run]
        save_bench("launch", {"runs": sorted(runs, key=lambda r: [r[k] for k in same])})


if __name__ == "__main__":
    main()
