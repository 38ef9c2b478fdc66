"""Reward model on preference pairs: uniform or density-aware (Bradley-Terry).

Data flow: `pairs_all.jsonl` -> per-pair prefix id (md5 of the first user
message) -> the prefix's density weight from `ids.json` + `density_weights.npy`
-> held-out split *by prefix* (a prompt is never on both sides) -> chat-template
token ids (prefix rendered as a conversation + the answer as the assistant turn)
-> trl `RewardTrainer` (Bradley-Terry loss) with a `WeightedDistributedSampler`:
draws proportional to the prefix weight when density-aware, uniform otherwise.

The held-out evaluation scores every pair itself (pairwise accuracy overall,
per source, and in rarity buckets defined by density-weight quantiles over all
prefixes), so uniform and density-aware runs are judged on identical pairs and
identical buckets.

What this trainer shares with `posttrain.pref.dpo` and `posttrain.pref.grpo` (pairs,
weights, split, buckets, rendering, scoring) lives in `posttrain.pref.common`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posttrain.core.adapters import lora_config
from posttrain.core.io import atomic_path, dumps
from posttrain.core.live import callback
from posttrain.core.models import shrink_layers
from posttrain.core.settings import param
from posttrain.core.training import TrainSettings, autocast, device_args, fit
from posttrain.core.sharded import full_model
from posttrain.pref.common import (PairData, bucket_of, last_logged, load_split, render_ids,
                                   score_ids)
from posttrain.pref.heldout import pair_report, pair_rows
from posttrain.pref.weighted_sampler import (WEIGHT_COLUMN, draw_spread, pair_sampling_weights,
                                             weighted_trainer_class)

log = logging.getLogger(__name__)


def render_pair_ids(tokenizer, messages: list[dict], chosen: str, rejected: str,
                    max_length: int) -> tuple[list[int], list[int], bool]:
    """`render_ids` of both answers to one prefix, truncated together: when the longer one is
    over `max_length`, both lose the same leading tokens of their shared prefix, so the two
    are scored on the same context and still begin alike (the frozen trunk then runs that
    prefix once for both). Where the cut would reach into an answer, each keeps its own end
    as `render_ids` does. (chosen ids, rejected ids, truncated)."""
    c, _ = render_ids(tokenizer, messages, chosen, 0)
    r, _ = render_ids(tokenizer, messages, rejected, 0)
    cut = max(len(c), len(r)) - max_length if max_length else 0
    if cut <= 0:
        return c, r, False
    common = next((i for i, (a, b) in enumerate(zip(c, r)) if a != b), min(len(c), len(r)))
    if cut < common:
        return c[cut:], r[cut:], True
    return c[-max_length:], r[-max_length:], True


def tokenize_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[dict, int]:
    """Columns `chosen_ids`, `rejected_ids` (trl's pre-tokenized reward format); n truncated."""
    cols = {"chosen_ids": [], "rejected_ids": []}
    n_trunc = 0
    for p in pairs:
        c, r, truncated = render_pair_ids(tokenizer, p["messages"], p["chosen"], p["rejected"], max_length)
        cols["chosen_ids"].append(c)
        cols["rejected_ids"].append(r)
        n_trunc += int(truncated)
    return cols, n_trunc


@dataclass(frozen=True)
class RewardSettings:
    """pref_rm's params (pref.rm.*, less the split's, which are `PairData`)."""

    backbone: str = param("model folder or hub id; a sequence-classification head (1 output) is added")
    max_length: int = param("tokens per prefix + answer; longer pairs keep their end, both losing the same prefix tokens", min=1)
    num_layers: int = param("keep the first N decoder layers of the backbone (0 = all)", min=0)
    trainable_layers: int = param("train only the top N kept layers + norm + head (0 = all)", min=0)
    max_steps: int = param("optimizer steps", min=1)
    batch_size: int = param("pairs per step and process", min=1)
    eval_batch_size: int = param("held-out sequences per scoring batch", min=1)
    grad_accum: int = param("gradient accumulation steps", min=1)
    group_by_length: bool = param("length-grouped batches of the (weighted) draw: little padding")
    lr: float = param("learning rate", min=0, min_open=True)
    lora_r: int = param("LoRA rank, merged on save (0 = no LoRA: the trainable layers are fine-tuned)", min=0)
    lora_alpha: int = param("LoRA alpha", min=1)
    train_seed: int = param("training seed (head init, draws); the split and the CIs keep pref.rm.seed")


def train_reward_model(pairs_path, ids_path, weights_path, out_dir, s: RewardSettings, data: PairData,
                       t: TrainSettings, *, live_dir) -> dict:
    """Train the reward model, save it (merged, plain folder) to `out_dir`, return metrics;
    the training curves go to `live_dir` (dvclive).

    Returns {"metrics": {...}, "predictions": [...], "sampling": {...}} (also in out_dir/sampling.json); None on ranks other
    than the main one under `accelerate launch` (they train, then leave the rest to rank 0)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from posttrain.core.io import write_json

    set_seed(s.train_seed)
    n_file, pairs, train, held, weights, thresholds = load_split(
        pairs_path, ids_path, weights_path, data)
    log.info("pref_rm: %d pairs (%d train / %d held-out), density_aware=%s",
             len(pairs), len(train), len(held), data.density_aware)

    tok = AutoTokenizer.from_pretrained(str(s.backbone))

    def build():
        m = AutoModelForSequenceClassification.from_pretrained(str(s.backbone), num_labels=1, dtype=torch.float32)
        m.config.pad_token_id = tok.pad_token_id
        shrink_layers(m, num_layers=s.num_layers, trainable_layers=s.trainable_layers)
        return m

    model = build()

    cols, n_trunc_train = tokenize_pairs(tok, train, s.max_length)
    sample_w = pair_sampling_weights(train, data.density_aware)
    # a pair pads to its longer side: chosen and rejected go through the model in one batch
    lengths = [max(len(c), len(r)) for c, r in zip(cols["chosen_ids"], cols["rejected_ids"])]
    train_ds = Dataset.from_dict({**cols, WEIGHT_COLUMN: sample_w, "length": lengths})

    scratch = tempfile.mkdtemp(prefix="pref_rm_trainer_")  # nothing is saved there (save_strategy=no)
    args = RewardConfig(
        output_dir=scratch,
        max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum, learning_rate=s.lr, max_length=s.max_length,
        logging_steps=1, save_strategy="no", report_to="none", seed=s.train_seed, data_seed=s.train_seed,
        disable_tqdm=False, lr_scheduler_type="linear", warmup_steps=0,
        # length-grouped weighted draws (pref.weighted_sampler): little padding
        train_sampling_strategy="group_by_length" if s.group_by_length else "random", length_column_name="length",
        **device_args(t))
    trainer_cls = weighted_trainer_class(RewardTrainer)
    peft = lora_config(s.lora_r, s.lora_alpha, 0.0, "SEQ_CLS")
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          peft_config=peft, callbacks=[callback(live_dir)])
    if len(trainer.train_dataset) != len(train_ds):
        raise RuntimeError("RewardTrainer dropped pairs despite pre-truncation")
    try:
        run = fit(trainer, t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # Draws of every rank: together one weighted draw (collective, so before rank 0 goes on alone).
    from accelerate.utils import gather_object

    drawn = gather_object(trainer.drawn_indices())
    from peft import get_peft_model

    model = full_model(trainer, lambda: get_peft_model(build(), peft) if peft else build())
    if model is None:
        return None  # rank 0 evaluates, saves and reports
    if s.lora_r:
        model = model.merge_and_unload()
    model.eval()

    # Held-out pairwise accuracy, scored by us (same ids as training, no filtering).
    hcols, n_trunc_held = tokenize_pairs(tok, held, s.max_length)
    with autocast(t):
        rc = score_ids(model, tok, hcols["chosen_ids"], s.eval_batch_size)
        rr = score_ids(model, tok, hcols["rejected_ids"], s.eval_batch_size)
    heldout = pair_report(rc, rr, held, thresholds, seed=data.seed)

    # Spread of weights actually used: draws per pair in the rare vs common buckets.
    counts = np.bincount(np.asarray(drawn, dtype=np.int64), minlength=len(train))
    tb = np.array([bucket_of(p["density"], thresholds) for p in train])
    sw = np.asarray(sample_w, dtype=np.float64)
    spread = draw_spread(counts, tb == "rare", tb == "common")
    spread["expected_rare_vs_common_ratio"] = (
        float(sw[tb == "rare"].mean() / sw[tb == "common"].mean())
        if (tb == "rare").any() and (tb == "common").any() else None)
    spread["weight_max_over_min"] = float(sw.max() / sw.min()) if sw.min() > 0 else None
    # Kish effective sample size of the sampling distribution, as a fraction of n.
    spread["effective_sample_fraction"] = float(sw.sum() ** 2 / (sw ** 2).sum() / len(sw))
    # The contract is per prompt: draws of a rare prompt (all its pairs) vs a common one.
    pids = sorted({p["prefix_id"] for p in train})
    pix = {pid: i for i, pid in enumerate(pids)}
    per_prompt = np.bincount([pix[p["prefix_id"]] for p in train], weights=counts, minlength=len(pids))
    bucket_by_pid = {p["prefix_id"]: b for p, b in zip(train, tb)}
    pb = np.array([bucket_by_pid[pid] for pid in pids])
    spread["prompts"] = draw_spread(per_prompt, pb == "rare", pb == "common")

    train_bucket_counts = Counter(tb.tolist())
    metrics = {
        "density_aware": bool(data.density_aware),
        "pairs": {"total_file": n_file, "used": len(pairs), "train": len(train),
                  "heldout": len(held), "train_prefixes": len({p["prefix_id"] for p in train}),
                  "heldout_prefixes": len({p["prefix_id"] for p in held}),
                  "truncated_train": n_trunc_train, "truncated_heldout": n_trunc_held,
                  "train_per_source": dict(sorted(Counter(p["src"] for p in train).items())),
                  "train_buckets": {b: train_bucket_counts.get(b, 0) for b in ("rare", "middle", "common")}},
        **heldout,  # heldout, heldout_per_source, heldout_buckets
        "train": {"steps": int(trainer.state.global_step), "world_size": int(args.world_size),
                  "runtime_s": last_logged(trainer.state.log_history, "train_runtime"), **run},
    }

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # The held-out prefixes travel with the RM so GRPO uses prompts it never saw.
        write_json(tmp / "split.json", {
            "heldout_prefix_ids": sorted({p["prefix_id"] for p in held}),
            "train_prefix_ids": sorted({p["prefix_id"] for p in train}), "seed": data.seed,
            "rarity_thresholds": {"common_max": thresholds[0], "rare_min": thresholds[1]}})
        # The sampler's realized spread: a fact of this training run, not an estimate, so it
        # travels with the model rather than in the eval metrics.
        write_json(tmp / "sampling.json", spread)
        write_json(tmp / "posttrain_source.json", {"backbone": str(s.backbone), "kind": "reward_model",
                                                   "num_layers": int(model.config.num_hidden_layers),
                                                   "density_aware": bool(data.density_aware)})

    predictions = pair_rows(rc, rr, held, thresholds)
    # Metrics first, model last: a value JSON cannot hold (NaN) fails here, before
    # anything is saved, instead of after the model folder already looks finished.
    dumps({"metrics": metrics, "predictions": predictions, "sampling": spread})
    with atomic_path(out_dir, directory=True) as tmp:
        fill(tmp)
    return {"metrics": metrics, "predictions": predictions, "sampling": spread}

