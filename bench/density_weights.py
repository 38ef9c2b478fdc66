"""Density weights on the real prompts: how strongly each setting favours rare prompts, and what
it costs in effective sample size.

    python bench/density_weights.py [--embeddings data/pref/embeddings.npy --ids data/pref/ids.json]

For power in {1, 3, ..., 13} and pref.density.cap_quantile in {1, 0.9, 0.85, 0.8, 0.75}:
the expected rare/common draw ratio (mean weight of the rarest quarter of prompts over the
commonest quarter's, pref_rm's buckets), max/min weight, and the Kish effective sample size as a
fraction of the prompts. The contract (rare prompts drawn 50-100x more often than common ones)
is met where the ratio is 50-100; a draw that still uses the sample needs an ESS of >= 30%.

Embeddings: pref_embed's outputs when they exist, else computed here with the stages' own
library functions from the vendored HH-RLHF harmless pairs (`pref.sources` default, MiniLM,
~1 min on 2 cores). k and eps come from params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POWERS = (1, 3, 5, 7, 9, 11, 13)
CAPS = (1.0, 0.9, 0.85, 0.8, 0.75)


def params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())["pref"]


def embeddings(emb_path: Path, ids_path: Path, p: dict) -> tuple[np.ndarray, str]:
    from posttrain.pref.density import load_embeddings

    if emb_path.is_file() and ids_path.is_file():
        return load_embeddings(emb_path, ids_path)[0], str(emb_path)
    from posttrain.pref.embedding import EmbedSettings, embed_prefixes
    from posttrain.pref.pairs import DownloadSettings, collect
    from posttrain.pref.prefixes import build_prefixes

    pairs, _ = collect(list(p["sources"].items()), DownloadSettings(per_prompt=p["download"]["per_prompt"],
                                                                    seed=p["seed"]))
    prefixes, _, _ = build_prefixes(pairs)
    emb, _, _ = embed_prefixes(prefixes, EmbedSettings(embedder=p["embedder"], text=p["embed"]["text"],
                                                       batch_size=p["embed"]["batch_size"]))
    return emb, f"computed: {', '.join(p['sources'])} -> pref_prefixes -> pref_embed ({p['embedder']})"


def buckets(w: np.ndarray) -> tuple:
    lo, hi = np.quantile(w, [0.25, 0.75])
    return tuple(np.flatnonzero(w >= hi)), tuple(np.flatnonzero(w <= lo))


@click.command()
@click.option("--embeddings", "emb_path", type=click.Path(path_type=Path), default=ROOT / "data/pref/embeddings.npy",
              show_default=True)
@click.option("--ids", "ids_path", type=click.Path(path_type=Path), default=ROOT / "data/pref/ids.json",
              show_default=True)
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/density_weights.json.")
def main(emb_path, ids_path, save):
    from posttrain.pref.density import density_weights, knn_density, weight_stats

    p = params()
    emb, source = embeddings(emb_path, ids_path, p)
    density, _ = knn_density(emb, k=p["k"], method="exact", auto_threshold=len(emb), seed=p["seed"])
    ref = buckets(density_weights(density, p["eps"], 1.0))
    print(f"{len(emb)} prompts ({source}); k={p['k']} eps={p['eps']}")
    print(f"{'power':>5} {'cap':>5} {'rare/common':>12} {'max/min':>12} {'ESS':>7}  contract")
    rows = []
    for power in POWERS:
        for cap in CAPS:
            w = density_weights(density, p["eps"], power, cap)
            s = weight_stats(w)
            ok = 50 <= s["rare_vs_common_ratio_q25"] <= 100 and s["effective_sample_fraction"] >= 0.3
            rows.append({"power": power, "cap_quantile": cap, "rare_vs_common": s["rare_vs_common_ratio_q25"],
                         "max_min": s["max_min_ratio"], "ess_fraction": s["effective_sample_fraction"],
                         # the cap must not move prompts between pref_rm's rarity buckets
                         "same_buckets": buckets(w) == ref, "meets_contract": bool(ok)})
            print(f"{power:>5} {cap:>5} {s['rare_vs_common_ratio_q25']:>11.1f}x {s['max_min_ratio']:>12.1f} "
                  f"{s['effective_sample_fraction']:>7.1%}  {'yes' if ok else ''}"
                  f"{'' if rows[-1]['same_buckets'] else ' (buckets moved)'}")
    if save:
        from posttrain.core.report import save_bench

        save_bench("density_weights", {"prompts": len(emb), "k": p["k"], "eps": p["eps"], "embeddings": source,
                                       "results": rows})


if __name__ == "__main__":
    main()
