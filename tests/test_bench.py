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


def test_train_ratio_interval():
    """bench/train.py --pairs: the geometric mean of the pairs' ratios, its CI widening with their
    spread and covering them."""
    sys.path.insert(0, str(BENCH))
    try:
        import train
    finally:
        sys.path.remove(str(BENCH))
    same = train.ratio_interval([3.0, 3.0, 3.0])
    assert same == {"ratio": 3.0, "ratio_ci_low": 3.0, "ratio_ci_high": 3.0, "n": 3}
    spread = train.ratio_interval([2.0, 4.5, 3.0])
    assert spread["ratio"] == 3.0  # (2 * 4.5 * 3) ** (1/3)
    assert spread["ratio_ci_low"] < 2.0 and spread["ratio_ci_high"] > 4.5
    close = train.ratio_interval([2.8, 3.0, 2.9, 3.1])  # t(3) = 3.18 over 4 logs with sd 0.044
    assert 2.7 < close["ratio_ci_low"] < 2.8 and 3.1 < close["ratio_ci_high"] < 3.2
