"""pref_prefixes: pairs -> unique prefixes (by md5 of the first user message) + pair map.

    python stages/pref_prefixes.py --pairs data/pref/pairs_all.jsonl \
        --prefixes data/pref/prefixes_all.jsonl --id-map data/pref/prefix_id_map.tsv \
        --metrics metrics/pref_prefixes.json
"""

import click

from posttrain.core.io import outputs
from posttrain.pref.pairs import read_pairs
from posttrain.pref.prefixes import build_prefixes, write_id_map
from posttrain.core.cli import IN_FILE, OUT_FILE, run


@click.command()
@click.option("--pairs", "pairs_path", required=True, type=IN_FILE)
@click.option("--prefixes", "prefixes_path", required=True, type=OUT_FILE)
@click.option("--id-map", "id_map_path", required=True, type=OUT_FILE)
@click.option("--metrics", "metrics_path", required=True, type=OUT_FILE)
def main(pairs_path, prefixes_path, id_map_path, metrics_path):
    pairs = read_pairs(pairs_path)
    prefixes, id_map, stats = build_prefixes(pairs)
    with outputs() as o:
        o.write_jsonl(prefixes_path, prefixes)
        write_id_map(o.path(id_map_path), id_map)
        o.write_json(metrics_path, stats)
    click.echo(f"pref_prefixes: {stats['pairs']} pairs -> {stats['unique_prefixes']} prefixes", err=True)


if __name__ == "__main__":
    run(main)
