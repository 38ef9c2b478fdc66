"""pref_density: embeddings -> k-NN cosine density -> weights (1/(density+eps))**power, normalized.

    python stages/pref_density.py --embeddings data/pref/embeddings.npy --ids data/pref/ids.json \
        --info data/pref/embeddings_info.json --prefixes data/pref/prefixes_all.jsonl \
        --k 20 --eps 0.01 --method auto --auto-threshold 20000 --power 7 --seed 0 \
        --weights data/pref/density_weights.npy --metadata data/pref/embeddings_metadata.json \
        --projection data/pref/projection.json --metrics metrics/pref_density.json \
        --hist metrics/pref_density_hist.json
"""

import click
import numpy as np

from posttrain.pref.density import (METHODS, density_weights, knn_density, load_embeddings, weight_histogram,
                                    weight_stats)
from posttrain.core.io import outputs, read_json, read_jsonl
from posttrain.pref.projection import projection_records
from posttrain.core.cli import finite, run


@click.command()
@click.option("--embeddings", "emb_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", "ids_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--info", "info_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--prefixes", "prefixes_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--k", required=True, type=click.IntRange(min=1))
@click.option("--eps", required=True, type=finite(0, min_open=True))
@click.option("--method", required=True, type=click.Choice(METHODS))
@click.option("--auto-threshold", "--auto_threshold", required=True, type=click.IntRange(min=0),
              help="auto: exact search up to this many prefixes, pynndescent above.")
@click.option("--power", required=True, type=finite(0),
              help="weight = (1/(density+eps))**power; 1 = the seed's formula, larger favours rare prompts more.")
@click.option("--seed", required=True, type=int)
@click.option("--weights", "weights_path", required=True, type=click.Path(dir_okay=False))
@click.option("--metadata", "meta_path", required=True, type=click.Path(dir_okay=False))
@click.option("--projection", "proj_path", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--hist", "hist_path", required=True, type=click.Path(dir_okay=False))
def main(emb_path, ids_path, info_path, prefixes_path, k, eps, method, auto_threshold, power, seed,
         weights_path, meta_path, proj_path, metrics_path, hist_path):
    emb, ids = load_embeddings(emb_path, ids_path)
    texts = {p["prefix_id"]: p["text"] for p in read_jsonl(prefixes_path, required=("prefix_id", "text"))}
    density, info = knn_density(emb, k=k, method=method, auto_threshold=auto_threshold, seed=seed)
    w = density_weights(density, eps, power)
    stats = weight_stats(w)
    dens = ({"min": float(density.min()), "max": float(density.max()), "mean": float(density.mean())}
            if len(density) else {})
    meta = {"embedding": read_json(info_path), "density": {**info, "eps": eps, "power": power, "seed": seed,
            "auto_threshold": auto_threshold, "similarity": "cosine", "stats": dens}, "weights": stats}
    projection = projection_records(ids, emb, w, [texts.get(i, "") for i in ids], seed=seed)
    with outputs() as o:  # all five renamed together, only once everything is computed
        np.save(o.path(weights_path, suffix=".npy"), w)
        o.write_json(meta_path, meta)
        o.write_json(proj_path, projection)
        o.write_json(metrics_path, {**info, "eps": eps, "power": power, "density_mean": dens.get("mean"), **stats})
        o.write_json(hist_path, weight_histogram(w))
    click.echo(f"pref_density: n={info['n']} method={info['method']} k_eff={info['k_effective']} "
               f"weight max/min={stats.get('max_min_ratio')}", err=True)


if __name__ == "__main__":
    run(main)
