"""pref_embed: prefixes -> unit-normalized sentence embeddings [N, dim] float32 + ids.json, cached
by (model files, text) so appending pairs embeds only the new prefixes."""

import click
import numpy as np

from posttrain.core.cli import IN_FILE, OUT_DIR, OUT_FILE, run, settings
from posttrain.core.io import outputs, read_jsonl
from posttrain.pref.embedding import EmbedSettings, embed_prefixes


@click.command()
@click.option("--prefixes", required=True, type=IN_FILE)
@click.option("--cache-dir", required=True, type=OUT_DIR, help="Embedding cache (a persist: true out).")
@click.option("--embeddings", required=True, type=OUT_FILE)
@click.option("--ids", required=True, type=OUT_FILE)
@click.option("--info", required=True, type=OUT_FILE)
@click.option("--metrics", required=True, type=OUT_FILE)
@settings(EmbedSettings)
def main(prefixes, cache_dir, embeddings, ids, info, metrics, settings):
    rows = read_jsonl(prefixes, required=("prefix_id", "prefix"))
    emb, facts, counts = embed_prefixes(rows, settings, cache_dir)
    with outputs() as o:  # the aligned embeddings and ids land together or not at all
        np.save(o.path(embeddings, suffix=".npy"), emb)
        o.write_json(ids, [p["prefix_id"] for p in rows])
        o.write_json(info, facts)
        o.write_json(metrics, counts)
    click.echo(f"pref_embed: {emb.shape} (embedded {counts['embedded']}, cache hits {counts['cache_hits']})",
               err=True)


if __name__ == "__main__":
    run(main)
