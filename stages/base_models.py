"""base_models: the policy model as a plain transformers folder (the packaged GGUF dequantized),
materialized once; every model-using stage depends on it."""

import click

from posttrain.core.cli import OUT_DIR, run, settings
from posttrain.core.models import ModelSettings, materialize


@click.command()
@click.option("--out", required=True, type=OUT_DIR)
@settings(ModelSettings)
def main(out, settings):
    path = materialize(settings.policy, out)
    click.echo(f"base_models: {settings.policy} -> {path}", err=True)


if __name__ == "__main__":
    run(main)
