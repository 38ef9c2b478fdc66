"""What every stage script shares: bad input ends in one line, not a traceback.

A stage's `main` is a Click command; `run(main)` invokes it. A `DataError` (bad file,
line, field) or a `click.UsageError` ends the process with exit status 1 or 2 and one
line on stderr naming the stage, the file, the line and the field. A Python traceback
appears only with `--debug` on the command line or `POSTTRAIN_DEBUG=1` in the
environment, for developers.

Defaults live only in params.yaml: dvc.yaml passes each param group with DVC's dict
unpacking (`${rec.finetune}` renders `--max_steps 16 --lr 0.0003 ...`), so stage options
carry no defaults of their own (see tests/test_params.py).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import click

from posttrain.core.io import DataError

DEBUG_ENV = "POSTTRAIN_DEBUG"


class FiniteFloat(click.FloatRange):
    """A float option in a range that also rejects nan and +-inf (FloatRange lets nan pass:
    every comparison with nan is false)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(rv, param, ctx)


def finite(min: float | None = None, max: float | None = None, *, min_open: bool = False,
           max_open: bool = False) -> FiniteFloat:
    """`type=finite(min=0, min_open=True)`: a finite float option within [min, max]."""
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


def debug_enabled(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def run(command: click.Command, argv=None, prog: str | None = None) -> None:
    """Run a stage's Click command; bad input -> one line on stderr and a non-zero exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    prog = prog or Path(sys.argv[0]).stem
    setup_logging()
    try:
        command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        if debug:
            raise
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except DataError as e:
        if debug:
            raise
        click.echo(f"{prog}: error: {e}", err=True)
        sys.exit(1)
