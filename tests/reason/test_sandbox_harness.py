"""Unit tests of the in-sandbox harness module, outside any sandbox.

Anything that installs the audit hook or a seccomp filter runs in a child interpreter: both
are irreversible for the process that installs them.
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from fractions import Fraction

import pytest

from posttrain.reason import sandbox_harness as H
from posttrain.reason.sandbox import _seccomp_path

HARNESS = H.__file__


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh `python -I -S` with the harness importable as module `H`."""
    prog = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('H', {HARNESS!r})\n"
            "H = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(H)\n" + textwrap.dedent(code))
    return subprocess.run([sys.executable, "-I", "-S", "-c", prog, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("event", ["code.__new__", "marshal.loads", "marshal.load", "ctypes.dlopen",
                                   "ctypes.string_at", "ctypes.cdata"])
def test_audit_guard_denies_code_building_and_raw_memory(event):
    with pytest.raises(RuntimeError, match="not available in the sandbox"):
        H.audit_guard(event, ())


@pytest.mark.parametrize("path", ["/proc/self/mem", "/proc/1/mem", "/proc/self/task/7/mem", "/proc/12/pagemap",
                                  "/proc/./self/mem"])
def test_audit_guard_denies_opening_process_memory(path):
    with pytest.raises(PermissionError):
        H.audit_guard("open", (path, "rb", 0))


@pytest.mark.parametrize("event,args", [("open", ("/proc/self/maps", "r", 0)), ("open", ("data.txt", "w", 0)),
                                        ("exec", (None,)), ("compile", (b"x", "<s>")), ("import", ("json",))])
def test_audit_guard_allows_ordinary_events(event, args):
    assert H.audit_guard(event, args) is None


def test_guards_installed_deny_code_replace_and_marshal_but_imports_work():
    out = _child("""
        H.install_guards()
        import statistics, fractions, decimal, json  # not yet imported: compiled from source
        print(statistics.mean([1, 2]))
        for f in (lambda: (lambda: 0).__code__.replace(co_consts=()),
                  lambda: __import__("marshal").loads(b"N")):
            try:
                f()
                print("allowed")
            except RuntimeError as e:
                print(e)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1.5", "code.__new__ is not available in the sandbox",
                                       "marshal.loads is not available in the sandbox"]


def test_framing_round_trip_and_cap():
    r, w = os.pipe()
    try:
        H.send(w, b"hello")
        H.send(w, b"x" * 100)
        assert H.recv(r, 1 << 20) == b"hello"
        with pytest.raises(OverflowError):  # the caller treats the peer as broken from here
            H.recv(r, 10)
    finally:
        os.close(r)
        os.close(w)
    r, w = os.pipe()
    try:
        os.write(w, b"\0\0")
        os.close(w)
        w = None
        assert H.recv(r, 1 << 20) is None  # EOF inside a header: the peer is gone
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_plain_unpickler_accepts_data_and_rejects_objects():
    import io
    data = {"a": [1, 2.5, "s", (None, True)], "f": Fraction(1, 3), "s": {1, 2}, "r": range(3)}
    assert H.PlainUnpickler(io.BytesIO(pickle.dumps(data))).load() == data

    with pytest.raises(pickle.UnpicklingError, match="non-plain object"):
        H.PlainUnpickler(io.BytesIO(pickle.dumps(ValueError("x")))).load()
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        H.PlainUnpickler(io.BytesIO(pickle.dumps(os.system))).load()


def test_reachable_by_others(tmp_path):
    open_dir = tmp_path / "open"
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    open_dir.mkdir()
    for p in (tmp_path, open_dir, closed / "inner"):
        p.chmod(0o755)
    closed.chmod(0o700)
    tmp_path.parent.chmod(tmp_path.parent.stat().st_mode | 0o001)
    ancestors_open = all(os.stat(p).st_mode & 1 for p in tmp_path.parents)
    assert H._reachable_by_others(str(open_dir)) is ancestors_open
    assert H._reachable_by_others(str(closed / "inner")) is False
    assert H._reachable_by_others(str(tmp_path / "missing")) is False


def test_join_cgroups_writes_our_pid(tmp_path):
    procs = [tmp_path / "a.procs", tmp_path / "b.procs"]
    for p in procs:
        p.write_text("")
    assert H.join_cgroups([str(p) for p in procs]) is True
    assert [p.read_text() for p in procs] == [str(os.getpid())] * 2
    assert H.join_cgroups([]) is False  # nothing to join: no budget
    assert H.join_cgroups([str(tmp_path / "no" / "such")]) is False


def test_seccomp_filter_needs_pyseccomp_from_the_given_dir():
    assert H.seccomp_filter(None) is None
    path = _seccomp_path()
    if path is None:
        pytest.skip("pyseccomp is not installed")
    out = _child(f"""
        import errno, os, socket
        f = H.seccomp_filter({path!r})
        assert f is not None and {path!r} not in sys.path  # only borrowed for the import
        os.write(1, b"")
        import ctypes
        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # no_new_privs: needed to load a filter unprivileged
        f.load()
        a, b = socket.socketpair()
        a.sendall(b"ok")
        print(b.recv(2).decode())
        for make in (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
                     lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                     lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)):
            try:
                make()
                print("created")
            except OSError as e:
                print(errno.errorcode[e.errno])
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["ok", "EPERM", "EPERM", "EPERM"]


def test_solution_process_protocol():
    """C, as P starts it (`--solution` over pipes): load, answer calls, report exceptions."""
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    code_r, code_w = os.pipe()
    code = "def f(x):\n    if x < 0:\n        raise ValueError('neg')\n    return {'x': x, 'sq': x * x}\n"
    src = open(HARNESS).read()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", src, "--solution", str(p2c_r), str(c2p_w),
                             str(code_r)], pass_fds=(p2c_r, c2p_w, code_r))
    for fd in (p2c_r, c2p_w, code_r):
        os.close(fd)
    os.write(code_w, json.dumps({"code": code, "entry_point": "f"}).encode())
    os.close(code_w)

    def call(*args):
        H.send(p2c_w, pickle.dumps((args, {})))
        return pickle.loads(H.recv(c2p_r, 1 << 20))
    try:
        assert pickle.loads(H.recv(c2p_r, 1 << 20)) == ("ready",)
        assert call(3) == ("ok", {"x": 3, "sq": 9})
        assert call(-1) == ("exc", "ValueError", "neg")
    finally:
        os.close(p2c_w)  # EOF: the solution process exits
        assert proc.wait(timeout=30) == 0
        os.close(c2p_r)


