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

The helpers here (pairs, weights, split, buckets, scoring) are shared by
`posttrain.pref.dpo` and `posttrain.pref.grpo`.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from posttrain.core import stats
from posttrain.core.batching import padded_by_length
from posttrain.core.io import DataError, read_json
from posttrain.pref.pairs import prefix_id, read_pairs
from posttrain.pref.weighted_sampler import (WEIGHT_COLUMN, draw_spread, pair_sampling_weights,
                                             weighted_trainer_class)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- pairs and weights

def load_pairs(path) -> list[dict]:
    """Read and check `pairs_all.jsonl` (`pairs.read_pairs`); adds `prefix_id`."""
    pairs = [{"id": rec["id"], "messages": rec["prefix"]["messages"], "chosen": rec["chosen"],
              "rejected": rec["rejected"], "src": rec["src"], "prefix_id": prefix_id(rec["prefix"])}
             for rec in read_pairs(path)]
    if not pairs:
        raise DataError(path, "no pairs")
    return pairs


def load_prefix_weights(ids_path, weights_path) -> dict[str, float]:
    """prefix_id -> density weight, from `ids.json` and the aligned `density_weights.npy`."""
    ids = read_json(ids_path)
    try:
        w = np.load(weights_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(weights_path, f"not a readable .npy array ({e})") from None
    if not isinstance(ids, list) or w.ndim != 1 or len(ids) != len(w):
        raise DataError(weights_path, f"{len(w)} weights vs {len(ids) if isinstance(ids, list) else '?'} "
                        f"ids in {ids_path}", field="density_weights")
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError(weights_path, "weights must be finite and non-negative", field="density_weights")
    return {str(i): float(x) for i, x in zip(ids, w)}


def attach_weights(pairs: list[dict], weights: dict[str, float], source="density_weights.npy") -> None:
    """Each pair gets its prefix's density weight (`density` key). Unknown prefix -> DataError:
    the weights are stale relative to the pairs."""
    missing = sorted({p["prefix_id"] for p in pairs if p["prefix_id"] not in weights})
    if missing:
        raise DataError(source, f"{len(missing)} prefix ids of pairs have no weight "
                        f"(first: {missing[0]}); rerun pref_density", field="prefix_id")
    for p in pairs:
        p["density"] = weights[p["prefix_id"]]


def cap_pairs(pairs: list[dict], cap: int, seed: int) -> list[dict]:
    """At most `cap` pairs (0 = all), a seeded subset kept in file order."""
    if not cap or len(pairs) <= cap:
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=cap, replace=False))
    return [pairs[i] for i in keep]


def check_split(*, heldout_fraction: float, bucket_quantile: float) -> None:
    """ValueError naming the param: a NaN fraction or quantile would otherwise reach ceil()
    or np.quantile (a crash) or bucket every prefix as "middle" (silent)."""
    if not (math.isfinite(heldout_fraction) and 0 < heldout_fraction < 1):
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if not (math.isfinite(bucket_quantile) and 0 < bucket_quantile <= 0.5):
        raise ValueError(f"bucket_quantile must be in (0, 0.5], got {bucket_quantile}")


def split_by_prefix(pairs: list[dict], heldout_fraction: float, seed: int) -> tuple[list, list]:
    """(train, heldout): whole prefixes go to one side, about `heldout_fraction` of them held out."""
    ids = sorted({p["prefix_id"] for p in pairs})
    n_held = min(len(ids) - 1, max(1, math.ceil(heldout_fraction * len(ids)))) if len(ids) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    held = {ids[i] for i in order[:n_held]}
    return ([p for p in pairs if p["prefix_id"] not in held], [p for p in pairs if p["prefix_id"] in held])


def rarity_thresholds(all_weights, quantile: float) -> tuple[float, float]:
    """(common_max, rare_min): prefixes with weight <= common_max are the most common
    (densest) `quantile`; weight >= rare_min the rarest. Computed over all prefixes so
    every run buckets identically."""
    w = np.asarray(list(all_weights), dtype=np.float64)
    return float(np.quantile(w, quantile)), float(np.quantile(w, 1.0 - quantile))


def bucket_of(weight: float, thresholds: tuple[float, float]) -> str:
    common_max, rare_min = thresholds
    if weight >= rare_min and rare_min > common_max:
        return "rare"
    if weight <= common_max and rare_min > common_max:
        return "common"
    return "middle"


