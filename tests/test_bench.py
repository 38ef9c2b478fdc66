"""Each bench script starts as docs/performance.md says (`python bench/X.py`). The script's folder
comes first on sys.path, so a file there named like a stdlib module (tokenize.py did)
breaks every import of it."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_starts(script):
    p = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    # Click says "Usage:"; gpu_check.py is argparse ("usage:"): the GPU machine has no click
    assert "usage:" in p.stdout.lower()
