"""Proof verifier: sequence regression on a solution's score, trained through the collators.

Data, as (problem, proof, score) records with an id and a problem id:

- `reason_filter` grades (`data/reason/graded.jsonl` joined to
  `data/reason/problems.jsonl` on `problem_id`): score = grade (1 correct, 0 not).
- CHAMP's annotated model solutions (`fws_annotations` of every problem: one
  model-written solution plus the character span of its first wrong step, or no
  span when the solution is fully correct). Score mapping:
      steps  = the solution's non-blank lines, in order
      k      = index of the step holding the first wrong character (`start_idx`)
      score  = k / len(steps)      (fraction of steps before the first wrong step)
      score  = 1.0                 when there is no first wrong step (fully correct)
  So a solution that goes wrong in its first step scores 0, one that goes wrong
  half-way scores ~0.5. Unannotated CHAMP conversations carry no grade and are
  not used.

Model: `AutoModelForSequenceClassification(num_labels=1, problem_type="regression")`
on the policy folder (a zero-initialized scalar head on the LM's last
non-pad token; MSE loss), trained with transformers' `Trainer`
on length-grouped batches of `VerificationCollator`. CPU-sized
defaults: `num_layers` keeps only the bottom N blocks of the policy as the
backbone, and only the top `trainable_layers` of them (+ final norm + head) are
trained (0 trains all).

Evaluation is held out by problem (no problem has solutions on both sides).
Metrics: MSE against the score, and AUC / accuracy for "fully correct"
(score == 1) with the prediction thresholded at `threshold`. Held-out scores are
written through `InferenceCollator`, so each carries its sample's fields.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from posttrain.core.io import DataError, iter_jsonl, read_json
from posttrain.core.launch import world_size
from posttrain.core.settings import param
from posttrain.core.training import TrainSettings, device_args, fit

log = logging.getLogger(__name__)


# -- data -----------------------------------------------------------------------

def solution_steps(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the non-blank lines of `text`."""
    spans, pos = [], 0
    for line in text.split("\n"):
        if line.strip():
            spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    return spans


def first_wrong_step_score(text: str, start_idx: int | None) -> tuple[float, int, int | None]:
    """(score, n_steps, first_wrong_step_index) under the mapping in the module docstring."""
    steps = solution_steps(text)
    if start_idx is None:
        return 1.0, len(steps), None
    if not steps:
        return 0.0, 0, 0
    k = next((i for i, (_, end) in enumerate(steps) if start_idx < end), len(steps) - 1)
    return k / len(steps), len(steps), k


def champ_examples(path, limit: int | None = None) -> list[dict]:
    """CHAMP's annotated solutions as verifier records (sorted by id)."""
    data = read_json(path)
    problems = data.get("problems") if isinstance(data, dict) else None
    if not isinstance(problems, dict):
        raise DataError(path, "expected an object with a 'problems' mapping", field="problems")
    out = []
    for pid in sorted(problems):
        p = problems[pid]
        problem = p.get("_text")
        if not isinstance(problem, str):
            raise DataError(path, f"problem {pid}: missing text", field="_text")
        for key in sorted(p.get("fws_annotations") or {}):
            ann = p["fws_annotations"][key]
            text, start = ann.get("text"), ann.get("start_idx")
            if not isinstance(text, str) or not (start is None or isinstance(start, int)):
                raise DataError(path, f"problem {pid}, annotation {key!r}: need text and int|null start_idx",
                                field="fws_annotations")
            score, n_steps, k = first_wrong_step_score(text, start)
            out.append({
                "id": f"champ/{pid}/{key}", "problem_id": f"champ/{pid}", "source": "champ", "origin": "champ",
                "domain": "math", "category": p.get("category"), "author": ann.get("author"),
                "problem": problem, "proof": text, "score": score, "n_steps": n_steps,
                "first_wrong_step": k,
            })
    return _cap(out, limit)


