"""params.yaml is the only place a default lives (checked statically, no stage runs).

dvc.yaml hands params to stages as `--opt ${group.key}` or by DVC's dict unpacking
(`${group}` -> `--key value ...`, `--key` / `--no-key` for booleans, see .dvc/config
`[parsing]`). `check(root)` reports, for a project folder:

- a params.yaml leaf that reaches no stage (no interpolation, no unpacked group, no
  stage that reads params.yaml itself with `--params-file params.yaml`);
- an option of a stage script that is neither fed by a param nor given a literal value
  (a path) in its cmd, unless it is one of the DEV_ONLY flags below;
- a param-fed option with a default of its own (it must be required, default-free);
- a param-fed option that is no settings field (`posttrain.core.cli.settings`), and a
  settings field with a default of its own;
- a `${...}` in a cmd that the stage's `params:` do not cover.

Each check is shown to fire on a deliberately broken copy of the project. The last
tests render every cmd with DVC's own resolver and parse it with the stage's Click
command, so dvc.yaml and the scripts cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Options no param feeds, on purpose: developer aids that never change an output.
DEV_ONLY = {
    "--show-examples": "rec_tokenize: print N rendered examples with their label masks",
    "--progress": "reason_generate: tqdm progress bar on/off",
    "--sources": "reason_collect: sources as JSON instead of reason.sources in params.yaml",
    "--sources-key": "reason_collect: where reason.sources sits in --params-file",
}
# Keys of an unpacked group that the launcher (python -m posttrain.core.launch) takes.
LAUNCHER_KEYS = {"num_processes"}
# Groups unpacked into a script's free arguments rather than options.
FREE_ARGS = {"pref.sources": "pref_download: `--NAME CAP` per preference source"}
EXPR = re.compile(r"\$\{([^}]+)\}")

try:  # click >= 8.2 marks "no default" with a sentinel, older versions with None
    from click._utils import UNSET
except ImportError:  # pragma: no cover
    UNSET = None


def has_default(p: click.Parameter) -> bool:
    return p.default is not None and p.default is not UNSET


def select(params: dict, key: str):
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def under(key: str, group: str) -> bool:
    return key == group or key.startswith(group + ".")


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"params_check_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Stage:
    """One dvc.yaml stage: which options its cmd feeds from params, which it gives literally."""

    def __init__(self, name: str, spec: dict, params: dict, root: Path):
        self.name, self.cmd = name, " ".join(spec["cmd"].split())
        self.params = [p for p in spec.get("params", []) if isinstance(p, str)]
        self.exprs = EXPR.findall(self.cmd)
        tokens = self.cmd.split()
        self.launcher = tokens[1:3] == ["-m", "posttrain.core.launch"]
        self.script = root / next(t for t in tokens if t.endswith(".py"))
        self.fed: dict[str, str] = {}       # option as written -> params key
        self.unpacked: dict[str, str] = {}  # option (from an unpacked group) -> params key
        self.literal: set[str] = set()
        self.launcher_fed: dict[str, str] = {}  # launcher option (before the script) -> params key
        script_at = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
        for i, tok in enumerate(tokens):
            m = EXPR.fullmatch(tok)
            prev = tokens[i - 1] if i else ""
            if i < script_at:
                if m and prev.startswith("--"):
                    self.launcher_fed[prev] = m[1]
                continue
            if m and isinstance(select(params, m[1]), dict):
                if m[1] in FREE_ARGS:
                    continue
                for key, value in leaves(select(params, m[1])).items():
                    opt = key.rsplit(".", 1)[-1]
                    self.unpacked[f"--{opt}" if value is not False else f"--no-{opt}"] = f"{m[1]}.{key}"
            elif m and prev.startswith("--"):
                self.fed[prev] = m[1]
            elif tok.startswith("--") and i + 1 < len(tokens) and not tokens[i + 1].startswith(("--", "${")):
                self.literal.add(tok)

    def reads_params_file(self) -> bool:
        return "--params-file params.yaml" in self.cmd


def option_of(command: click.Command, opt: str):
    for p in command.params:
        if isinstance(p, click.Option) and opt in (*p.opts, *p.secondary_opts):
            return p
    return None


def settings_defaults(command: click.Command) -> list[str]:
    """`Class.field` of every settings field of the stage that has a default of its own."""
    import dataclasses

    classes = getattr(command.callback, "settings", {})
    return [f"{cls.__name__}.{f.name}" for cls in classes.values() for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]


def check(root: Path) -> list[str]:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    stages = [Stage(name, spec, params, root) for name, spec in specs.items()]
    problems = []

    reached = set()
    for st in stages:
        groups = st.exprs + (st.params if st.reads_params_file() else [])
        reached |= {k for k in leaves(params) if any(under(k, g) for g in groups)}
    problems += [f"params.yaml: {k} reaches no stage" for k in sorted(set(leaves(params)) - reached)]

    for st in stages:
        for e in st.exprs:
            if not any(under(e, p) for p in st.params):
                problems.append(f"{st.name}: cmd interpolates ${{{e}}} but its params: do not list it")
        mod = load_script(st.script)
        command = mod.main
        for opt, key in [*st.fed.items(), *st.unpacked.items()]:
            p = option_of(command, opt)
            if p is None:
                if not (st.launcher and key.rsplit(".", 1)[-1] in LAUNCHER_KEYS):
                    problems.append(f"{st.name}: cmd passes {opt} (from {key}) but the script has no such option")
                continue
            if "__" not in p.name:  # core.cli.settings names its options DEST__FIELD
                problems.append(f"{st.name}: option {opt} is fed by {key} but is no settings field")
            if has_default(p) or not p.required:
                problems.append(f"{st.name}: option {opt} is fed by {key} but has a default of its own "
                                f"({p.default!r}, required={p.required})")
        given = set(st.fed) | set(st.unpacked) | st.literal
        for p in command.params:
            if not isinstance(p, click.Option) or p.name == "help":
                continue
            names = {*p.opts, *p.secondary_opts}
            if not names & given and not names & set(DEV_ONLY):
                problems.append(f"{st.name}: option {p.opts[0]} is neither fed by params nor a path in its cmd")
        if st.launcher_fed:
            from posttrain.core.launch import main as launcher

            for opt, key in st.launcher_fed.items():
                p = option_of(launcher, opt)
                if p is None:
                    problems.append(f"{st.name}: cmd passes {opt} (from {key}) to the launcher, which has no such option")
                elif has_default(p) or not p.required:
                    problems.append(f"{st.name}: launcher option {opt} is fed by {key} but has a default of its own")
        for name in settings_defaults(command):
            problems.append(f"{st.name}: {name} has a default, which params.yaml feeds")
    return problems


# ------------------------------------------------------------------ the project itself

def test_project_has_one_place_per_default():
    assert check(REPO) == []


def test_dev_only_flags_exist_and_are_few():
    options = set()
    for script in (REPO / "stages").glob("*.py"):
        for p in load_script(script).main.params:
            options |= set(getattr(p, "opts", []))
    assert set(DEV_ONLY) <= options and len(DEV_ONLY) <= 5


# ------------------------------------------------------------------ each check on a broken copy

@pytest.fixture()
def copy(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_reports_a_param_no_stage_reads(copy):
    edit(copy / "params.yaml", "  source: ml-100k\n", "  source: ml-100k\n  forgotten_knob: 3\n")
    assert check(copy) == ["params.yaml: rec.forgotten_knob reaches no stage"]


def test_reports_an_option_no_param_feeds(copy):
    edit(copy / "dvc.yaml", "--out data/rec/adapter ${rec.finetune} --seed ${rec.seed}",
         "--out data/rec/adapter ${rec.finetune}")
    assert "rec_finetune: option --seed is neither fed by params nor a path in its cmd" in check(copy)


def test_reports_a_param_fed_option_with_a_default(copy):
    # a hand-written option beside the settings: fed by params, yet with a default of its own
    edit(copy / "stages/rec_finetune.py", '@click.option("--out", required=True, type=OUT_DIR)',
         '@click.option("--out", required=True, type=OUT_DIR)\n@click.option("--lr", default=2e-4)')
    assert check(copy) == ["rec_finetune: option --lr is fed by rec.finetune.lr but is no settings field",
                           "rec_finetune: option --lr is fed by rec.finetune.lr but has a default of its own "
                           "(0.0002, required=False)"]


def test_reports_a_settings_field_with_a_default(copy, monkeypatch):
    import dataclasses

    from posttrain.pref.density import DensitySettings

    field = next(f for f in dataclasses.fields(DensitySettings) if f.name == "method")
    monkeypatch.setattr(field, "default", "auto")  # a drifting default
    assert check(copy) == ["pref_density: DensitySettings.method has a default, which params.yaml feeds"]


def test_reports_an_interpolation_params_do_not_cover(copy):
    edit(copy / "dvc.yaml", "      - rec.seed\n      - rec.finetune\n", "      - rec.seed\n")
    assert check(copy) == ["rec_finetune: cmd interpolates ${rec.finetune} but its params: do not list it"]


def test_reports_an_unpacked_key_the_script_lacks(copy):
    edit(copy / "params.yaml", "    quantization: none     # none | 4bit (QLoRA, bitsandbytes NF4)\n",
         "    quantization: none\n    packing: true\n")
    assert check(copy) == ["rec_finetune: cmd passes --packing (from rec.finetune.packing) "
                           "but the script has no such option"]


# ------------------------------------------------------------------ rendered commands parse

def rendered_commands(tmp_path: Path, profile: str | None) -> dict[str, str]:
    """Every stage's cmd as DVC renders it from params.yaml (deep-merged with a profile)."""
    from dvc.repo import Repo

    from posttrain.core import profiles

    params = profiles.load_yaml(REPO / "params.yaml")
    if profile:
        params = profiles.deep_merge(params, profiles.load_profile(profile, REPO))
    (tmp_path / ".dvc").mkdir()
    config = (REPO / ".dvc" / "config").read_text(encoding="utf-8")  # keeps [parsing]
    assert config.count("[core]\n") == 1
    (tmp_path / ".dvc" / "config").write_text(config.replace("[core]\n", "[core]\n    no_scm = true\n"),
                                              encoding="utf-8")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with Repo(str(tmp_path)) as repo:
        return {st.name: st.cmd for st in repo.index.stages}


