"""One memory + pids budget per sandbox run: a cgroup the sandbox's first process joins.

RLIMIT_AS and RLIMIT_NPROC are per process / per uid: many children each under the memory
limit, or pages in a private tmpfs, are not counted. A cgroup counts all of them (tmpfs pages
are charged to the cgroup that wrote them). cgroup v2 (`memory.max`, `pids.max`,
`memory.events`) where the memory and pids controllers can be enabled below our own cgroup;
else the v1 memory and pids hierarchies (`memory.limit_in_bytes`, `pids.max`,
`memory.oom_control`). Needs root; where neither works, `Budget.create` returns None and the
sandbox keeps only its per-process limits (logged once).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PREFIX = "posttrain-sandbox-"
_probe_lock = threading.Lock()
_layout: dict | None = None  # {"v2": dir} or {"memory": dir, "pids": dir}, {} = unavailable


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, opts = (right.split() + ["", "", ""])[:3]
            out.append((left.split()[4], fstype, set(opts.split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _candidates() -> list[dict]:
    own = _own_paths()
    mounts = _mounts()
    found = []
    for mp, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            base = os.path.join(mp, own[""].lstrip("/"))
            try:
                ctrls = _read(os.path.join(base, "cgroup.controllers")).split()
            except OSError:
                continue
            if {"memory", "pids"} <= set(ctrls):
                found.append({"v2": base})
    v1 = {}
    for mp, fstype, opts in mounts:
        if fstype == "cgroup":
            for c in ("memory", "pids"):
                if c in opts and c in own and c not in v1:
                    v1[c] = os.path.join(mp, own[c].lstrip("/"))
    if len(v1) == 2:
        found.append(v1)
    return found


@dataclass
class Budget:
    """The cgroup(s) of one run. `procs_files`: where the sandbox's first process writes its pid."""

    dirs: dict[str, str]
    procs_files: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, memory_bytes: int, pids: int) -> Budget | None:
        global _layout
        with _probe_lock:
            if _layout is None:
                _layout = {}
                for cand in _candidates() if os.geteuid() == 0 else []:
                    b = cls._make(cand, memory_bytes, pids)
                    if b is not None:
                        b.remove()
                        _layout = cand
                        break
                if not _layout:  # the sandbox says so once in the log
                    log.debug("no usable cgroup (needs root and the memory + pids controllers)")
        return cls._make(_layout, memory_bytes, pids) if _layout else None

    @classmethod
    def _make(cls, layout: dict, memory_bytes: int, pids: int) -> Budget | None:
        name = PREFIX + secrets.token_hex(8)
        b = cls({})
        try:
            if "v2" in layout:
                parent = layout["v2"]
                ctl = os.path.join(parent, "cgroup.subtree_control")
                if not {"memory", "pids"} <= set(_read(ctl).split()):
                    _write(ctl, "+memory +pids")  # EBUSY when our own cgroup holds processes
                d = os.path.join(parent, name)
                os.mkdir(d)
                b.dirs["v2"] = d
                _write(os.path.join(d, "memory.max"), str(memory_bytes))
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(os.path.join(d, "memory.swap.max"), "0")
                _write(os.path.join(d, "pids.max"), str(pids))
            else:
                for c in ("memory", "pids"):
                    d = os.path.join(layout[c], name)
                    os.mkdir(d)
                    b.dirs[c] = d
                md = b.dirs["memory"]
                _write(os.path.join(md, "memory.limit_in_bytes"), str(memory_bytes))
                if os.path.exists(os.path.join(md, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(md, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                _write(os.path.join(b.dirs["pids"], "pids.max"), str(pids))
        except OSError as e:
            log.debug("cgroup %s unusable: %s", layout, e)
            b.remove()
            return None
        b.procs_files = [os.path.join(d, "cgroup.procs") for d in b.dirs.values()]
        return b

    def oom_killed(self) -> bool:
        """Did the kernel kill a process of this run for exceeding the memory budget?"""
        try:
            if "v2" in self.dirs:
                text = _read(os.path.join(self.dirs["v2"], "memory.events"))
            else:
                text = _read(os.path.join(self.dirs["memory"], "memory.oom_control"))
        except OSError:
            return False
        fields = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
        return int(fields.get("oom_kill", "0")) > 0

    def peak_bytes(self) -> int | None:
        name = ("memory.peak" if "v2" in self.dirs else "memory.max_usage_in_bytes")
        try:
            return int(_read(os.path.join(self.dirs.get("v2") or self.dirs["memory"], name)))
        except (OSError, ValueError, KeyError):
            return None

    def remove(self, timeout_s: float = 10.0) -> None:
        """Remove the cgroup(s) once they are empty. A run's last task may still be exiting
        when the grader is done with it: after an OOM kill the namespace's last process frees
        the private tmpfs (~0.2-1.3 s for 500k inodes), and the cgroup is busy until then.
        Whatever is still listed is killed (only the run's processes are there); the wait is
        bounded, then the leftover is logged."""
        deadline = time.monotonic() + timeout_s
        pause = 0.005
        for d in list(self.dirs.values()):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("could not remove cgroup %s: still busy after %gs", d, timeout_s)
                        break
                    _kill_members(d)
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
        self.dirs.clear()


def _kill_members(d: str) -> None:
    """SIGKILL every process still in cgroup `d`."""
    try:
        pids = [int(x) for x in _read(os.path.join(d, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
