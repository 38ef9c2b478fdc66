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
from pathlib import Path

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


def test_mirror_recreates_the_symlinks_on_the_way(tmp_path):
    """The solution's root holds each needed host file at its real path, and the symlinks met on
    the way (/lib -> usr/lib, a venv's python -> ...) as the same links, so both names work."""
    host = tmp_path / "host"
    (host / "usr" / "lib").mkdir(parents=True)
    (host / "usr" / "lib" / "libx.so.1").write_text("x")
    (host / "lib").symlink_to("usr/lib")  # relative
    (host / "usr" / "lib" / "libx.so").symlink_to("libx.so.1")
    (host / "abs").symlink_to(host / "lib")  # absolute, and a chain: abs -> lib -> usr/lib
    root = tmp_path / "root"
    root.mkdir()
    path = str(host / "abs" / "libx.so")
    assert H._mirror(str(root), path) == os.path.realpath(path)
    inside = Path(str(root) + os.path.realpath(host))
    assert os.readlink(inside / "abs") == str(host / "lib")
    assert os.readlink(inside / "lib") == "usr/lib"
    assert os.readlink(inside / "usr" / "lib" / "libx.so") == "libx.so.1"
    assert not (inside / "usr" / "lib" / "libx.so.1").exists()  # the file itself is bound, not copied
    (host / "loop").symlink_to("loop")
    with pytest.raises(OSError):
        H._mirror(str(root), str(host / "loop"))


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


def test_seccomp_filter_denies_namespaces_new_mount_api_aio_and_locks_even_to_root():
    """As root every call below would succeed unfiltered; the filter answers EPERM (clone3:
    ENOSYS, so libc falls back to clone, whose flags it checks). fork and threads still work."""
    path = _seccomp_path()
    if path is None or os.geteuid() != 0:
        pytest.skip("needs pyseccomp and root (unprivileged, the kernel refuses these anyway)")
    import pyseccomp
    names = ("clone", "unshare", "setns", "clone3", "fsopen", "fspick", "fsconfig", "fsmount", "move_mount",
             "open_tree", "mount_setattr", "io_setup", "flock")
    nr = {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}
    out = _child(f"""
        import ctypes, errno, fcntl, os, threading
        NR = {nr!r}
        f = H.seccomp_filter({path!r})
        libc = ctypes.CDLL(None, use_errno=True)
        def call(name, *args):
            r = libc.syscall(NR[name], *args)
            if r == 0 and name == "clone":
                os._exit(0)
            if r > 0 and name == "clone":
                os.waitpid(r, 0)
            return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
        assert libc.prctl(38, 1, 0, 0, 0) == 0
        f.load()
        res = [call("clone", 0x04000000 | 17, 0, 0, 0, 0), call("clone", 0x20000 | 17, 0, 0, 0, 0),
               call("unshare", 0x04000000), call("unshare", 0), call("setns", os.open("/proc/self/ns/uts", 0), 0),
               call("clone3", 0, 0), call("fsopen", b"tmpfs", 0), call("fspick", -100, b"/", 0),
               call("fsconfig", 3, 6, 0, 0, 0), call("fsmount", 3, 0, 0), call("move_mount", -100, b"/", -100, b"/", 0),
               call("open_tree", -100, b"/", 1), call("mount_setattr", -100, b"/", 0, 0, 0),
               call("io_setup", 1, ctypes.byref(ctypes.c_ulong(0)))]
        try:
            fcntl.flock(os.open(os.__file__, os.O_RDONLY), fcntl.LOCK_SH)
            res.append("ok")
        except OSError as e:
            res.append(errno.errorcode[e.errno])
        try:
            fcntl.lockf(os.open("/dev/null", os.O_RDWR), fcntl.LOCK_EX)
            res.append("ok")
        except OSError as e:
            res.append(errno.errorcode[e.errno])
        res.append(call("clone", 17, 0, 0, 0, 0))  # a plain fork by raw clone
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        res.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        box = []
        t = threading.Thread(target=box.append, args=(1,))
        t.start(); t.join()
        res.append(box)
        print(res)
    """)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == ["EPERM"] * 5 + ["ENOSYS"] + ["EPERM"] * 10 + ["ok", 3, [1]]
