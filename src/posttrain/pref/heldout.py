"""Held-out evaluation of a preference scorer, shared by the reward model and DPO.

A scorer gives each held-out pair a chosen and a rejected score (RM: scalar reward; DPO:
implicit reward). The report is pairwise accuracy (chosen above rejected) and margin,
each with n and a prefix-clustered bootstrap CI (`posttrain.core.stats`): overall, per
source and per rarity bucket, so uniform and density-aware runs are judged on identical
pairs and buckets. The rows are the per-pair input of `posttrain compare`.
"""

from __future__ import annotations

import numpy as np

from posttrain.core import stats
from posttrain.pref.common import bucket_of

BUCKETS = ("rare", "middle", "common")


def pair_report(chosen, rejected, pairs: list[dict], thresholds: tuple[float, float], *, seed: int,
                prefix: str = "", extra: dict | None = None) -> dict:
    """Eval blocks `heldout` (overall), `heldout_per_source` and `heldout_buckets` (one block
    per source / rarity bucket), each with `{prefix}accuracy` and `{prefix}margin`; `extra`
    maps a name to one 0/1 value per pair whose proportion (with its CI) is reported overall only.
    An empty group gives n = 0 and nulls."""
    margin = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    correct = (margin > 0).astype(int)
    prefixes = np.array([p["prefix_id"] for p in pairs], dtype=object)

    def summary(mask, more=()) -> dict:
        mask = np.asarray(mask, dtype=bool).reshape(len(pairs))
        specs = {f"{prefix}accuracy": ("proportion", [correct[mask]]), f"{prefix}margin": ("mean", [margin[mask]])}
        specs.update({k: ("proportion", [np.asarray(v, dtype=np.float64)[mask]]) for k, v in more})
        return stats.report(specs, prefixes[mask].tolist(), seed=seed)

    buckets = [bucket_of(p["density"], thresholds) for p in pairs]
    return {"heldout": summary(np.ones(len(pairs), dtype=bool), (extra or {}).items()),
            "heldout_per_source": {s: summary([p["src"] == s for p in pairs]) for s in sorted({p["src"] for p in pairs})},
            "heldout_buckets": {b: summary([x == b for x in buckets]) for b in BUCKETS}}


def pair_rows(chosen, rejected, pairs: list[dict], thresholds: tuple[float, float], *,
              score: str = "score") -> list[dict]:
    """Per held-out pair: ids, bucket, `chosen_{score}`, `rejected_{score}`, margin and
    whether it was ranked right, sorted by id."""
    rows = [{"id": p["id"], "prefix_id": p["prefix_id"], "src": p["src"],
             "bucket": bucket_of(p["density"], thresholds),
             f"chosen_{score}": round(float(c), 6), f"rejected_{score}": round(float(r), 6),
             "margin": round(float(c) - float(r), 6), "correct": int(c > r)}
            for p, c, r in zip(pairs, chosen, rejected)]
    return sorted(rows, key=lambda r: r["id"])