def graded_examples(graded_path, problems_path, limit: int | None = None) -> list[dict]:
    """reason_filter's graded samples joined with their problems (score = grade)."""
    problems = {}
    for line, rec in iter_jsonl(problems_path, required=("id",)):
        text = rec.get("problem") or rec.get("prompt")
        if not isinstance(text, str):
            raise DataError(problems_path, "missing problem text", line=line, field="problem")
        problems[rec["id"]] = text
    out = []
    for line, rec in iter_jsonl(graded_path, required=("id", "problem_id", "text", "grade")):
        if rec["grade"] not in (0, 1) or isinstance(rec["grade"], bool):
            raise DataError(graded_path, f"grade must be 0 or 1, got {rec['grade']!r}", line=line, field="grade")
        if rec["problem_id"] not in problems:
            raise DataError(graded_path, f"problem_id {rec['problem_id']!r} not in {problems_path}",
                            line=line, field="problem_id")
        if not isinstance(rec["text"], str):
            raise DataError(graded_path, "must be a string", line=line, field="text")
        meta = {k: v for k, v in rec.items() if k not in ("text", "grade")}
        out.append({**meta, "source": rec.get("source", "reason"), "origin": "graded",
                    "problem": problems[rec["problem_id"]],
                    "proof": rec["text"], "score": float(rec["grade"])})
    out.sort(key=lambda r: r["id"])
    return _cap(out, limit)


def _cap(records: list[dict], limit: int | None) -> list[dict]:
    """At most `limit` records, whole problems kept together, chosen by a fixed shuffle."""
    if not limit or len(records) <= limit:
        return records
    pids = sorted({r["problem_id"] for r in records})
    random.Random(0).shuffle(pids)
    by_pid: dict[str, list[dict]] = {}
    for r in records:
        by_pid.setdefault(r["problem_id"], []).append(r)
    out: list[dict] = []
    for pid in pids:
        if len(out) + len(by_pid[pid]) > limit:
            continue
        out.extend(by_pid[pid])
    return sorted(out, key=lambda r: r["id"])


def problem_key(record: dict) -> str:
    """Split key: the whitespace-normalized problem text, so one problem reached through two
    sources (e.g. a CHAMP problem also collected by reason_collect) lands on one side."""
    return " ".join(record["problem"].split())


def split_by_problem(records: Sequence[dict], heldout_frac: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, heldout): a seeded fraction of problems goes wholly to held-out."""
    if not 0 < heldout_frac < 1:
        raise ValueError(f"heldout_frac must be in (0, 1), got {heldout_frac}")
    pids = sorted({problem_key(r) for r in records})
    if len(pids) < 2:
        raise ValueError(f"need solutions of at least 2 problems to hold some out, got {len(pids)}")
    random.Random(seed).shuffle(pids)
    n_held = min(len(pids) - 1, max(1, round(heldout_frac * len(pids))))
    held = set(pids[:n_held])
    train = [r for r in records if problem_key(r) not in held]
    heldout = [r for r in records if problem_key(r) in held]
    return train, heldout


def run_split(records: Sequence[dict], heldout_frac: float, seed: int,
              validation: float | None = None) -> tuple[list[dict], list[dict]]:
    """(train, scored): the held-out problems, or with `validation` a fraction of the training
    problems (the held-out ones dropped), split by problem like `split_by_problem`."""
    train, heldout = split_by_problem(records, heldout_frac, seed)
    return split_by_problem(train, validation, seed) if validation is not None else (train, heldout)


# -- model ------------------------------------------------------------------------

def load_regressor(model_dir, *, trainable_layers: int, seed: int, num_layers: int):
    """(model, tokenizer): a 1-output regression head on the policy folder's LM.

    `num_layers` > 0 keeps only the bottom `num_layers` transformer blocks (a shallower,
    much cheaper backbone for CPU runs); 0 keeps them all. Only the top `trainable_layers`
    of them (+ final norm + head) are trained, 0 trains all (`core.models.shrink_layers`).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.core.models import shrink_layers

    torch.manual_seed(seed)  # the new head is randomly initialized inside from_pretrained
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{model_dir}: tokenizer has no pad token (the base_models folder sets one)")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, problem_type="regression", dtype=torch.float32)
    # The head pools the last non-pad token, found by pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    # A random head on LM hidden states (norm ~50-100) starts with predictions of std ~1-2
    # on a [0, 1] target and short CPU runs never recover; a zero head starts at 0 and
    # moves smoothly.
    torch.nn.init.zeros_(model.score.weight)
    shrink_layers(model, num_layers=num_layers, trainable_layers=trainable_layers)
    return model, tokenizer


def token_lengths(tokenizer, records: Sequence[dict], max_length: int) -> list[int]:
    from posttrain.reason.collators import verification_text

    texts = [verification_text(r["problem"], r["proof"]) for r in records]
    return [min(len(ids), max_length) for ids in tokenizer(texts)["input_ids"]]


