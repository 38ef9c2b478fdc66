"""Training curves through dvclive: the one Trainer callback every training stage uses.

`callback(dir)` returns transformers' `DVCLiveCallback` writing to `dir`
(`metrics.json` with the last value of every logged key, `plots/metrics/<key>.tsv`
per key). dvc.yaml declares those as the stage's `metrics:` / `plots:` (cache: false),
so `dvc exp show` and `dvc plots` read them, and they grow step by step while
`dvc repro` / `dvc exp run` is running.

Inside a stage dvclive must not act as its own experiment tracker: the Live is made
with `save_dvc_exp=False` (no experiment of its own) and `dvcyaml=None` (no dvc.yaml
of its own; the project's dvc.yaml declares the files). Only rank 0 makes a Live:
`Live()` clears its folder, and one writer is what DVC expects.

The files are byte-stable for a seeded run: no timestamps (dvclive's default), the
dvclive step is the Trainer's global step, the wall-time keys (`train_runtime`,
`*_per_second`, GRPO's `step_time`) are not logged, and neither are the TrainingArguments
(dvclive's `params.yaml` would hold the scratch output_dir, a fresh temp name per run;
DVC already records the stage's params from the project's params.yaml).

Every logged key keeps its last value in `metrics.json`, but only the `CURVES` a person reads
(loss, gradient norm, learning rate, each trainer's accuracy / margin / reward) get a plot
file: trl logs ~20 keys per step (token counts, FLOPs, per-token log-prob stats), and plotting
them all buried the curves in ~90 files.
"""

from __future__ import annotations

from pathlib import Path

from posttrain.core.launch import is_main_process


def is_wall_time(key: str) -> bool:
    """Log keys that measure elapsed time, different on every run: the Trainer's
    `train_runtime` / `*_per_second`, trl GRPO's `step_time`."""
    return key.endswith(("_runtime", "_per_second", "step_time"))


# Raw Trainer / trl log keys that are plotted (`plots/metrics/<key>.tsv`).
CURVES = frozenset({
    "loss", "eval_loss", "grad_norm", "learning_rate",                   # every trainer
    "rewards/accuracies", "rewards/margins",                               # DPO
    "accuracy", "margin",                                                  # reward model
    "reward", "reward_std", "kl",                                          # GRPO
})


def callback(live_dir):
    """A `transformers.integrations.DVCLiveCallback` writing to `live_dir` on rank 0."""
    from transformers.integrations import DVCLiveCallback

    class StableDVCLiveCallback(DVCLiveCallback):
        def setup(self, args, state, model):
            self._initialized = True  # no log_params: see the module docstring

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if self.live is None:
                return
            from dvclive.plots import Metric
            from dvclive.utils import standardize_metric_name

            self.live.step = state.global_step
            for key, value in (logs or {}).items():
                if not is_wall_time(key) and Metric.could_log(value):
                    self.live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value,
                                         plot=key in CURVES)
            self.live.next_step()

    live = None
    if is_main_process():
        from dvclive import Live

        Path(live_dir).mkdir(parents=True, exist_ok=True)
        live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)
    return StableDVCLiveCallback(live=live)