@pytest.mark.parametrize("profile", [None, "tiny", "full", "scale-smoke"])
def test_every_rendered_command_parses(tmp_path, monkeypatch, profile):
    from posttrain.core.launch import pop_num_processes

    # Inputs need not exist here: only the command line is under test.
    monkeypatch.setattr(click.Path, "convert", lambda self, value, param, ctx: value)
    cmds = rendered_commands(tmp_path, profile)
    assert set(cmds) == set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    for name, cmd in cmds.items():
        argv = shlex.split(cmd)
        assert argv[0] == "python", cmd
        argv = argv[1:]
        if argv[:2] == ["-m", "posttrain.core.launch"]:
            from posttrain.core.launch import accelerate_config, main as launcher

            lctx = launcher.make_context("launch", argv[2:])  # the launcher's own options, then the script
            accelerate_config(lctx.params["distributed"])  # a known mode (or a file)
            n, rest = pop_num_processes(list(lctx.params["args"]))
            assert n is not None and n >= 1, f"{name}: no --num_processes for the launcher"
            argv = [lctx.params["script"], *rest]
        script, args = argv[0], argv[1:]
        assert script == f"stages/{name}.py"
        command = load_script(REPO / script).main
        ctx = command.make_context(name, list(args))  # raises on any unknown, missing or bad option
        assert not ctx.args or name == "pref_download", f"{name}: leftover {ctx.args}"
    assert "--use_graded" in cmds["reason_verifier"] and "--no-chat_template" in cmds["reason_verifier"]