def train(model, tokenizer, records: Sequence[dict], *, max_steps: int, batch_size: int, lr: float,
          max_length: int, seed: int, warmup_ratio: float, weight_decay: float, padding: str,
          chat_template: bool, live_dir, machine: TrainSettings, grad_clip: float = 1.0,
          rebuild=None) -> tuple[list[dict], object, dict]:
    """Regression fine-tuning for `max_steps` optimizer steps with transformers' Trainer;
    returns (the loss log [{step, epoch, loss}], the trained model with full weights on the main
    process, else None, the run's facts from `core.training.fit`) and writes the curves to
    `live_dir` (dvclive). `machine`: precision and the frozen trunk.

    Batches come from the Trainer's length-grouped sampler (`train_sampling_strategy=
    "group_by_length"` on a precomputed `length` column) through `VerificationCollator`.
    One process, or DDP under `accelerate launch` (each rank takes its own share of the
    batches; the logged loss is the mean over ranks). `model` is trained in place on
    every rank; under FSDP / ZeRO-3 the full weights are gathered into `rebuild()` (an
    untrained copy, e.g. `load_regressor` again), see posttrain.core.sharded."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from posttrain.core.live import callback
    from posttrain.reason.collators import VerificationCollator

    if not records:
        raise ValueError("no training records")
    collator = VerificationCollator(tokenizer, padding=padding, max_length=max_length, chat_template=chat_template)
    # Only the collator's fields: records carry metadata of mixed types that Arrow would refuse.
    ds = Dataset.from_dict({"problem": [r["problem"] for r in records], "proof": [r["proof"] for r in records],
                            "score": [float(r["score"]) for r in records],
                            "length": token_lengths(tokenizer, records, max_length)})
    scratch = tempfile.mkdtemp(prefix="reason_verifier_trainer_")  # nothing is saved there
    args = TrainingArguments(
        output_dir=scratch, max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, weight_decay=weight_decay, lr_scheduler_type="linear",
        warmup_steps=math.ceil(warmup_ratio * max_steps), max_grad_norm=grad_clip,
        train_sampling_strategy="group_by_length", length_column_name="length",
        # The collator needs the raw text columns, which the model's forward does not take.
        remove_unused_columns=False,
        logging_steps=1, save_strategy="no", report_to="none", seed=seed, data_seed=seed,
        dataloader_num_workers=0, disable_tqdm=False, **device_args(machine))
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                      callbacks=[callback(live_dir)])
    try:
        run = fit(trainer, machine)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from posttrain.core.sharded import full_model

    trained = full_model(trainer, rebuild)
    if trained is not None:
        trained.eval()
    return [{"step": int(h["step"]), "epoch": float(h["epoch"]), "loss": round(float(h["loss"]), 6)}
            for h in trainer.state.log_history if "loss" in h], trained, run


def predict(model, tokenizer, records: Sequence[dict], *, batch_size: int, max_length: int,
            chat_template: bool) -> list[dict]:
    """Each record's fields (via InferenceCollator metadata) + `verifier_score`, sorted by id."""
    import torch
    from torch.utils.data import DataLoader

    from posttrain.reason.collators import InferenceCollator

    collator = InferenceCollator(tokenizer, max_length=max_length, chat_template=chat_template)
    # Batches of similar lengths (little padding), longest first: any out-of-memory shows at once.
    lengths = token_lengths(tokenizer, records, max_length)
    order = sorted(range(len(records)), key=lambda i: -lengths[i])
    loader = DataLoader([records[i] for i in order], batch_size=batch_size, collate_fn=collator)
    out = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device)).logits
            for meta, value in zip(batch["metadata"], logits[:, 0].tolist()):
                out.append({**meta, "verifier_score": round(value, 6)})
    return sorted(out, key=lambda r: r["id"])


# -- metrics ----------------------------------------------------------------------

def is_correct(score: float) -> bool:
    return score >= 1.0 - 1e-9


