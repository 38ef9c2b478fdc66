"""core.live: dvclive files stay byte-stable (no wall time, no params, Trainer steps)."""

from transformers import TrainerControl, TrainerState, TrainingArguments

from posttrain.core.io import read_json
from posttrain.core.live import callback, is_wall_time


def test_wall_time_keys():
    assert all(is_wall_time(k) for k in ("train_runtime", "eval_runtime", "train_samples_per_second",
                                         "eval_steps_per_second", "step_time"))
    assert not any(is_wall_time(k) for k in ("loss", "train_loss", "eval_loss", "grad_norm", "reward"))


def test_callback_writes_only_stable_values(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path / "scratch"), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    cb = callback(tmp_path / "live")
    cb.on_train_begin(args, state, control)
    for step, loss in ((3, 0.5), (4, 0.25)):  # e.g. logging_steps > 1: the Trainer's step is kept
        state.global_step = step
        cb.on_log(args, state, control, logs={"loss": loss, "step_time": 0.123, "num_tokens": 800.0 * step})
    cb.on_log(args, state, control, logs={"train_loss": 0.375, "train_runtime": 9.9,
                                          "train_samples_per_second": 1.5})
    cb.on_train_end(args, state, control)
    live = tmp_path / "live"
    assert (live / "plots" / "metrics" / "loss.tsv").read_text().splitlines() == ["step\tloss", "3\t0.5", "4\t0.25"]
    # every key keeps its last value; only the curves a person reads are plotted (core.live.CURVES)
    assert read_json(live / "metrics.json") == {"loss": 0.25, "num_tokens": 3200.0, "step": 4,
                                                "train": {"loss": 0.375}}
    assert sorted(p.relative_to(live).as_posix() for p in live.rglob("*") if p.is_file()) == [
        "metrics.json", "plots/metrics/loss.tsv"]
