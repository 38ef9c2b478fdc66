"""The `posttrain` console command: tools that work on the DVC project as a whole."""

from __future__ import annotations

import click

from posttrain.core import compare, plan, report, sweep


@click.group()
def group():
    """posttrain: reproducible LLM post-training pipelines on DVC."""


group.add_command(compare.command)
group.add_command(plan.command)
group.add_command(report.command)
group.add_command(sweep.command)


def main(argv=None) -> None:
    from posttrain.core.cli import run

    run(group, argv, prog="posttrain")


if __name__ == "__main__":
    main()
