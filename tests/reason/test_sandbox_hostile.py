"""Hostile programs against the sandbox, at small limits: each case asserts that it is contained
(nothing outside changed or was reached) or the exact verdict reason, plus benign controls.

Protections that need the host's help (root, seccomp, a cgroup) are checked where
`isolation_report()` says they are active; a case whose protection is missing is skipped
with the reason, so a host without them shows up as skips, not as passes.
"""

import ctypes
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
    assert (r.status, _lines(r)) == ("ok", ["PermissionError"] * len(paths)), r


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
