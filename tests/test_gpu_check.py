"""bench/gpu_check.py's CPU dry run: every trainer's loop runs at tiny shapes and learns."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_learns_on_the_cpu():
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--steps", "6"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in p.stdout.splitlines() if "learning check:" in ln}
    assert set(lines) == {"rec", "rm", "dpo", "grpo", "verifier"}, p.stdout
    assert all("learning check: ok" in ln for ln in lines.values()), p.stdout
    assert "all learning checks ok" in p.stdout


def test_gpu_check_refuses_a_machine_without_cuda():
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "no CUDA device" in p.stderr
