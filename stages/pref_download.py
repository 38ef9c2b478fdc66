"""pref_download: preference sources -> data/pref/pairs_all.jsonl (+ per-source accounting).

    python stages/pref_download.py --out data/pref/pairs_all.jsonl \
        --metrics metrics/pref_download.json --per-prompt 4 --seed 0 --champ 2000

Sources come last as `--NAME CAP` pairs, which is how DVC renders the
`pref.sources` mapping (`${pref.sources}`): NAME is champ, hh-rlhf,
ultrafeedback-binarized, stack-exchange-preferences or path:FILE; CAP is the
most pairs taken from it (0 = all).
"""

import click

from posttrain.core.io import outputs
from posttrain.pref.pairs import collect
from posttrain.core.cli import run


def parse_sources(args: tuple[str, ...]) -> list[tuple[str, int]]:
    if len(args) % 2:
        raise click.UsageError(f"sources must be `--NAME CAP` pairs, got {' '.join(args)!r}")
    out = []
    for name, cap in zip(args[::2], args[1::2]):
        if not name.startswith("--"):
            raise click.UsageError(f"expected --NAME before {cap!r}, got {name!r}")
        try:
            out.append((name[2:], int(cap)))
        except ValueError:
            raise click.UsageError(f"cap of source {name[2:]!r} must be an integer, got {cap!r}") from None
    if not out:
        raise click.UsageError("no sources given (e.g. --champ 2000)")
    names = [n for n, _ in out]
    for n in names:
        if names.count(n) > 1:
            raise click.UsageError(f"source {n!r} given more than once")
    return out


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--per-prompt", "--per_prompt", required=True, type=click.IntRange(min=1),
              help="Most pairs per prompt for sources with many answers per prompt (champ, stack exchange).")
@click.option("--seed", required=True, type=int)
@click.argument("sources", nargs=-1, type=click.UNPROCESSED)
def main(out, metrics_path, per_prompt, seed, sources):
    pairs, metrics = collect(parse_sources(sources), per_prompt=per_prompt, seed=seed)
    with outputs() as o:  # renamed together: never pairs without their accounting
        o.write_jsonl(out, pairs)
        o.write_json(metrics_path, metrics)
    click.echo(f"pref_download: {len(pairs)} pairs -> {out}; skipped {metrics['skipped_total']}", err=True)


if __name__ == "__main__":
    run(main)