def score_metrics(scored: Iterable[dict], threshold: float = 0.5, train_mean: float | None = None, *,
                  seed: int) -> dict:
    """MSE vs the score; AUC and accuracy for "fully correct" at `threshold`; each with n and a
    problem-clustered bootstrap CI (`posttrain.core.stats`), and MSE and accuracy also as paired
    differences against their baselines (a constant baseline has AUC 0.5). No rows: nulls."""
    import numpy as np

    from posttrain.core import stats

    rows = prediction_rows(scored, threshold, train_mean)
    col = lambda k: np.array([r[k] for r in rows], dtype=np.float64)  # noqa: E731
    y, p, label, hit, base_hit = col("score"), col("verifier_score"), col("label"), col("hit"), col("baseline_hit")
    specs = {"mse": ("mse", [p, y]), "accuracy": ("proportion", [hit]),
             # Always answering the majority class: the bar accuracy must clear.
             "baseline_accuracy_majority": ("proportion", [base_hit]),
             "accuracy_minus_baseline": ("mean", [hit], [base_hit]),
             "auc": ("auc", [label, p]),
             # Mean target vs mean prediction: a calibration check, each with its CI.
             "mean_score": ("mean", [y]), "mean_prediction": ("mean", [p]),
             "correct_fraction": ("proportion", [label])}
    if train_mean is not None:
        # What predicting the training mean would score: the bar a verifier must clear.
        base = np.full(len(rows), float(train_mean))
        specs.update({"baseline_mse_train_mean": ("mse", [base, y]), "mse_minus_baseline": ("mse", [p, y], [base, y])})
    m = stats.report(specs, [r["problem_id"] for r in rows], seed=seed)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}


def prediction_rows(scored: Iterable[dict], threshold: float, train_mean: float | None) -> list[dict]:
    """Per held-out record: score, prediction, "fully correct" label, whether the verifier and
    the majority-class baseline got it right; sorted by id (`posttrain compare` input)."""
    scored = list(scored)
    labels = [int(is_correct(r["score"])) for r in scored]
    majority = int(2 * sum(labels) >= len(labels))
    rows = [{"id": r["id"], "problem_id": r["problem_id"], "origin": r.get("origin"), "score": r["score"],
             "verifier_score": r["verifier_score"], "label": y, "hit": int((r["verifier_score"] >= threshold) == y),
             "baseline_hit": int(y == majority),
             "baseline_score": None if train_mean is None else round(float(train_mean), 6)}
            for r, y in zip(scored, labels)]
    return sorted(rows, key=lambda r: str(r["id"]))


def heldout_predictions(train: Sequence[dict], scored: Sequence[dict], threshold: float) -> list[dict]:
    """`prediction_rows` of the held-out records, the baseline being the training mean score."""
    return prediction_rows(scored, threshold, sum(r["score"] for r in train) / len(train))


def evaluate(scored: Sequence[dict], threshold: float, train_mean: float, *, seed: int) -> dict:
    """Eval blocks `heldout` (overall) and `heldout_by_origin` (one block per origin: champ / graded)."""
    return {"heldout": score_metrics(scored, threshold, train_mean, seed=seed),
            "heldout_by_origin": {o: score_metrics([r for r in scored if r["origin"] == o], threshold, train_mean,
                                                   seed=seed) for o in sorted({r["origin"] for r in scored})}}


def score_stats(records: Sequence[dict]) -> dict:
    """What a data split holds: records, problems, fully correct records. A description of
    the data; the held-out estimates (mean score included, with its CI) are `score_metrics`."""
    scores = [r["score"] for r in records]
    return {"records": len(records), "problems": len({r["problem_id"] for r in records}),
            "correct": sum(is_correct(s) for s in scores)}


def load_records(*, champ: str | None, graded: str | Path | None, problems: str | Path | None,
                 max_champ: int | None, max_graded: int | None) -> tuple[list[dict], dict]:
    """All verifier records (CHAMP and/or graded) and a per-source count."""
    from posttrain.core import assets

    records, counts = [], {}
    if champ:
        src = assets.resolve(champ)
        if not isinstance(src, Path):
            raise FileNotFoundError(f"CHAMP source {champ!r} is neither an asset nor a local file")
        recs = champ_examples(src, max_champ)
        records += recs
        counts["champ"] = score_stats(recs)
    if graded:
        graded, problems = Path(graded), Path(problems) if problems else None
        for p, what in ((graded, "graded solutions"), (problems, "problems")):
            if p is None or not p.exists():
                raise FileNotFoundError(
                    f"{p}: {what} not found. Run reason_filter first (dvc repro reason_filter), "
                    "or train on CHAMP only with reason.verifier.use_graded=false.")
        recs = graded_examples(graded, problems, max_graded)
        records += recs
        counts["graded"] = score_stats(recs)
    if not records:
        raise ValueError("no verifier data: enable CHAMP and/or graded solutions")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate record ids across verifier sources")
    return records, counts


