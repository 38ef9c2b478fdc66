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

This wrapper is single-machine. The stage scripts do not depend on it: across
machines, run the stage's command under your cluster's own `accelerate launch`
(config file with `num_machines`, `machine_rank`, main address).

Every rank runs the whole script; a stage writes its outputs and metrics only on
the main process (`is_main_process`), after the collective steps (training,
Trainer evaluation) that every rank must join.
"""

from __future__ import annotations

import os
import sys

import click


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


def launch_argv(num_processes: int, script: str, args: list[str], port: int | None = 0) -> list[str]:
    if num_processes <= 1:
        return [sys.executable, script, *args]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    argv += ["--multi_gpu"]
    if port is not None:
        argv += ["--main_process_port", str(port)]
    return [*argv, script, *args]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--num-processes", "--num_processes", type=click.IntRange(min=1), default=None,
              help="Processes; or `--num_processes N` among the script's arguments.")
@click.option("--port", type=int, default=0, show_default=True, help="Rendezvous port for N > 1 (0: a free one).")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def main(num_processes: int | None, port: int, script: str, args: tuple[str, ...]) -> None:
    in_args, rest = pop_num_processes(list(args))
    if (num_processes is None) == (in_args is None):
        raise click.UsageError("give num_processes once: --num-processes N before the script, "
                               "or --num_processes N among its arguments")
    argv = launch_argv(num_processes or in_args, script, rest, port)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: the stage's exit code and signals are the launcher's, as DVC expects.
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
