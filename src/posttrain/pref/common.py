"""What the pref trainers share (reward model, DPO, GRPO).

- data: `pairs_all.jsonl` checked and read, each pair's prefix density weight, a
  seeded cap, the held-out split *by prefix* and the rarity buckets (weight
  quantiles over all prefixes), all in `load_split`, so pref_rm and pref_dpo with
  the same args hold out the same prompts and bucket them identically;
- text: a prefix + answer rendered through the chat template as token ids, the end
  kept when too long;
- models: reward-model scoring and loading, device args, values read
  from a Trainer log history (the curves themselves go through `posttrain.core.live`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from posttrain.core.batching import padded_by_length
from posttrain.core.io import DataError, read_json
from posttrain.core.settings import param
from posttrain.pref.pairs import prefix_id, read_pairs


@dataclass(frozen=True)
class PairData:
    """Which pairs a pref trainer sees: one cap and held-out split for pref_rm and pref_dpo
    (params pref.rm.*; pref_grpo reads the RM's split), so both are judged on the same
    held-out prompts, and whether training draws pairs by their prefix's density weight."""

    density_aware: bool = param("draw training pairs in proportion to their prefix's density weight "
                                "(rare prompts more often); false = uniform", flag=False)
    max_pairs: int = param("pairs used, a seeded subset (0 = all)", min=0)
    heldout_fraction: float = param("fraction of prefixes held out (a prefix is never split)",
                                    min=0, max=1, min_open=True, max_open=True)
    seed: int = param("seed of the cap and the held-out split")
    bucket_quantile: float = param("rare = top quantile of prefix weights, common = bottom quantile",
                                   min=0, max=0.5, min_open=True)


# ---------------------------------------------------------------- pairs, weights, split

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


def pairs_by_prefix(pairs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for p in pairs:
        out[p["prefix_id"]].append(p)
    return dict(out)


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


def load_split(pairs_path, ids_path, weights_path, data: PairData):
    """Pairs with their prefix weights, capped and split by prefix: the one split that
    pref_rm and pref_dpo share (same `data` -> same held-out prompts).

    Returns (pairs in the file, pairs used, train, held, weights, rarity thresholds)."""
    check_split(heldout_fraction=data.heldout_fraction, bucket_quantile=data.bucket_quantile)
    all_pairs = load_pairs(pairs_path)
    weights = load_prefix_weights(ids_path, weights_path)
    attach_weights(all_pairs, weights, source=weights_path)
    pairs = cap_pairs(all_pairs, data.max_pairs, data.seed)
    train, held = split_by_prefix(pairs, data.heldout_fraction, data.seed)
    if not train or not held:
        raise DataError(pairs_path, f"need pairs on both sides of the split (train {len(train)}, "
                        f"held-out {len(held)}); add pairs or change heldout_fraction")
    return len(all_pairs), pairs, train, held, weights, rarity_thresholds(weights.values(), data.bucket_quantile)


# ---------------------------------------------------------------- text

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


# ---------------------------------------------------------------- models and training

def score_ids(model, tokenizer, seqs: list[list[int]], batch_size: int) -> np.ndarray:
    """Scalar reward per token sequence (right-padded batches, eval mode, no grad)."""
    import torch

    model.eval()
    out = np.zeros(len(seqs), dtype=np.float64)
    with torch.no_grad():
        for idx, ids, mask in padded_by_length(seqs, batch_size, tokenizer.pad_token_id):
            logits = model(input_ids=ids, attention_mask=mask).logits
            out[idx] = logits[:, 0].float().numpy()
    return out


def load_reward_model(path):
    """(model, tokenizer) of a saved reward model folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def first_logged(history: list[dict], key: str):
    """The first value of `key` in a Trainer log history, None when never logged."""
    vals = [h[key] for h in history if key in h]
    return float(vals[0]) if vals else None


def last_logged(history: list[dict], key: str):
    """The last value of `key` in a Trainer log history, None when never logged."""
    vals = [h[key] for h in history if key in h]
    return float(vals[-1]) if vals else None