# ---------------------------------------------------------------- tokenization

def render_ids(tokenizer, messages: list[dict], answer: str, max_length: int) -> tuple[list[int], bool]:
    """Chat-template token ids of prefix + answer as the assistant turn; (ids, truncated).

    Over-long sequences keep their *end*: the reward head reads the last token, and
    the answer must survive (trl would otherwise drop the whole pair)."""
    text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}],
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_length and len(ids) > max_length:
        return ids[-max_length:], True
    return ids, False


def tokenize_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[dict, int]:
    """Columns `chosen_ids`, `rejected_ids` (trl's pre-tokenized reward format); n truncated."""
    cols = {"chosen_ids": [], "rejected_ids": []}
    n_trunc = 0
    for p in pairs:
        c, tc = render_ids(tokenizer, p["messages"], p["chosen"], max_length)
        r, tr = render_ids(tokenizer, p["messages"], p["rejected"], max_length)
        cols["chosen_ids"].append(c)
        cols["rejected_ids"].append(r)
        n_trunc += int(tc or tr)
    return cols, n_trunc


# ---------------------------------------------------------------- scoring

def score_ids(model, tokenizer, seqs: list[list[int]], batch_size: int = 8) -> np.ndarray:
    """Scalar reward per token sequence (right-padded batches, eval mode, no grad)."""
    import torch

    model.eval()
    out = np.zeros(len(seqs), dtype=np.float64)
    with torch.no_grad():
        for idx, ids, mask in padded_by_length(seqs, batch_size, tokenizer.pad_token_id):
            logits = model(input_ids=ids, attention_mask=mask).logits
            out[idx] = logits[:, 0].float().numpy()
    return out


def pairwise_report(chosen: np.ndarray, rejected: np.ndarray, pairs: list[dict],
                    thresholds: tuple[float, float], *, seed: int) -> dict:
    """Pairwise accuracy (chosen scored above rejected) and margin, each with n and a
    prefix-clustered bootstrap CI (`posttrain.core.stats`): overall, per source, per bucket.
    An empty bucket gives n = 0 and nulls."""
    margin = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    correct = (margin > 0).astype(int)
    prefixes = np.array([p["prefix_id"] for p in pairs], dtype=object)

    def summary(mask) -> dict:
        mask = np.asarray(mask, dtype=bool).reshape(len(pairs))
        return stats.report({"accuracy": ("mean", [correct[mask]]), "margin": ("mean", [margin[mask]])},
                            prefixes[mask].tolist(), seed=seed)

    report = summary(np.ones(len(pairs), dtype=bool))
    report["per_source"] = {s: summary([p["src"] == s for p in pairs])
                            for s in sorted({p["src"] for p in pairs})}
    buckets = [bucket_of(p["density"], thresholds) for p in pairs]
    report["buckets"] = {b: summary([x == b for x in buckets]) for b in ("rare", "middle", "common")}
    return report


def pair_predictions(chosen, rejected, pairs: list[dict], thresholds: tuple[float, float]) -> list[dict]:
    """Per held-out pair: ids, bucket and both scores, sorted by id (`posttrain compare` input)."""
    rows = [{"id": p["id"], "prefix_id": p["prefix_id"], "src": p["src"],
             "bucket": bucket_of(p["density"], thresholds),
             "chosen_score": round(float(c), 6), "rejected_score": round(float(r), 6),
             "margin": round(float(c) - float(r), 6), "correct": int(c > r)}
            for p, c, r in zip(pairs, chosen, rejected)]
    return sorted(rows, key=lambda r: r["id"])


def load_reward_model(path):
    """(model, tokenizer) of a saved reward model folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


# ---------------------------------------------------------------- training

def training_device_args() -> dict:
    """CPU here, CUDA (bf16) where present."""
    import torch

    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": torch.cuda.is_bf16_supported()}
    return {"use_cpu": True, "bf16": False}


def curve_from_log(log_history: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Training log -> DVC plot rows ({step, key...}), only rows that have a loss."""
    rows = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            rows.append({"step": int(entry["step"]),
                         **{k.replace("/", "_"): float(entry[k]) for k in keys if k in entry}})
    return rows