# ------------------------------------------------------------------ bad values end in one line

@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1e-4"])
def test_bad_float_is_rejected_by_click_naming_the_option(value, capsys):
    from posttrain.core.cli import run

    command = load_script(REPO / "stages/pref_grpo.py").main
    args = ["--prefixes", str(REPO / "params.yaml"), "--policy", str(REPO), "--rm", str(REPO), "--out", "o",
            "--metrics", "m", "--live", "c",
            *sum((["--" + k, str(v)] for k, v in {
                "eval_prompts": 8, "max_prompts": 32, "max_steps": 4, "batch_size": 8, "num_generations": 4,
                "max_completion_length": 32, "max_length": 512, "temperature": 1.0, "beta": 0.0,
                "lora_r": 8, "lora_alpha": 16, "lora_layers": 4, "seed": 0}.items()), []),
            "--lr", value]
    with pytest.raises(SystemExit) as e:
        run(command, args, prog="pref_grpo")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pref_grpo: error: Invalid value for '--lr'"), err
    assert "finite" in err[0] if value in ("nan", "inf") else "range" in err[0]


def test_ratios_must_leave_a_train_split(tmp_path, capsys):
    from posttrain.core.cli import run

    command = load_script(REPO / "stages/rec_prepare.py").main
    with pytest.raises(SystemExit) as e:
        run(command, ["--source", "x", "--history-len", "5", "--rating-threshold", "4", "--val-ratio", "0.5",
                      "--test-ratio", "0.5", "--seed", "0", "--out-dir", str(tmp_path),
                      "--metrics", str(tmp_path / "m.json")], prog="rec_prepare")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "val_ratio + test_ratio must be < 1" in err[0]


def test_the_adding_a_parameter_diff_in_the_docs_applies():
    """docs/experiments.md shows adding a param as a real diff: it must still apply here."""
    import subprocess

    text = (REPO / "docs" / "experiments.md").read_text(encoding="utf-8")
    diff = text.split("```diff\n", 1)[1].split("```", 1)[0]
    res = subprocess.run(["git", "apply", "--check", "-"], input=diff, text=True, cwd=REPO,
                         capture_output=True)
    assert res.returncode == 0, res.stderr
