"""base_models: materialize the policy model once as a transformers folder.

    python stages/base_models.py --policy smollm2-135m-instruct --out data/models/policy
"""

import click

from posttrain.core.models import materialize
from posttrain.core.cli import run


@click.command()
@click.option("--policy", required=True,
              help="Asset name (smollm2-135m-instruct), GGUF file, local folder, hub id, "
                   "or tiny-random[-qwen3] (tests/CI).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def main(policy: str, out_dir: str) -> None:
    path = materialize(policy, out_dir)
    click.echo(f"base_models: {policy} -> {path}", err=True)


if __name__ == "__main__":
    run(main)
