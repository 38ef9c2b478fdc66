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

import dataclasses
import functools
import logging
import math
import os
import sys
import typing
from pathlib import Path

import click

from posttrain.core.io import DataError
from posttrain.core.settings import NotInstalled, SettingsError

DEBUG_ENV = "POSTTRAIN_DEBUG"

# Path option types of the stage scripts: inputs must exist; outputs are a file or a folder.
IN_FILE = click.Path(exists=True, dir_okay=False)
IN_DIR = click.Path(exists=True, file_okay=False)
OUT_FILE = click.Path(dir_okay=False)
OUT_DIR = click.Path(file_okay=False)


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


def eval_outputs(f):
    """The three outputs of an eval stage: --metrics (estimates with n and a 95% CI only),
    --facts (the run's counts and flags beside them) and --predictions (per item, for
    `posttrain compare`)."""
    for opt, help in (("--predictions", "Per-item predictions for `posttrain compare`."),
                      ("--facts", "The run's facts; the metrics file holds only estimates."),
                      ("--metrics", "Estimates with n and a 95% CI.")):
        f = click.option(opt, required=True, type=OUT_FILE, help=help)(f)
    return f


def _option(name: str, kind, meta, dest: str):
    decls = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])  # DVC renders --max_steps
    if kind is bool and meta["flag"]:
        return click.option(*(f"{d}/--no-{d[2:]}" for d in decls), dest, required=True, default=None,
                            help=meta["help"])
    bounds = {k: meta[k] for k in ("min", "max", "min_open", "max_open")}
    if kind is bool:
        type_ = click.BOOL
    elif kind is int:
        type_ = click.IntRange(**bounds)
    elif kind is float:
        type_ = finite(**bounds)
    elif meta["choices"]:
        type_ = click.Choice(meta["choices"])
    else:
        type_ = click.STRING
    return click.option(*decls, dest, required=True, type=type_, help=meta["help"])


def settings(cls, *, dest: str = "settings", prefix: str = ""):
    """Decorator: one required Click option per field of the dataclass `cls` (its type, range
    and help from `posttrain.core.settings.param`), handed to the command as one `cls` instance
    named `dest`. `prefix` names the options `--PREFIX-FIELD`: a group read from another
    stage's params, e.g. pref_dpo's `--split-seed ${pref.rm.seed}`."""
    hints = typing.get_type_hints(cls)

    def deco(f):
        keys = {}
        for fld in reversed(dataclasses.fields(cls)):
            keys[fld.name] = f"{dest}__{fld.name}"
            name = f"{prefix}_{fld.name}" if prefix else fld.name
            f = _option(name, hints[fld.name], fld.metadata, keys[fld.name])(f)

        @functools.wraps(f)
        def wrapper(*args, **kw):
            kw[dest] = cls(**{n: kw.pop(k) for n, k in keys.items()})
            return f(*args, **kw)
        wrapper.settings = {**getattr(f, "settings", {}), dest: cls}  # for tests/test_params.py
        return wrapper
    return deco


def name_values(args: tuple[str, ...], item: str, value: str, example: str) -> list[tuple[str, int]]:
    """`--NAME N` pairs as DVC renders a mapping param (`${pref.sources}`), in order: names
    unique, N an integer (its range is the library's to check). `item` and `value` name them
    in errors ("source", "cap")."""
    if len(args) % 2:
        raise click.UsageError(f"{item}s must be `--NAME {value.upper()}` pairs, got {' '.join(args)!r}")
    out = []
    for name, n in zip(args[::2], args[1::2]):
        if not name.startswith("--"):
            raise click.UsageError(f"expected --NAME before {n!r}, got {name!r}")
        try:
            out.append((name[2:], int(n)))
        except ValueError:
            raise click.UsageError(f"{value} of {item} {name[2:]!r} must be an integer, got {n!r}") from None
    if not out:
        raise click.UsageError(f"no {item}s given (e.g. {example})")
    names = [n for n, _ in out]
    for n in names:
        if names.count(n) > 1:
            raise click.UsageError(f"{item} {n!r} given more than once")
    return out


def debug_enabled(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def end_distributed() -> None:
    """Tear down this process's torch.distributed group, if any. Under `accelerate launch` the
    ranks other than 0 finish before rank 0 (it evaluates and saves alone); left to interpreter
    exit, gloo's threads can abort such a rank ("terminate called without an active
    exception", exit -6), which fails the launch."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a data stage
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run(command: click.Command, argv=None, prog: str | None = None) -> None:
    """Run a stage's Click command; bad input -> one line on stderr and a non-zero exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    prog = prog or Path(sys.argv[0]).stem
    setup_logging()
    try:
        try:
            command.main(args=argv, prog_name=prog, standalone_mode=False)
        except SettingsError as e:
            raise click.BadParameter(str(e), param_hint=e.option) from e
        end_distributed()
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
    except (DataError, NotInstalled) as e:
        if debug:
            raise
        click.echo(f"{prog}: error: {e}", err=True)
        sys.exit(1)