def lora_config(r: int, alpha: int, dropout: float, task_type: str, modules_to_save=None,
                top_layers: int = 0, model=None):
    """peft LoRA on all linear layers (of the top `top_layers` of `n_layers` decoder layers
    when top_layers > 0: backward then stops there, the main CPU saving), or None when
    r == 0 (full fine-tune)."""
    if not r:
        return None
    from peft import LoraConfig

    import torch

    targets, kw = "all-linear", {}
    n_layers = int(getattr(model.config, "num_hidden_layers", 0)) if model is not None else 0
    if top_layers and n_layers and top_layers < n_layers:
        # peft allows layers_to_transform only with explicit module names, not "all-linear".
        targets = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                          if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}"})
        kw["layers_to_transform"] = list(range(n_layers - top_layers, n_layers))
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      task_type=task_type, modules_to_save=modules_to_save, **kw)


def shrink_backbone(model, num_layers: int = 0, trainable_layers: int = 0):
    """CPU-sized reward model: keep the first `num_layers` decoder layers (0 = all) and
    train only the top `trainable_layers` of them (0 = all) plus the final norm and head.

    Backward then stops at the first trainable layer, so a step costs little more than
    a forward pass through the kept layers."""
    base = getattr(model, model.base_model_prefix)
    layers = getattr(base, "layers", None)
    if layers is None:
        if num_layers or trainable_layers:
            raise ValueError(f"{type(model).__name__}: no `.layers` to shrink; set num_layers/trainable_layers 0")
        return model
    if num_layers and num_layers < len(layers):
        base.layers = layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = list(model.config.layer_types)[:num_layers]
    if trainable_layers:
        for p in base.parameters():
            p.requires_grad = False
        for layer in base.layers[-trainable_layers:]:
            for p in layer.parameters():
                p.requires_grad = True
        if getattr(base, "norm", None) is not None:
            for p in base.norm.parameters():
                p.requires_grad = True
    return model


def load_split(pairs_path, ids_path, weights_path, max_pairs: int, heldout_fraction: float,
               split_seed: int, bucket_quantile: float):
    """Pairs with their prefix weights, capped and split by prefix: the one split that
    pref_rm and pref_dpo share (same args -> same held-out prompts).

    Returns (pairs in the file, pairs used, train, held, weights, rarity thresholds)."""
    check_split(heldout_fraction=heldout_fraction, bucket_quantile=bucket_quantile)
    all_pairs = load_pairs(pairs_path)
    weights = load_prefix_weights(ids_path, weights_path)
    attach_weights(all_pairs, weights, source=weights_path)
    pairs = cap_pairs(all_pairs, max_pairs, split_seed)
    train, held = split_by_prefix(pairs, heldout_fraction, split_seed)
    if not train or not held:
        raise DataError(pairs_path, f"need pairs on both sides of the split (train {len(train)}, "
                        f"held-out {len(held)}); add pairs or change heldout_fraction")
    return len(all_pairs), pairs, train, held, weights, rarity_thresholds(weights.values(), bucket_quantile)


