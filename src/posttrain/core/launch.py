"""Run a training stage script on one process, or under `accelerate launch` on several.

dvc.yaml calls every training stage through this wrapper so that one param
(`<stage group>.num_processes`) scales it out without editing the command:

    python -m posttrain.core.launch stages/pref_rm.py ${pref.rm} --opt ...

DVC's dict unpacking renders the group as `--num_processes 1 --lr ...`; the launcher
takes `--num_processes N` out of the script's arguments (the stage never sees it).
`--num-processes N` before the script does the same by hand.

With 1 process the script runs as a plain `python` child (no accelerate start-up
cost). With N > 1 it becomes `accelerate launch --multi_gpu --num_processes N
script ...`: accelerate's torchrun-based launcher. Despite the flag's name it
works without CUDA: the processes come up as MULTI_CPU over gloo (its `--cpu`
route needs MPI instead), and as NCCL DDP where GPUs exist. The rendezvous port
is a free one unless `--port` says otherwise, so two launches (e.g. queued
`dvc exp run` workers) do not collide on accelerate's fixed default.

`--distributed` (the `train.distributed` param) picks how the processes share the model:
`ddp` (above: every rank a full copy), or sharded through accelerate's own engines with
the accelerate config files trl ships (`trl/accelerate_configs`): `fsdp` (FSDP2, full
shard, `FULL_STATE_DICT`), `zero2` / `zero3` (DeepSpeed ZeRO); any other value is a path
to your own accelerate config file. Sharding needs accelerator devices: accelerate only
enables FSDP or DeepSpeed on GPU-class devices (its `AcceleratorState` leaves a CPU
launch as MULTI_CPU DDP), so the launcher refuses a sharded mode without one instead of
silently training unsharded.

This wrapper is single-machine. The stage scripts do not depend on it: across
machines, run the stage's command under your cluster's own `accelerate launch`
(config file with `num_machines`, `machine_rank`, main address).

Every rank runs the whole script; a stage writes its outputs and metrics only on
the main process (`is_main_process`), after the collective steps (training,
Trainer evaluation) that every rank must join.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import click

# train.distributed -> the accelerate config file trl ships for it (None: DDP flags, no file).
DISTRIBUTED = {"ddp": None, "fsdp": "fsdp2", "zero2": "zero2", "zero3": "zero3"}


def world_size() -> int:
    """Processes in this launch (torchrun sets WORLD_SIZE); 1 for a plain `python` run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0 (or without a launcher). Read from the environment torchrun
    sets, so it holds before and after the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def pop_num_processes(args: list[str]) -> tuple[int | None, list[str]]:
    """`--num_processes N` (as DVC renders it from a param group) out of a script's args."""
    rest, n = [], None
    it = iter(args)
    for a in it:
        if a == "--num_processes":
            value = next(it, None)
            if value is None:
                raise click.UsageError("--num_processes needs a value")
            n = click.IntRange(min=1).convert(value, None, None)
        elif a.startswith("--num_processes="):
            n = click.IntRange(min=1).convert(a.split("=", 1)[1], None, None)
        else:
            rest.append(a)
    return n, rest


def accelerate_config(distributed: str) -> Path | None:
    """The accelerate config file for a `train.distributed` value (None for ddp)."""
    if distributed in DISTRIBUTED:
        name = DISTRIBUTED[distributed]
        if name is None:
            return None
        from importlib import resources

        return Path(str(resources.files("trl.accelerate_configs").joinpath(f"{name}.yaml")))
    path = Path(distributed)
    if not path.is_file():
        raise click.BadParameter(f"{distributed!r} is neither one of {', '.join(DISTRIBUTED)} nor an "
                                 "accelerate config file", param_hint="train.distributed")
    return path


def config_distributed_type(path: Path) -> str:
    import yaml

    with open(path, encoding="utf-8") as fh:
        return str((yaml.safe_load(fh) or {}).get("distributed_type", "NO"))


def has_accelerator() -> bool:
    """A GPU-class device accelerate can shard over (CUDA, XPU, NPU, ...; not the CPU, not MPS)."""
    import torch

    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc is not None and acc.type not in ("cpu", "mps")


def check_distributed(config: Path | None) -> None:
    """Refuse a sharded launch that accelerate would quietly run as something else."""
    if config is None:
        return
    kind = config_distributed_type(config)
    if kind in ("FSDP", "DEEPSPEED") and not has_accelerator():
        raise click.UsageError(f"train.distributed uses {kind} ({config.name}), which accelerate runs only on "
                               "GPU-class devices, and none is visible; on a CPU use train.distributed=ddp")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise click.UsageError(f"train.distributed uses DeepSpeed ({config.name}), which is not installed: "
                               "pip install deepspeed")


def launch_argv(num_processes: int, script: str, args: list[str], port: int | None = 0,
                config: Path | None = None) -> list[str]:
    if num_processes <= 1 and config is None:
        return [sys.executable, script, *args]
    argv = [sys.executable, "-m", "accelerate.commands.launch"]
    if config is not None:
        # The file says how to shard and its precision; the process count is the stage's param.
        argv += ["--config_file", str(config), "--num_processes", str(num_processes)]
    else:
        argv += ["--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
                 "--dynamo_backend", "no", "--multi_gpu"]
    if port is not None:
        argv += ["--main_process_port", str(port)]
    return [*argv, script, *args]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--num-processes", "--num_processes", type=click.IntRange(min=1), default=None,
              help="Processes; or `--num_processes N` among the script's arguments.")
@click.option("--port", type=int, default=0, show_default=True, help="Rendezvous port for N > 1 (0: a free one).")
@click.option("--distributed", required=True,
              help=f"train.distributed: {' | '.join(DISTRIBUTED)} | PATH to an accelerate config file.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def main(num_processes: int | None, port: int, distributed: str, script: str, args: tuple[str, ...]) -> None:
    in_args, rest = pop_num_processes(list(args))
    if (num_processes is None) == (in_args is None):
        raise click.UsageError("give num_processes once: --num-processes N before the script, "
                               "or --num_processes N among its arguments")
    config = accelerate_config(distributed)
    check_distributed(config)
    argv = launch_argv(num_processes or in_args, script, rest, port, config)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: the stage's exit code and signals are the launcher's, as DVC expects.
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
