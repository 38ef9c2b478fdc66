import subprocess
import sys

from posttrain.core.launch import launch_argv

SCRIPT = """
import os, sys
import torch.distributed as dist
dist.init_process_group("gloo")
# one os.write per line: both ranks share the pipe, and print() may split text and newline
os.write(1, f"rank={dist.get_rank()} world={dist.get_world_size()} arg={sys.argv[1]}\\n".encode())
dist.destroy_process_group()
"""


def test_one_process_runs_plain_python():
    assert launch_argv(1, "s.py", ["--x", "1"]) == [sys.executable, "s.py", "--x", "1"]
    argv = launch_argv(2, "s.py", ["--x", "1"])
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[-3:] == ["s.py", "--x", "1"]
    assert argv[argv.index("--main_process_port") + 1] == "0"  # accelerate picks a free port


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_under_accelerate(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, "-m", "posttrain.core.launch", "--distributed", "ddp", "--num-processes", "2", "--port", str(_free_port()),
                          str(script), "hello"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("rank="))
    assert lines == ["rank=0 world=2 arg=hello", "rank=1 world=2 arg=hello"]


def test_num_processes_comes_out_of_the_script_args():
    from posttrain.core.launch import pop_num_processes

    # As DVC renders `${rec.finetune}`: the launcher takes the key, the stage never sees it.
    assert pop_num_processes(["--lr", "0.1", "--num_processes", "2", "--x"]) == (2, ["--lr", "0.1", "--x"])
    assert pop_num_processes(["--num_processes=3"]) == (3, [])
    assert pop_num_processes(["--lr", "0.1"]) == (None, ["--lr", "0.1"])
    import click
    import pytest

    with pytest.raises(click.BadParameter):
        pop_num_processes(["--num_processes", "0"])


def test_num_processes_given_once(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import sys; print(sys.argv[1:])")
    ok = subprocess.run([sys.executable, "-m", "posttrain.core.launch", "--distributed", "ddp", str(script), "--a", "1",
                         "--num_processes", "1"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "['--a', '1']", ok.stderr
    for argv in ([str(script)], ["--num-processes", "1", str(script), "--num_processes", "1"]):
        bad = subprocess.run([sys.executable, "-m", "posttrain.core.launch", "--distributed", "ddp", *argv], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and "num_processes once" in bad.stderr


# ---- train.distributed: ddp | fsdp | zero2 | zero3 through accelerate's engines

def _launch_env(mode: str) -> dict:
    """The environment `accelerate launch --config_file <mode's file>` gives each process,
    computed by accelerate's own launch code (what runs before torchrun starts the ranks)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    from posttrain.core.launch import accelerate_config

    args = launch_command_parser().parse_args(["--config_file", str(accelerate_config(mode)),
                                               "--num_processes", "2", "s.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        # as accelerate's launch_command does before its deepspeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_each_mode_is_an_accelerate_config_accelerate_accepts():
    from accelerate.commands.config.config_args import load_config_from_file

    from posttrain.core.launch import DISTRIBUTED, accelerate_config

    assert accelerate_config("ddp") is None
    kinds = {}
    for mode in set(DISTRIBUTED) - {"ddp"}:
        cfg = load_config_from_file(str(accelerate_config(mode)))  # accelerate's own parser and checks
        kinds[mode] = str(cfg.distributed_type)
    assert kinds == {"fsdp": "DistributedType.FSDP", "zero2": "DistributedType.DEEPSPEED",
                     "zero3": "DistributedType.DEEPSPEED"}
    fsdp = _launch_env("fsdp")
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_VERSION"] == "2"
    assert fsdp["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD" and fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    # rank 0's gather (posttrain.core.sharded) and trainer.save_model need full state dicts
    assert fsdp["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    for mode, stage in (("zero2", "2"), ("zero3", "3")):
        env = _launch_env(mode)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
    assert _launch_env("zero3")["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


def test_fsdp_env_wraps_each_decoder_layer_of_the_full_profiles_architecture(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    from posttrain.core.models import build_tiny_causal_lm, load_tokenizer

    for key, value in _launch_env("fsdp").items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()  # read from the env, as the Trainer's Accelerator does
    model = build_tiny_causal_lm(load_tokenizer(), arch="qwen3")
    plugin.set_auto_wrap_policy(model)
    assert {c.__name__ for c in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]} == {"Qwen3DecoderLayer"}


def test_launch_argv_per_mode(tmp_path):
    from posttrain.core.launch import accelerate_config, launch_argv

    cfg = accelerate_config("fsdp")
    argv = launch_argv(4, "s.py", ["--x", "1"], config=cfg)
    assert argv[argv.index("--config_file") + 1] == str(cfg) and argv[argv.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" not in argv and "--mixed_precision" not in argv  # the file says both
    # one process with a sharded mode still goes through accelerate (e.g. ZeRO-3 offload on one GPU)
    assert launch_argv(1, "s.py", [], config=cfg)[1:3] == ["-m", "accelerate.commands.launch"]
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    assert accelerate_config(str(own)) == own
    import click
    import pytest

    with pytest.raises(click.BadParameter, match="neither"):
        accelerate_config("fsdp3")


def test_a_sharded_mode_without_gpus_is_refused_not_run_unsharded(tmp_path):
    import torch
    import pytest

    if torch.accelerator.is_available():
        pytest.skip("an accelerator is visible: sharding would run")
    script = tmp_path / "s.py"
    script.write_text("print('ran')")
    for mode, what in (("fsdp", "FSDP"), ("zero3", "DEEPSPEED")):
        out = subprocess.run([sys.executable, "-m", "posttrain.core.launch", "--distributed", mode,
                              "--num-processes", "2", str(script)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "ran" not in out.stdout
        assert what in out.stderr and "train.distributed=ddp" in out.stderr, out.stderr