def train_reward_model(pairs_path, ids_path, weights_path, backbone, out_dir, *,
                       density_aware: bool, max_pairs: int, heldout_fraction: float,
                       max_length: int, max_steps: int, batch_size: int,
                       grad_accum: int, lr: float, lora_r: int, lora_alpha: int,
                       num_layers: int, trainable_layers: int,
                       bucket_quantile: float, seed: int, eval_batch_size: int = 8) -> dict:
    """Train the reward model, save it (merged, plain folder) to `out_dir`, return metrics.

    Returns {"metrics": {...}, "curve": [...], "predictions": [...]} for the stage to write; None on ranks other
    than the main one under `accelerate launch` (they train, then leave the rest to rank 0)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from posttrain.core.io import dumps, write_json

    set_seed(seed)
    n_file, pairs, train, held, weights, thresholds = load_split(
        pairs_path, ids_path, weights_path, max_pairs, heldout_fraction, seed, bucket_quantile)
    log.info("pref_rm: %d pairs (%d train / %d held-out), density_aware=%s",
             len(pairs), len(train), len(held), density_aware)

    tok = AutoTokenizer.from_pretrained(str(backbone))
    model = AutoModelForSequenceClassification.from_pretrained(str(backbone), num_labels=1,
                                                               dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    shrink_backbone(model, num_layers, trainable_layers)

    cols, n_trunc_train = tokenize_pairs(tok, train, max_length)
    sample_w = pair_sampling_weights(train, density_aware)
    train_ds = Dataset.from_dict({**cols, WEIGHT_COLUMN: sample_w})

    scratch = tempfile.mkdtemp(prefix="pref_rm_trainer_")  # nothing is saved there (save_strategy=no)
    args = RewardConfig(
        output_dir=scratch,
        max_steps=max_steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, max_length=max_length,
        logging_steps=1, save_strategy="no", report_to="none", seed=seed, data_seed=seed,
        disable_tqdm=False, lr_scheduler_type="linear", warmup_steps=0,
        **training_device_args())
    trainer_cls = weighted_trainer_class(RewardTrainer)
    peft = lora_config(lora_r, lora_alpha, 0.0, "SEQ_CLS")
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                          peft_config=peft)
    if len(trainer.train_dataset) != len(train_ds):
        raise RuntimeError("RewardTrainer dropped pairs despite pre-truncation")
    try:
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # Draws of every rank: together one weighted draw (collective, so before rank 0 goes on alone).
    from accelerate.utils import gather_object

    drawn = gather_object(trainer.drawn_indices())
    if not trainer.is_world_process_zero():
        return None  # rank 0 evaluates, saves and reports

    model = trainer.model
    if lora_r:
        model = model.merge_and_unload()
    model.eval()

    # Held-out pairwise accuracy, scored by us (same ids as training, no filtering).
    hcols, n_trunc_held = tokenize_pairs(tok, held, max_length)
    rc = score_ids(model, tok, hcols["chosen_ids"], eval_batch_size)
    rr = score_ids(model, tok, hcols["rejected_ids"], eval_batch_size)
    heldout = pairwise_report(rc, rr, held, thresholds, seed=seed)

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

    train_bucket_counts = Counter(tb.tolist())
    metrics = {
        "density_aware": bool(density_aware),
        "pairs": {"total_file": n_file, "used": len(pairs), "train": len(train),
                  "heldout": len(held), "train_prefixes": len({p["prefix_id"] for p in train}),
                  "heldout_prefixes": len({p["prefix_id"] for p in held}),
                  "truncated_train": n_trunc_train, "truncated_heldout": n_trunc_held,
                  "train_per_source": dict(sorted(Counter(p["src"] for p in train).items())),
                  "train_buckets": {b: train_bucket_counts.get(b, 0) for b in ("rare", "middle", "common")}},
        "heldout": heldout,
        "sampling": spread,
        "train": {"steps": int(trainer.state.global_step), "world_size": int(args.world_size),
                  "final_loss": _last(trainer.state.log_history, "loss"),
                  "runtime_s": _last(trainer.state.log_history, "train_runtime")},
    }
    curve = curve_from_log(trainer.state.log_history, ("loss", "accuracy", "margin"))

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # The held-out prefixes travel with the RM so GRPO uses prompts it never saw.
        write_json(tmp / "split.json", {
            "heldout_prefix_ids": sorted({p["prefix_id"] for p in held}),
            "train_prefix_ids": sorted({p["prefix_id"] for p in train}),
            "rarity_thresholds": {"common_max": thresholds[0], "rare_min": thresholds[1]}})
        write_json(tmp / "posttrain_source.json", {"backbone": str(backbone), "kind": "reward_model",
                                                   "num_layers": int(model.config.num_hidden_layers),
                                                   "density_aware": bool(density_aware)})

    # Metrics first, model last: a value JSON cannot hold (NaN) fails here, before
    # anything is saved, instead of after the model folder already looks finished.
    predictions = pair_predictions(rc, rr, held, thresholds)
    dumps({"metrics": metrics, "curve": curve, "predictions": predictions})
    save_dir(out_dir, fill)
    return {"metrics": metrics, "curve": curve, "predictions": predictions}


def save_dir(out_dir, fill) -> Path:
    """Fill a temp directory beside `out_dir` with `fill(tmp)`, then swap it into place."""
    from posttrain.core.io import atomic_path

    out_dir = Path(out_dir)
    with atomic_path(out_dir, suffix=".tmpdir") as tmp:
        tmp.unlink()
        tmp.mkdir()
        fill(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
    return out_dir


def _last(history: list[dict], key: str):
    vals = [h[key] for h in history if key in h]
    return float(vals[-1]) if vals else None


def pairs_by_prefix(pairs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        out[p["prefix_id"]].append(p)
    return dict(out)
