"""DPO with LoRA on the policy, optionally density-aware through the weighted sampler.

Same pairs, weights, held-out split (by prefix) and rarity buckets as the reward
model (`posttrain.pref.common`), so DPO's held-out implicit-reward accuracy and margin
are comparable with the RM's pairwise accuracy. The reference model is the
policy with the LoRA adapter disabled (peft), so no second copy is loaded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posttrain.core.adapters import lora_config, save_adapter
from posttrain.core.io import atomic_path, write_json
from posttrain.core.live import callback
from posttrain.core.settings import param
from posttrain.core.training import TrainSettings, autocast, device_args, fit
from posttrain.core.sharded import full_model
from posttrain.pref.common import PairData, last_logged, load_split
from posttrain.pref.heldout import pair_report, pair_rows
from posttrain.pref.implicit_reward import implicit_rewards
from posttrain.pref.pair_fit import fit_pairs
from posttrain.pref.weighted_sampler import WEIGHT_COLUMN, pair_sampling_weights, weighted_trainer_class

log = logging.getLogger(__name__)


def dpo_records(pairs: list[dict], density_aware: bool) -> dict:
    """Columns in trl's conversational preference format (+ the sampling weight)."""
    return {
        "prompt": [p["messages"] for p in pairs],
        "chosen": [[{"role": "assistant", "content": p["chosen"]}] for p in pairs],
        "rejected": [[{"role": "assistant", "content": p["rejected"]}] for p in pairs],
        WEIGHT_COLUMN: pair_sampling_weights(pairs, density_aware),
    }


@dataclass(frozen=True)
class DPOSettings:
    """pref_dpo's params (pref.dpo.*); its pairs and split are `PairData` (pref.rm.*)."""

    max_length: int = param("tokens per prompt + answer; longer pairs are cut, one prompt for both", min=1)
    max_steps: int = param("optimizer steps", min=1)
    batch_size: int = param("pairs per step and process", min=1)
    eval_batch_size: int = param("held-out pairs per implicit-reward batch", min=1)
    grad_accum: int = param("gradient accumulation steps", min=1)
    lr: float = param("learning rate", min=0, min_open=True)
    beta: float = param("DPO's KL strength", min=0, min_open=True)
    lora_r: int = param("LoRA rank (the reference is the policy without its adapter)", min=1)
    lora_alpha: int = param("LoRA alpha", min=1)
    lora_dropout: float = param("LoRA dropout", min=0, max=1, max_open=True)
    lora_layers: int = param("LoRA only on the top N decoder layers (0 = all)", min=0)
    seed: int = param("training seed")


def train_dpo(pairs_path, ids_path, weights_path, policy, out_dir, s: DPOSettings, data: PairData,
              t: TrainSettings, *, live_dir) -> dict:
    """Train a DPO LoRA adapter, save it to `out_dir`, curves to `live_dir` (dvclive); return
    {"metrics", "predictions"} (None on ranks other than the main one under `accelerate launch`).

    `max_pairs`, `heldout_fraction`, `split_seed`, `bucket_quantile` define the data split and
    must match the reward model's to be evaluated on its held-out prompts; `s.seed` is training."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    if not s.lora_r:
        raise ValueError("pref.dpo.lora_r must be > 0: the reference model is the policy without its adapter")
    set_seed(s.seed)
    # Same cap, split function and split seed as pref_rm: the held-out prompts are the same ones.
    _, pairs, train, held, weights, thresholds = load_split(
        pairs_path, ids_path, weights_path, data)

    tok = AutoTokenizer.from_pretrained(str(policy))

    def build():
        m = AutoModelForCausalLM.from_pretrained(str(policy), dtype=torch.float32)
        m.config.pad_token_id = tok.pad_token_id
        return m

    model = build()
    peft_cfg = lora_config(s.lora_r, s.lora_alpha, s.lora_dropout, "CAUSAL_LM", top_layers=s.lora_layers, model=model)

    # Over-long pairs are cut here, one prompt for both answers (posttrain.pref.pair_fit), so
    # trl truncates nothing: it would cut prompt + chosen and prompt + rejected separately.
    train, n_train_cut = fit_pairs(tok, train, s.max_length)
    held, n_held_cut = fit_pairs(tok, held, s.max_length)

    scratch = tempfile.mkdtemp(prefix="pref_dpo_trainer_")
    args = DPOConfig(
        output_dir=scratch, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size, gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.lr, beta=s.beta, max_length=None, logging_steps=1, save_strategy="no",
        report_to="none", seed=s.seed, data_seed=s.seed, lr_scheduler_type="linear",
        **device_args(t))
    trainer = weighted_trainer_class(DPOTrainer)(
        model=model, args=args, train_dataset=Dataset.from_dict(dpo_records(train, data.density_aware)),
        processing_class=tok,
        peft_config=peft_cfg, callbacks=[callback(live_dir)])
    if len(trainer.train_dataset) != len(train):  # trl must not drop pairs behind our back
        raise RuntimeError(f"DPOTrainer kept {len(trainer.train_dataset)} of {len(train)} training pairs")
    longest = max(len(x["prompt_ids"]) + max(len(x["chosen_ids"]), len(x["rejected_ids"]))
                  for x in trainer.train_dataset)
    if longest > s.max_length:  # trl tokenized a fitted pair differently from pair_fit's measure
        raise RuntimeError(f"a training pair has {longest} tokens after fitting to max_length={s.max_length}")
    try:
        run = fit(trainer, t)  # the reference pass (adapter off) reuses the frozen trunk too

        from accelerate.utils import gather_object

        drawn = gather_object(trainer.drawn_indices())  # every rank's share of the weighted draw
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from peft import get_peft_model

    policy_model = full_model(trainer, lambda: get_peft_model(build(), peft_cfg))
    if policy_model is None:
        return None  # rank 0 evaluates, saves and reports

    # Every held-out pair, scored directly (no trl loss pass): 2 sequences x policy + reference.
    policy_model.eval()
    with autocast(t):
        rw = implicit_rewards(policy_model, tok, held, beta=s.beta, max_length=s.max_length,
                              batch_size=s.eval_batch_size)
    heldout = pair_report(rw["chosen"], rw["rejected"], held, thresholds, seed=data.seed, prefix="reward_",
                          extra={"identical_after_truncation_fraction": rw["identical"]})  # 3 eval blocks
    predictions = pair_rows(rw["chosen"], rw["rejected"], held, thresholds, score="reward")

    def fill(tmp: Path) -> None:
        save_adapter(policy_model, tmp)  # the LoRA adapter only
        tok.save_pretrained(tmp)
        write_json(tmp / "posttrain_source.json", {"base_model": "data/models/policy", "kind": "dpo_lora",
                                                   "density_aware": bool(data.density_aware)})

    with atomic_path(out_dir, directory=True) as tmp:
        fill(tmp)
    metrics = {
        "density_aware": bool(data.density_aware),
        "pairs": {"used": len(pairs), "train": len(train), "heldout": len(held),
                  "longer_than_max_length": n_train_cut + n_held_cut,
                  "heldout_identical_after_truncation": int(np.sum(rw["identical"])),
                  "train_per_source": dict(sorted(Counter(p["src"] for p in train).items()))},
        **heldout,
        "train": {"steps": int(trainer.state.global_step), "world_size": int(args.world_size), "draws": len(drawn),
                  "runtime_s": last_logged(trainer.state.log_history, "train_runtime"), **run},
    }
    return {"metrics": metrics, "predictions": predictions}
