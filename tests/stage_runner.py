"""Run a stage script's Click command in-process (tests of stage wiring)."""

import importlib.util
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def stage(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def run(name, args):
    res = CliRunner().invoke(stage(name), [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def param_args(group: str, only=None, **overrides) -> list[str]:
    """A params.yaml group as DVC's dict unpacking renders it (`--max_steps 16 --no-flag ...`),
    values in `overrides` replacing params.yaml's; `only` keeps those keys. Nested groups and
    lists are left out, and so is num_processes (the launcher's, not the stage's)."""
    import yaml

    node = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for part in group.split("."):
        node = node[part]
    values = {k: v for k, v in node.items() if not isinstance(v, (dict, list)) and k != "num_processes"}
    if only is not None:
        values = {k: values[k] for k in only}
    unknown = set(overrides) - set(node)
    assert not unknown, f"{group} has no {unknown}"
    values.update(overrides)
    out = []
    for k, v in values.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no-{k}")
        else:
            out += [f"--{k}", str(v)]
    return out


# The trainers' machine params (train.*): fp32 keeps the tests' figures the same on CPUs with
# and without bf16; the frozen trunk on, as in params.yaml.
MACHINE_ARGS = ["--train-precision", "fp32", "--train-frozen-trunk", "true", "--train-labelled-head", "true",
                "--train-shared-prefill", "true", "--train-shared-prefix", "true", "--train-frozen-cast", "true",
                "--train-reuse-freed-memory", "true"]
