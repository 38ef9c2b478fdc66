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