def test_solution_process_reports_load_errors():
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    code_r, code_w = os.pipe()
    src = open(HARNESS).read()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", src, "--solution", str(p2c_r), str(c2p_w),
                             str(code_r)], pass_fds=(p2c_r, c2p_w, code_r))
    for fd in (p2c_r, c2p_w, code_r):
        os.close(fd)
    os.write(code_w, json.dumps({"code": "import sys\nsys.exit(0)\n", "entry_point": "f"}).encode())
    os.close(code_w)
    try:
        assert pickle.loads(H.recv(c2p_r, 1 << 20)) == ("load_error", "SystemExit", "0")
    finally:
        os.close(p2c_w)
        proc.wait(timeout=30)
        os.close(c2p_r)


def test_importing_the_harness_has_no_side_effects():
    # the grader imports it (for its path and its deps); only main() changes interpreter state
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys\nsys.path.insert(0, {os.path.dirname(HARNESS)!r})\n"
                          "import sandbox_harness\nprint(sys.dont_write_bytecode)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False"], out.stderr


def test_interpreter_of_a_venv_under_tmp_still_runs_the_solution(tmp_path):
    """The private /tmp hides a venv that lives there (CI clones may): the harness resolves
    the interpreter before mounting, so the solution process still starts."""
    import subprocess
    import sys
    import venv
    from pathlib import Path

    venv.EnvBuilder(with_pip=False, symlinks=True).create(tmp_path / "venv")
    src = Path(__file__).resolve().parents[2] / "src"
    code = ("from posttrain.reason.sandbox import grade_code\n"
            "p = {'id': 'x', 'domain': 'code', 'entry_point': 'add', "
            "'tests': 'def check(candidate):\\n    assert candidate(1, 2) == 3\\n'}\n"
            "g = grade_code('```python\\ndef add(a, b):\\n    return a + b\\n```', p)\n"
            "print(g.reason, g.detail)\n")
    out = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.stdout.split()[:1] == ["correct"], out.stdout + out.stderr
