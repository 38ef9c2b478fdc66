"""Freed memory kept for reuse (`train.reuse_freed_memory`): glibc's malloc tuned so that a
training step's tensors reuse the memory the last step freed.

By default glibc serves a block above its mmap threshold (128 KiB, raised on the fly up to the
largest block freed so far, at most 32 MiB) with a fresh `mmap`, and gives the top of its heap
back to the OS once more than twice that threshold is free there. A training step allocates and
frees tens of MB of multi-MB tensors (activations, bf16 casts of the trainable weights, their
fp32 gradients), and DPO's and GRPO's logits over the 49k vocabulary run to 100 MB and more, so
each step maps or grows that memory again, and the kernel zeroes every page at its first
touch: the verifier's 320-step run took 4.5M page faults and 10 s of system time (its weight
casts averaged 1.7 ms over the whole run against 0.45 ms over its first 80 steps, torch
profiler), 24 steps of DPO 6.2M faults and 12 s.

Kept: no block is mapped on its own (`M_MMAP_MAX` 0: the large ones come from the heap too),
and the heap is never trimmed. The verifier's run then takes 0.48M faults and 2 s of system
time, DPO's 0.74M and 3 s (`python bench/train.py` gives the throughput). glibc still maps
memory where its heap cannot grow (another thread's arena, a failed `brk`).

Cost: the process keeps its peak heap until it exits, which a one-trainer stage does anyway.
Process-wide and not undone, which is why `bench/train.py` runs every trainer in a process of
its own. A no-op where the C library is not glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# glibc's mallopt(3) parameters
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = {
    # no mmap of its own for any block: a threshold cannot go above 32 MiB, and DPO's logits do
    M_MMAP_MAX: 0,
    M_TRIM_THRESHOLD: 2**31 - 1,  # never give the heap's free top back (mallopt takes an int)
    M_TOP_PAD: 64 << 20,  # grow the heap in steps of 64 MiB (pages are touched only when used)
}

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says, once per process; True where it
    applies (glibc), False elsewhere."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: AttributeError elsewhere (musl has a mallopt too)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, value in SETTINGS.items():
        if mallopt(param, value) != 1:
            log.warning("mallopt(%d, %d) refused; freed memory is not kept", param, value)
            return False
    _applied = True
    return True
