"""Incremental embedding: rerun cost after adding 1% new prefixes, as a fraction of a full run.

    python bench/embed.py [--n 1000] [--new-frac 0.01] [--embedder all-minilm-l6-v2]

Texts: distinct user messages of the packaged CHAMP conversations (real prompts of
varied length). Each timing is the library call the pref_embed stage makes
(cache lookup, model load when anything is missing, encode, cache write), in one
process, against a fresh cache directory:
  full       N texts, empty cache
  +new       the same N texts plus new_frac * N unseen ones
  no change  the N + new texts again
"""

import json
import tempfile
import time

import click

from posttrain.core.assets import asset_path
from posttrain.pref.embedding import embed_texts


def champ_texts(limit: int) -> list[str]:
    data = json.loads(asset_path("champ").read_text(encoding="utf-8"))
    seen, out = set(), []
    for pid in sorted(data["problems"]):
        for key in sorted(data["problems"][pid]["conversations"]):
            for m in data["problems"][pid]["conversations"][key]["messages"]:
                t = (m.get("text") or "").strip()
                if m["role"] == "User" and t and t not in seen:
                    seen.add(t)
                    out.append(t)
                    if len(out) >= limit:
                        return out
    return out


@click.command()
@click.option("--n", default=1000, show_default=True)
@click.option("--new-frac", default=0.01, show_default=True)
@click.option("--embedder", default="all-minilm-l6-v2", show_default=True)
@click.option("--batch-size", default=64, show_default=True)
def main(n, new_frac, embedder, batch_size):
    n_new = max(1, round(n * new_frac))
    texts = champ_texts(n + n_new)
    base, extra = texts[:n], texts[n:]
    with tempfile.TemporaryDirectory() as cache:
        rows = []
        for label, batch in [("full", base), (f"+{len(extra)} new", base + extra), ("no change", base + extra)]:
            t0 = time.perf_counter()
            _, stats = embed_texts(batch, embedder, batch_size=batch_size, cache_dir=cache, show_progress=False)
            rows.append((label, len(batch), stats["embedded"], time.perf_counter() - t0))
    full = rows[0][3]
    print(f"{'run':<12} {'texts':>6} {'embedded':>9} {'seconds':>8} {'x full':>7}")
    for label, n_texts, embedded, secs in rows:
        print(f"{label:<12} {n_texts:>6} {embedded:>9} {secs:>8.2f} {secs / full:>7.3f}")
    print(f"rerun after +{new_frac:.0%} new prefixes costs {rows[1][3] / full:.1%} of a full run (aim <= 10%)")


if __name__ == "__main__":
    main()
