"""Deduplicate pair prefixes by `prefix_id` (md5 of the first user message).

Pairs that share a first user message share a prefix: the embedding and density
steps then see each prompt once, and every pair maps back to its prefix through
`prefix_id_map.tsv`. The first full prefix seen for an id is kept; later pairs
whose longer conversation differs are counted as `prefix_variants_collapsed`.
"""

from __future__ import annotations

from collections import Counter

from posttrain.core.io import atomic_open
from posttrain.pref.pairs import first_user_content, prefix_id


def build_prefixes(pairs: list[dict]) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """-> (prefixes in first-seen order, [(pair_id, prefix_id)], stats)."""
    prefixes: dict[str, dict] = {}
    id_map: list[tuple[str, str]] = []
    collapsed = 0
    per_src_pairs: Counter = Counter()
    for p in pairs:
        pid = prefix_id(p["prefix"])
        id_map.append((p["id"], pid))
        per_src_pairs[p["src"]] += 1
        rec = prefixes.get(pid)
        if rec is None:
            prefixes[pid] = {"prefix_id": pid, "prefix": p["prefix"],
                             "text": first_user_content(p["prefix"]["messages"]),
                             "src": p["src"], "n_pairs": 1}
        else:
            rec["n_pairs"] += 1
            collapsed += rec["prefix"] != p["prefix"]
    out = list(prefixes.values())
    per_src_prefixes = Counter(r["src"] for r in out)
    n_pairs, n_pref = len(pairs), len(out)
    stats = {
        "pairs": n_pairs,
        "unique_prefixes": n_pref,
        # unique / pairs: 1.0 means every pair has its own prompt
        "dedup_ratio": round(n_pref / n_pairs, 6) if n_pairs else 0.0,
        "pairs_per_prefix": round(n_pairs / n_pref, 6) if n_pref else 0.0,
        "max_pairs_per_prefix": max((r["n_pairs"] for r in out), default=0),
        "prefix_variants_collapsed": collapsed,
        # a prefix is attributed to the source of its first pair
        "per_source": {s: {"pairs": per_src_pairs[s], "unique_prefixes": per_src_prefixes.get(s, 0)}
                       for s in sorted(per_src_pairs)},
    }
    return out, id_map, stats


def write_id_map(path, id_map: list[tuple[str, str]]) -> None:
    with atomic_open(path) as fh:
        fh.write("pair_id\tprefix_id\n")
        for pair, pref in id_map:
            fh.write(f"{pair}\t{pref}\n")
