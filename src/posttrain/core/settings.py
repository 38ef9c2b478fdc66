"""A stage's params as one dataclass: each field is one param, declared once.

A field carries its type (the annotation), its range and its help (`param(...)`), and no
default: the value comes from params.yaml through dvc.yaml. `posttrain.core.cli.settings`
turns the fields into the stage's Click options, and the library function takes the
dataclass, the way trl's trainers take a `DPOConfig`. Adding a param is one params.yaml line,
one field and its use.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def param(help: str = "", *, min: float | None = None, max: float | None = None, min_open: bool = False,
          max_open: bool = False, choices: tuple[str, ...] | None = None, flag: bool = True) -> Any:
    """A settings field with no default. `min`/`max` bound a number (open ends with
    `min_open`/`max_open`); `choices` restricts a string; a bool is a `--x/--no-x` flag as
    DVC's dict unpacking renders it, or with `flag=False` an option taking true/false (for a
    param interpolated on its own, `--x ${group.x}`)."""
    return dataclasses.field(metadata={"help": help, "min": min, "max": max, "min_open": min_open,
                                       "max_open": max_open, "choices": choices, "flag": flag})


class NotInstalled(ImportError):
    """A param asks for an optional package this machine lacks (vllm, say): stages end in this
    one line (`posttrain.core.cli.run`), before any model loads."""


class SettingsError(ValueError):
    """A params value the library cannot use, checked where it is used; `option` names it as
    the stage's command line does (`--val-ratio/--test-ratio`), so stages end in one line."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)
