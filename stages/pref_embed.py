"""pref_embed: prefixes -> sentence embeddings [N, dim] float32 + ids.json (cached by model+text).

    python stages/pref_embed.py --prefixes data/pref/prefixes_all.jsonl --embedder all-minilm-l6-v2 \
        --text first_user --batch-size 64 --cache-dir data/pref/embed_cache \
        --embeddings data/pref/embeddings.npy --ids data/pref/ids.json \
        --info data/pref/embeddings_info.json --metrics metrics/pref_embed.json
"""

from pathlib import Path

import click
import numpy as np

from posttrain.pref.embedding import TEXT_MODES, embed_texts, prefix_text
from posttrain.core.io import outputs, read_jsonl
from posttrain.core.cli import run


@click.command()
@click.option("--prefixes", "prefixes_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--embedder", required=True, help="Asset name, local sentence-transformers folder or hub id.")
@click.option("--text", "text_mode", required=True, type=click.Choice(TEXT_MODES))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Content-addressed embedding cache (model+text); omit to disable.")
@click.option("--embeddings", "emb_path", required=True, type=click.Path(dir_okay=False))
@click.option("--ids", "ids_path", required=True, type=click.Path(dir_okay=False))
@click.option("--info", "info_path", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
def main(prefixes_path, embedder, text_mode, batch_size, cache_dir, emb_path, ids_path, info_path,
         metrics_path):
    if cache_dir:  # exists even when nothing new was embedded (it is a declared DVC out)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    prefixes = read_jsonl(prefixes_path, required=("prefix_id", "prefix"))
    texts = [prefix_text(p["prefix"], text_mode) for p in prefixes]
    emb, stats = embed_texts(texts, embedder, batch_size=batch_size, cache_dir=cache_dir)
    info = {"embedder": embedder, "model_key": stats["model_key"], "text_mode": text_mode,
            "n": int(emb.shape[0]), "dim": int(emb.shape[1]), "normalized": True}
    with outputs() as o:  # the aligned embeddings and ids land together or not at all
        np.save(o.path(emb_path, suffix=".npy"), emb)
        o.write_json(ids_path, [p["prefix_id"] for p in prefixes])
        o.write_json(info_path, info)
        o.write_json(metrics_path, {**info, **{k: stats[k] for k in ("unique_texts", "embedded", "cache_hits")}})
    click.echo(f"pref_embed: {emb.shape} (embedded {stats['embedded']}, cache hits {stats['cache_hits']})",
               err=True)


if __name__ == "__main__":
    run(main)