def summarize(model, train: list[dict], heldout: list[dict], scored: list[dict], history: list[dict],
              counts: dict, threshold: float, *, seed: int, run: dict | None = None) -> dict:
    """The reason_verifier metrics: held-out quality vs baselines, data and training stats."""
    train_mean = sum(r["score"] for r in train) / len(train)
    return {
        **evaluate(scored, threshold, train_mean, seed=seed),
        "data": {"sources": counts, "train": score_stats(train), "heldout": score_stats(heldout)},
        # the loss curve is dvclive's (dvclive/reason_verifier); this file holds what was evaluated
        "train": {"steps": len(history), "world_size": world_size(),
                  "n_layers": model.config.num_hidden_layers,
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "n_trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  **(run or {})},
    }


@dataclass(frozen=True)
class VerifierSettings:
    """reason_verifier's params (reason.verifier.*)."""

    use_graded: bool = param("train on reason_filter's graded solutions too (false: CHAMP only)")
    champ: str = param("CHAMP asset name or v0.json path; 'none' skips CHAMP")
    max_champ: int = param("cap on CHAMP records, whole problems kept together (0 = all)", min=0)
    max_graded: int = param("cap on graded records (0 = all)", min=0)
    heldout_frac: float = param("fraction of problems held out (split by problem text)", min=0, max=1,
                                min_open=True, max_open=True)
    seed: int = param("seed of the split, the head's init and training")
    num_layers: int = param("keep only the bottom N transformer blocks of the policy (0 = all)", min=0)
    trainable_layers: int = param("train the top N kept blocks + norm + head (0 = all)", min=0)
    max_length: int = param("tokens per problem + solution", min=1)
    padding: str = param("collator padding", choices=("longest", "max_length"))
    chat_template: bool = param("render texts as a user turn of the tokenizer's chat template")
    batch_size: int = param("records per step and process", min=1)
    eval_batch_size: int = param("held-out records per scoring batch", min=1)
    max_steps: int = param("optimizer steps", min=1)
    lr: float = param("learning rate", min=0, min_open=True)
    warmup_ratio: float = param("fraction of steps warming up", min=0, max=1, max_open=True)
    weight_decay: float = param("AdamW weight decay", min=0)
    threshold: float = param('prediction >= threshold counts as "fully correct" for accuracy', min=0, max=1)


def verifier_run(model_dir, graded, problems, s: VerifierSettings, t: TrainSettings, *, live_dir,
                 validation: float | None = None) -> dict | None:
    """reason_verifier's work: records loaded and split by problem, the regressor trained and
    scored on the held-out problems -> {model, tokenizer, scored, metrics, predictions}; None on
    ranks other than the main one under `accelerate launch`. `validation` (a fraction): the
    held-out problems are dropped and the training problems split again, that fraction of them
    scored instead (learning curves: nothing tuned on the held-out problems)."""
    import time

    t0 = time.perf_counter()
    records, counts = load_records(
        champ=None if s.champ.lower() == "none" else s.champ,
        graded=graded if s.use_graded else None, problems=problems if s.use_graded else None,
        max_champ=s.max_champ or None, max_graded=s.max_graded or None)
    train_recs, heldout = run_split(records, s.heldout_frac, s.seed, validation)
    log.info("records: %d train / %d held-out (%s)", len(train_recs), len(heldout), counts)

    def build():
        return load_regressor(model_dir, trainable_layers=s.trainable_layers, seed=s.seed, num_layers=s.num_layers)

    model, tokenizer = build()
    history, model, run = train(model, tokenizer, train_recs, max_steps=s.max_steps, batch_size=s.batch_size, lr=s.lr,
                           max_length=s.max_length, seed=s.seed, warmup_ratio=s.warmup_ratio,
                           weight_decay=s.weight_decay, padding=s.padding, chat_template=s.chat_template,
                           live_dir=live_dir, machine=t, rebuild=lambda: build()[0])
    if model is None:  # another rank of `accelerate launch`; rank 0 evaluates and writes
        return None
    t_train = time.perf_counter() - t0
    scored = predict(model, tokenizer, heldout, batch_size=s.eval_batch_size, max_length=s.max_length,
                     chat_template=s.chat_template)
    metrics = summarize(model, train_recs, heldout, scored, history, counts, s.threshold, seed=s.seed, run=run)
    # Wall time goes to the log, not the metrics: outputs stay byte-identical across runs.
    log.info("train %.1fs, total %.1fs; held-out %s", t_train, time.perf_counter() - t0,
             {k: metrics["heldout"].get(k) for k in ("n", "auc", "accuracy", "mse", "baseline_mse_train_mean")})
    return {"model": model, "tokenizer": tokenizer, "scored": scored, "metrics": metrics,
            "predictions": heldout_predictions(train_recs, scored, s.threshold)}
