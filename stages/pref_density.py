"""pref_density: embeddings -> k-NN cosine density -> weights (1/(density+eps))**power, normalized;
with the weights' stats, a histogram plot and a 3-D projection."""

import click
import numpy as np

from posttrain.core.cli import IN_FILE, OUT_FILE, run, settings
from posttrain.core.io import outputs, read_json, read_jsonl
from posttrain.pref.density import DensitySettings, density_run, load_embeddings


@click.command()
@click.option("--embeddings", required=True, type=IN_FILE)
@click.option("--ids", required=True, type=IN_FILE)
@click.option("--info", required=True, type=IN_FILE)
@click.option("--prefixes", required=True, type=IN_FILE)
@click.option("--weights", required=True, type=OUT_FILE)
@click.option("--metadata", required=True, type=OUT_FILE)
@click.option("--projection", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@click.option("--hist", required=True, type=OUT_FILE)
@settings(DensitySettings)
def main(embeddings, ids, info, prefixes, weights, metadata, projection, metrics, hist, settings):
    emb, id_list = load_embeddings(embeddings, ids)
    texts = {p["prefix_id"]: p["text"] for p in read_jsonl(prefixes, required=("prefix_id", "text"))}
    r = density_run(emb, id_list, [texts.get(i, "") for i in id_list], settings)
    with outputs() as o:  # all five renamed together, only once everything is computed
        np.save(o.path(weights, suffix=".npy"), r["weights"])
        o.write_json(metadata, {"embedding": read_json(info), **r["metadata"]})
        o.write_json(projection, r["projection"])
        o.write_json(metrics, r["metrics"])
        o.write_json(hist, r["hist"])
    click.echo(f"pref_density: n={r['info']['n']} method={r['info']['method']} k_eff={r['info']['k_effective']} "
               f"weight max/min={r['metrics'].get('max_min_ratio')}", err=True)


if __name__ == "__main__":
    run(main)
