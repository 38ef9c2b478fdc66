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
    out = subprocess.run([sys.executable, "-m", "posttrain.core.launch", "--num-processes", "2", "--port", str(_free_port()),
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
    ok = subprocess.run([sys.executable, "-m", "posttrain.core.launch", str(script), "--a", "1",
                         "--num_processes", "1"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "['--a', '1']", ok.stderr
    for argv in ([str(script)], ["--num-processes", "1", str(script), "--num_processes", "1"]):
        bad = subprocess.run([sys.executable, "-m", "posttrain.core.launch", *argv], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and "num_processes once" in bad.stderr
