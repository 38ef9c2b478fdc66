"""GRPO with LoRA on the policy, rewarded by the trained reward model.

Prompts are the prefixes the reward model held out (its `split.json`), so the RM
scores answers to prompts it never trained on. Those held-out prefixes are split
again: GRPO trains on one part and the before/after measurement (greedy
completions scored by the RM) uses the other, so "after" is not measured on
prompts GRPO optimized.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posttrain.core import stats
from posttrain.core.adapters import lora_config, save_adapter
from posttrain.core.io import DataError, atomic_path, iter_jsonl, read_json, write_json, write_jsonl
from posttrain.core.launch import is_main_process
from posttrain.core.settings import param
from posttrain.core.training import TrainSettings, autocast, device_args, fit
from posttrain.core.sharded import full_model
from posttrain.core.live import callback
from posttrain.pref.common import first_logged, last_logged, load_reward_model, render_ids, score_ids
from posttrain.pref.pairs import prefix_id

log = logging.getLogger(__name__)


def load_prefixes(path) -> dict[str, list[dict]]:
    """prefix_id -> prefix messages, from `prefixes_all.jsonl` (ids checked against the md5 rule)."""
    out = {}
    for line, rec in iter_jsonl(path, required=("prefix_id", "prefix")):
        msgs = rec["prefix"].get("messages") if isinstance(rec["prefix"], dict) else None
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "user":
            raise DataError(path, "prefix.messages must be a list ending with a user message",
                            line=line, field="prefix")
        if prefix_id(msgs) != rec["prefix_id"]:
            raise DataError(path, "prefix_id is not md5(first user message)[:16]", line=line,
                            field="prefix_id")
        out[rec["prefix_id"]] = msgs
    return out


def split_prompts(heldout_ids: list[str], n_eval: int, max_train: int, seed: int) -> tuple[list, list]:
    """(train_ids, eval_ids): disjoint, seeded; eval gets at most half of the held-out prefixes."""
    ids = sorted(heldout_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_eval = min(n_eval, len(ids) // 2)
    eval_ids = [ids[i] for i in order[:n_eval]]
    train_ids = [ids[i] for i in order[n_eval:]]
    return (train_ids[:max_train] if max_train else train_ids), eval_ids


class RewardModelScore:
    """trl reward function: the reward model's scalar for prompt + completion (chat template),
    scored in the training precision (`t`), as pref_rm scored its held-out pairs."""

    __name__ = "reward_model"  # trl names the logged reward column after the function

    def __init__(self, model, tokenizer, max_length: int, batch_size: int, t: TrainSettings):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.t = max_length, batch_size, t

    def score(self, prompts: list[list[dict]], answers: list[str]) -> np.ndarray:
        seqs = [render_ids(self.tokenizer, p, a, self.max_length)[0] for p, a in zip(prompts, answers)]
        with autocast(self.t):
            return score_ids(self.model, self.tokenizer, seqs, self.batch_size)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        answers = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return self.score(prompts, answers).tolist()


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, *, batch_size: int,
             cache=None) -> list[str]:
    """Greedy completions of chat prompts, `batch_size` prompts per left-padded batch, through
    `posttrain.core.generation.greedy_rows`: `cache` (a GenerationCache of this model) keeps
    them for a rerun on the same prompts (each keyed with its batch's prompts)."""
    from posttrain.core.generation import HFEngine, Row, greedy_rows

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    rows = [Row(t, tuple(tokenizer(t, add_special_tokens=False)["input_ids"])) for t in texts]
    outs, stats = greedy_rows(HFEngine(model, tokenizer), rows, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, cache=cache)
    log.info("greedy eval: %d completions, %d from the cache", stats["rows"], stats["cache_hits"])
    return [o["text"] for o in outs]


def require_vllm() -> None:
    """vLLM is an optional extra for GPU machines; say so before anything loads."""
    from posttrain.core.vllm_engine import require_vllm as require

    require("pref.grpo.use_vllm: true (or set it to false)")


@dataclass(frozen=True)
class GRPOSettings:
    """pref_grpo's params (pref.grpo.*). Its prompts are the reward model's held-out prefixes."""

    eval_prompts: int = param("held-out prefixes kept for the before/after measurement", min=1)
    eval_batch_size: int = param("eval prompts per left-padded greedy batch; completions per RM scoring batch",
                                 min=1)
    max_prompts: int = param("GRPO training prompts (the other held-out prefixes), 0 = all", min=0)
    max_steps: int = param("optimizer steps", min=1)
    batch_size: int = param("completions per step and process", min=1)
    num_generations: int = param("completions per prompt (GRPO's group; advantages need at least 2)", min=2)
    max_completion_length: int = param("new tokens per completion", min=1)
    max_length: int = param("reward-model scoring truncation", min=1)
    lr: float = param("learning rate", min=0, min_open=True)
    temperature: float = param("rollout sampling temperature", min=0, min_open=True)
    beta: float = param("KL strength (0 = no reference model)", min=0)
    lora_r: int = param("LoRA rank", min=1)
    lora_alpha: int = param("LoRA alpha", min=1)
    lora_layers: int = param("LoRA only on the top N decoder layers (0 = all)", min=0)
    seed: int = param("training seed")
    use_vllm: bool = param("rollouts through vLLM (trl's use_vllm; GPU machines with vllm installed)")


def train_grpo(prefixes_path, policy, rm_dir, out_dir, s: GRPOSettings, t: TrainSettings, *, live_dir,
               gen_cache_dir=None) -> dict:
    """Train a GRPO LoRA adapter on held-out prefixes, curves to `live_dir` (dvclive); returns
    {"metrics", "predictions"} (None on ranks other than the main one under `accelerate launch`).
    `gen_cache_dir` keeps the base policy's greedy eval completions (the "before" side),
    so a rerun that changes only the reward model or GRPO's training does not regenerate
    them. `s.use_vllm` hands GRPO's rollouts to vLLM through trl (GPU machines only)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    if s.use_vllm:
        require_vllm()
    set_seed(s.seed)
    prefixes = load_prefixes(prefixes_path)
    split = read_json(Path(rm_dir) / "split.json")
    held = split["heldout_prefix_ids"]
    missing = [i for i in held if i not in prefixes]
    if missing:
        raise DataError(prefixes_path, f"{len(missing)} held-out prefix ids of the reward model are "
                        f"missing (first: {missing[0]}); rerun pref_rm", field="prefix_id")
    # the RM's split seed, not s.seed: the eval prompts stay put when only training changes
    train_ids, eval_ids = split_prompts(held, s.eval_prompts, s.max_prompts, split["seed"])
    if not train_ids or not eval_ids:
        raise DataError(Path(rm_dir) / "split.json", f"need held-out prefixes for both GRPO training "
                        f"({len(train_ids)}) and evaluation ({len(eval_ids)})")

    rm, rm_tok = load_reward_model(rm_dir)
    reward_fn = RewardModelScore(rm, rm_tok, s.max_length, s.eval_batch_size, t)
    tok = AutoTokenizer.from_pretrained(str(policy))

    def build():
        m = AutoModelForCausalLM.from_pretrained(str(policy), dtype=torch.float32)
        m.config.pad_token_id = tok.pad_token_id
        if m.generation_config is not None:
            m.generation_config.pad_token_id = tok.pad_token_id
        return m

    model = build()

    # The before/after measurement is rank 0's alone (plain forward passes, no collectives);
    # other ranks go straight to training and wait for it at the first synchronisation.
    eval_msgs = [prefixes[i] for i in eval_ids]
    if is_main_process():
        cache = None
        if gen_cache_dir is not None:
            from posttrain.core.generation import GenerationCache
            from posttrain.core.fingerprint import model_key

            cache = GenerationCache(gen_cache_dir, model_key(str(policy)))
        before_text = generate(model, tok, eval_msgs, s.max_completion_length, batch_size=s.eval_batch_size,
                               cache=cache)
        before = reward_fn.score(eval_msgs, before_text)

    scratch = tempfile.mkdtemp(prefix="pref_grpo_trainer_")
    args = GRPOConfig(
        output_dir=scratch, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        num_generations=s.num_generations, max_completion_length=s.max_completion_length,
        learning_rate=s.lr, temperature=s.temperature, beta=s.beta, logging_steps=1, save_strategy="no",
        report_to="none", seed=s.seed, data_seed=s.seed, lr_scheduler_type="linear",
        use_vllm=s.use_vllm, **device_args(t))
    peft_cfg = lora_config(s.lora_r, s.lora_alpha, 0.0, "CAUSAL_LM", top_layers=s.lora_layers, model=model)
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_fn, args=args, processing_class=tok,
        train_dataset=Dataset.from_dict({"prompt": [prefixes[i] for i in train_ids]}),
        peft_config=peft_cfg, callbacks=[callback(live_dir)])
    try:
        # The trunk caches nothing here (every rollout is new, left-padded), but the rows of
        # one prompt share its prefix: the frozen layers run it once (core.trunk).
        run = fit(trainer, t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from peft import get_peft_model

    policy_model = full_model(trainer, lambda: get_peft_model(build(), peft_cfg))
    if policy_model is None:
        return None

    after_text = generate(policy_model, tok, eval_msgs, s.max_completion_length, batch_size=s.eval_batch_size)
    after = reward_fn.score(eval_msgs, after_text)

    def fill(tmp: Path) -> None:
        save_adapter(policy_model, tmp)  # LoRA adapter
        tok.save_pretrained(tmp)
        write_json(tmp / "posttrain_source.json", {"base_model": "data/models/policy", "kind": "grpo_lora",
                                                   "reward_model": "data/pref/rm"})
        write_jsonl(tmp / "eval_completions.jsonl", (
            {"prefix_id": i, "before": b, "after": a, "reward_before": float(rb), "reward_after": float(ra)}
            for i, b, a, rb, ra in zip(eval_ids, before_text, after_text, before, after)))

    with atomic_path(out_dir, directory=True) as tmp:
        fill(tmp)
    metrics = {
        "prompts": {"heldout_prefixes": len(held), "train": len(train_ids), "eval": len(eval_ids)},
        "eval_reward": reward_report(before, after, eval_ids, seed=split["seed"]),
        "train": {"steps": int(trainer.state.global_step), "world_size": int(args.world_size),
                  "first_reward": first_logged(trainer.state.log_history, "reward"),
                  "last_reward": last_logged(trainer.state.log_history, "reward"),
                  "runtime_s": last_logged(trainer.state.log_history, "train_runtime"), **run},
    }
    predictions = [{"id": i, "prefix_id": i, "reward_before": round(float(b), 6), "reward_after": round(float(a), 6)}
                   for i, b, a in sorted(zip(eval_ids, before, after))]
    return {"metrics": metrics, "predictions": predictions}


def reward_report(before, after, prefix_ids: list[str], *, seed: int) -> dict:
    """Mean RM reward on the eval prompts before and after GRPO and the paired delta, each
    with n and a CI (one prompt per prefix, so prefixes are the resampled clusters)."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    return stats.report({"before": ("mean", [b]), "after": ("mean", [a]), "delta": ("mean", [a], [b]),
                         "improved_fraction": ("proportion", [(a > b).astype(int)])}, prefix_ids, seed=seed)

