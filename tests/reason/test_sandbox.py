"""Sandbox and code grading: HumanEval canonical solutions, broken variants, hostile programs.

Hostile programs run with small limits (a few seconds) so the suite stays fast; each must get
the right verdict, leave the grader running, and change nothing outside its sandbox.
"""

import gzip
import json
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from posttrain.core.assets import asset_path
from posttrain.reason.sandbox import (RunResult, _fresh_uid, SandboxLimits, extract_code, grade_code, grade_many,
                               isolation_report, run_function_tests, run_python)

FAST = SandboxLimits(timeout_s=3, memory_mb=256, max_procs=8, max_output_bytes=64 << 10)
SHORT = SandboxLimits(timeout_s=1, memory_mb=256, max_procs=8, max_output_bytes=64 << 10)  # expected timeouts
WORKERS = max(2, (os.cpu_count() or 1) * 2)  # sandboxes mostly wait on process start-up

ADD_TESTS = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-5, 5) == 0
    assert candidate(10, 32) == 42
"""
ADD = {"domain": "code", "tests": ADD_TESTS, "entry_point": "add", "prompt": "def add(a, b):\n"}


@pytest.fixture(scope="module")
def humaneval():
    with gzip.open(asset_path("humaneval"), "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def iso():
    return isolation_report()


def _problem(p):
    return {"domain": "code", "prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"]}


# A broken variant of every canonical solution: the real function runs, but its result is
# perturbed in a type-preserving way, so the tests execute it and must notice.
BREAK = '''

_real_solution = {ep}
def _perturb(r):
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1.5
    if isinstance(r, str):
        return r + "#"
    if isinstance(r, (list, tuple)):
        return type(r)(list(r) + [None])
    return "broken"
def {ep}(*args, **kwargs):
    return _perturb(_real_solution(*args, **kwargs))
'''


def _humaneval_items(problems):
    items = []
    for p in problems:
        good = p["prompt"] + p["canonical_solution"]
        items.append((f"```python\n{good}```", _problem(p)))
        items.append((f"```python\n{good}{BREAK.format(ep=p['entry_point'])}```", _problem(p)))
    return items


def _check_humaneval(problems):
    grades = grade_many(_humaneval_items(problems), workers=WORKERS,
                        limits=SandboxLimits(timeout_s=30), progress=False)
    for k, p in enumerate(problems):
        good, bad = grades[2 * k], grades[2 * k + 1]
        assert (good.grade, good.reason) == (1, "correct"), (p["task_id"], good.detail)
        assert good.method == "fenced"
        assert bad.grade == 0 and bad.reason == "wrong_answer", (p["task_id"], bad)


def test_humaneval_all_164_canonical_pass_broken_fail(humaneval):
    # ~25 s with parallel sandboxes: worth it in the default suite (it is the acceptance bar)
    assert len(humaneval) == 164
    _check_humaneval(humaneval)


def test_extract_code_last_python_block():
    text = "first\n```python\nx = 1\n```\nthen\n```\nplain\n```\nfinally\n```py\ny = 2\n```\n"
    assert extract_code(text) == ("y = 2\n", "fenced")
    assert extract_code("```python\nz = 3\n")[1] == "unclosed_fence"
    assert extract_code("def f():\n    return 1\n") == ("def f():\n    return 1\n", "whole_text")
    assert extract_code("   ") == (None, None)
    assert grade_code("", ADD).reason == "no_answer"


def test_completion_style_solution_gets_the_prompt():
    g = grade_code("    return a + b\n", ADD, FAST)
    assert (g.grade, g.method) == (1, "whole_text+prompt")


def test_full_function_gets_the_prompt_imports():
    prob = {"domain": "code", "prompt": "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
            "    \"\"\"Sum.\"\"\"\n", "tests": "def check(candidate):\n    assert candidate([1, 2]) == 3\n",
            "entry_point": "total"}
    g = grade_code("```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```", prob, FAST)
    assert (g.grade, g.method) == (1, "fenced"), g
    assert g.extracted.startswith("from typing import List\n")


def test_stdio_cases():
    prob = {"domain": "code", "tests": [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]}
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert grade_code(good, prob, FAST).grade == 1
    assert grade_code(good.replace("+", "*"), prob, FAST).reason == "wrong_answer"
    assert grade_code("raise SystemExit('boom')", prob, FAST).reason == "error"
    assert grade_code("while True: pass", prob, SHORT).reason == "timeout"
    # a fake success marker on stdout means nothing: only the expected output counts
    assert grade_code("print('PASS')", prob, FAST).reason == "wrong_answer"
    apps = {"domain": "code", "tests": {"inputs": ["1\n", "5\n"], "outputs": ["2\n", ["6"]]}}
    assert grade_code("print(int(input()) + 1)", apps, FAST).grade == 1
    apps["tests"] = json.dumps(apps["tests"])  # APPS ships input_output as a JSON string
    assert grade_code("print(int(input()) + 1)", apps, FAST).grade == 1
    assert grade_code("print(int(input()) + 2)", apps, FAST).reason == "wrong_answer"


def test_apps_call_based():
    tests = {"fn_name": "pairs", "inputs": [[[1, 2, 3], 2], [[], 1]], "outputs": [[[[1, 2], [2, 3]]], [[]]]}
    prob = {"domain": "code", "tests": tests}
    good = "def pairs(xs, k):\n    return [tuple(xs[i:i + k]) for i in range(len(xs) - k + 1)]\n"
    assert grade_code(good, prob, FAST).grade == 1
    assert grade_code(good.replace("+ 1)", ")"), prob, FAST).reason == "wrong_answer"


def test_isolation_applied_as_root(iso):
    assert iso["status"] == "ok" and iso["rlimits"]
    if os.geteuid() != 0 or _fresh_uid() is None:
        pytest.skip("not root (or no unprivileged uid mapped): no setuid / private mounts here")
    assert iso["setuid"] and iso["netns"] and iso["private_tmp"] and iso["no_new_privs"]
    assert iso["pidns"] and iso["private_proc"] and iso["readonly_fs"] and iso["minimal_root"]
    assert iso["uid"] != 0


# ---------------------------------------------------------------- hostile programs

def test_infinite_loop_times_out():
    r = run_python("while True:\n    pass\n", limits=SHORT)
    assert r.status == "timeout"
    g = grade_code("def add(a, b):\n    while True:\n        pass\n", ADD, SHORT)
    assert (g.grade, g.reason) == (0, "timeout")
    g = grade_code("import time\ndef add(a, b):\n    time.sleep(100)\n", ADD, SHORT)
    assert (g.grade, g.reason) == (0, "timeout")


def _procs_of_uid(uid):
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                found.append(int(d.name))  # zombies are dead: only their exit status remains
    return found


def test_fork_bomb_is_contained_and_cleaned_up(iso):
    bomb = ("import os\ncount = 0\nwhile True:\n    try:\n        os.fork()\n        count += 1\n"
            "    except OSError:\n        pass\n")
    r = run_python(bomb, limits=SHORT)
    assert r.status == "timeout"
    if iso.get("setuid"):
        assert _procs_of_uid(r.isolation["uid"]) == []  # every forked process is gone
    # escaping the session does not escape the cleanup
    r = run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nelse:\n"
                   "    time.sleep(0.2)\n", limits=FAST)
    assert r.status == "ok"
    if iso.get("setuid"):
        assert _procs_of_uid(r.isolation["uid"]) == []
    g = grade_code("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                   "        except OSError:\n            pass\n", ADD, SHORT)
    assert (g.grade, g.reason) == (0, "timeout")


def test_memory_bomb():
    r = run_python("x = bytearray(4 << 30)\n", limits=FAST)
    assert r.status == "memory"
    r = run_python("a = []\nwhile True:\n    a.append(bytearray(16 << 20))\n", limits=FAST)
    assert r.status == "memory"
    g = grade_code("def add(a, b):\n    return len([0] * (1 << 34))\n", ADD, FAST)
    assert (g.grade, g.reason) == (0, "memory")
    g = grade_code("blob = bytearray(4 << 30)\ndef add(a, b):\n    return a + b\n", ADD, FAST)
    assert (g.grade, g.reason) == (0, "memory")


def test_writing_outside_the_sandbox_changes_nothing(tmp_path):
    target_dir = tmp_path / "owned-by-test"
    target_dir.mkdir()
    target_dir.chmod(0o777)  # even a world-writable directory must stay untouched
    marker = f"posttrain-escape-{uuid.uuid4().hex}"
    victims = [target_dir / "escaped.txt", Path("/tmp") / marker, Path("/var/tmp") / marker,
               Path("/dev/shm") / marker]
    existing = target_dir / "keep.txt"
    existing.write_text("original")
    existing.chmod(0o666)
    code = "import os\nfor p in %r:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n" \
           "    except OSError as e:\n        print('blocked', p, type(e).__name__)\n" \
           "try:\n    open(%r, 'w').write('clobbered')\nexcept OSError:\n    pass\n" \
           "open('inside.txt', 'w').write('fine')\nprint(os.getcwd())\n" % ([str(v) for v in victims], str(existing))
    r = run_python(code, limits=FAST)
    assert r.status == "ok", r
    for v in victims:
        assert not v.exists(), v
    assert existing.read_text() == "original"
    cwd = r.stdout.strip().splitlines()[-1]
    assert not (Path(cwd) / "inside.txt").exists()  # the throwaway working directory is gone


def test_world_writable_directory_outside_tmp_stays_unchanged(iso):
    """Outside the tmp directories too: every other mount is read-only inside the sandbox."""
    if not iso.get("readonly_fs"):
        pytest.skip("no read-only remount on this machine")
    base = Path(__file__).resolve().parents[2] / ".pytest_cache"
    base.mkdir(exist_ok=True)
    target = base / f"sandbox-ro-{uuid.uuid4().hex}"
    target.mkdir()
    try:
        target.chmod(0o777)
        victim = target / "victim.txt"
        victim.write_text("original")
        victim.chmod(0o666)
        code = ("import os\nfor act in (lambda: open(%r, 'w').write('x'), lambda: open(%r, 'w').write('x'),\n"
                "            lambda: os.remove(%r)):\n    try:\n        act()\n        print('changed')\n"
                "    except OSError as e:\n        print('blocked', e.errno)\n"
                % (str(target / "new.txt"), str(victim), str(victim)))
        r = run_python(code, limits=FAST)
        assert r.status == "ok" and "changed" not in r.stdout, r
        assert sorted(p.name for p in target.iterdir()) == ["victim.txt"]
        assert victim.read_text() == "original"
    finally:
        for p in target.iterdir():
            p.unlink()
        target.rmdir()


def test_network_connection_is_refused(iso):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    code = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=1).sendall(b'hi')\n"
            "    print('connected')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n" % port)
    try:
        r = run_python(code, limits=FAST)
        if not iso.get("netns"):
            pytest.skip("no network namespace on this machine")
        assert r.status == "ok" and r.stdout.startswith("refused"), r
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_signalling_the_parent_and_everything(iso):
    if not iso.get("setuid"):
        pytest.skip("without a separate uid the sandbox could really kill the test process")
    for code in ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
                 "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
                 "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n"):
        r = run_python(code, limits=FAST)
        assert r.status in ("error", "ok", "killed")  # PermissionError, or it only killed itself
    g = grade_code("import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                   "    return 0\n", ADD, FAST)
    assert (g.grade, g.reason) == (0, "wrong_answer")  # the test harness survived to judge it
    assert grade_code("def add(a, b):\n    return a + b\n", ADD, FAST).grade == 1  # we are alive


def test_stdout_flood_is_cut():
    r = run_python("while True:\n    print('x' * 1000)\n", limits=FAST)
    assert r.status == "output_limit"
    assert len(r.stdout) <= FAST.max_output_bytes
    g = grade_code("import sys\ndef add(a, b):\n    while True:\n        sys.stderr.write('y' * 4096)\n", ADD, FAST)
    assert (g.grade, g.reason) == (0, "output_limit")


CHEATS = {
    "sys_exit_before_tests": "import sys\nsys.exit(0)\n",
    "os_exit_before_tests": "import os\nos._exit(0)\n",
    "exit_inside_call": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "redefine_check": "def check(candidate):\n    pass\ndef add(a, b):\n    return 0\n",
    "patch_assertion_error": ("import builtins\nclass Nope(BaseException):\n    pass\n"
                              "builtins.AssertionError = Nope\ndef add(a, b):\n    return 0\n"),
    "override_exit": ("import builtins, sys, os\nbuiltins.exit = builtins.quit = lambda *a: None\n"
                      "sys.exit = lambda *a: None\nos._exit = lambda *a: None\ndef add(a, b):\n    return 0\n"),
    "always_equal": ("class Eq:\n    def __eq__(self, other):\n        return True\n"
                     "def add(a, b):\n    return Eq()\n"),
    "int_subclass_equal": ("class I(int):\n    def __eq__(self, o):\n        return True\n"
                           "def add(a, b):\n    return I(0)\n"),
    "fake_stdout_marker": "print('PASS')\nprint('ok')\ndef add(a, b):\n    return 0\n",
    "write_every_fd": ("import os\nfor fd in range(3, 64):\n    for line in (b'PASS\\n', b'PASS 0\\n'):\n"
                       "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
                       "def add(a, b):\n    return 0\n"),
    "patch_builtins_for_tests": ("import builtins\nbuiltins.len = lambda x: 0\nbuiltins.print = None\n"
                                 "def add(a, b):\n    return 0\n"),
    "swallow_in_excepthook": ("import sys\nsys.excepthook = lambda *a: None\ndef add(a, b):\n"
                              "    raise AssertionError\n"),
    # the needle is built at run time so the solution does not just find its own source
    "look_for_the_tests": ("import gc, sys\nNEEDLE = 'candidate(10, ' + '32)'\ndef _leak():\n"
                           "    for o in gc.get_objects():\n"
                           "        vals = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()\n"
                           "        for v in list(vals):\n            if isinstance(v, str) and NEEDLE in v and v is not NEEDLE:\n"
                           "                return True\n    return False\nLEAK = _leak()\n"
                           "def add(a, b):\n    return a + b if LEAK else 0\n"),
    "read_raw_memory": ("import ctypes\nblob = ctypes.string_at(id(0), 64)\ndef add(a, b):\n    return a + b\n"),
    "kill_harness": "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n",
}


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheats_do_not_pass(name):
    g = grade_code(f"```python\n{CHEATS[name]}```", ADD, FAST)
    assert g.grade == 0, (name, g)


def test_solution_cannot_read_process_memory(iso):
    """The tests live in the harness's memory (and freed memory the solution inherited)."""
    if not iso.get("setuid"):
        pytest.skip("without a separate uid the process stays dumpable to itself")
    code = ("import os\nres = []\nfor p in ('/proc/self/mem', '/proc/1/mem', '/proc/%d/mem' % os.getppid()):\n"
            "    try:\n        open(p, 'rb').close()\n        res.append('open')\n"
            "    except OSError as e:\n        res.append(type(e).__name__)\nRES = res\n"
            "def probe():\n    return RES\n")
    r = run_function_tests(code, "def check(c):\n    assert c() == ['PermissionError'] * 3, c()\n", "probe",
                           limits=FAST)
    assert (r.status, r.reason) == ("ok", "correct"), r.detail


def test_honest_solution_passes_and_run_goes_on_among_hostiles():
    hostile = [CHEATS["sys_exit_before_tests"], "while True: pass", "print('x' * 10**7)",
               "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n", "blob = ' ' * (1 << 33)"]
    honest = "def add(a, b):\n    return a + b\n"
    items = []
    for h in hostile:
        items += [(h + "\n" + honest, ADD), (honest, ADD)]
    items.append(("The answer is \\boxed{42}.", {"domain": "math", "answer": "42"}))
    grades = grade_many(items, workers=WORKERS, limits=FAST, progress=False)
    assert [g.grade for g in grades] == [0, 1] * len(hostile) + [1]
    assert [g.reason for g in grades[0::2][:len(hostile)]] == ["error", "timeout", "output_limit",
                                                              "timeout", "memory"]


def test_grade_many_is_order_preserving_and_deterministic():
    items = [(f"def add(a, b):\n    return a + b + {k % 2}\n", ADD) for k in range(8)]
    a = grade_many(items, workers=4, limits=FAST, progress=False)
    b = grade_many(items, workers=1, limits=FAST, progress=False)
    assert a == b and [g.grade for g in a] == [1, 0] * 4


def test_tests_that_call_check_themselves_and_helpers_from_the_prompt():
    prompt = "def helper(x):\n    return x * 10\n\ndef scaled(x):\n"
    tests = "def check(candidate):\n    assert candidate(2) == helper(2) + 1\n\ncheck(scaled)\n"
    prob = {"domain": "code", "prompt": prompt, "tests": tests, "entry_point": "scaled"}
    assert grade_code("    return helper(x) + 1\n", prob, FAST).grade == 1
    assert grade_code("    return helper(x)\n", prob, FAST).grade == 0
    # tests that never call the solution cannot pass it
    prob = {"domain": "code", "tests": "def check(candidate):\n    pass\n", "entry_point": "f"}
    g = grade_code("def f():\n    return 1\n", prob, FAST)
    assert (g.grade, g.reason) == (0, "wrong_answer")


def test_a_dead_solution_fails_even_when_the_tests_swallow_errors():
    tests = ("def check(candidate):\n    for x in range(3):\n        try:\n            candidate(x)\n"
             "        except:\n            pass\n")
    prob = {"domain": "code", "tests": tests, "entry_point": "f"}
    assert grade_code("def f(x):\n    return x\n", prob, FAST).grade == 1
    g = grade_code("import os\ndef f(x):\n    os._exit(0)\n", prob, FAST)
    assert (g.grade, g.reason) == (0, "error")


def test_exceptions_cross_the_boundary_with_their_type():
    tests = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        pass\n"
             "    else:\n        assert False\n    assert candidate(4) == 2.0\n")
    prob = {"domain": "code", "tests": tests, "entry_point": "root"}
    good = "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n"
    assert grade_code(good, prob, FAST).grade == 1
    assert grade_code(good.replace("ValueError", "KeyError"), prob, FAST).grade == 0


def test_run_result_fields():
    r = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\n", limits=FAST)
    assert isinstance(r, RunResult)
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "out\n", "err\n")
    assert r.wall_s > 0
    r = run_python("raise ValueError('x')", limits=FAST)
    assert r.status == "error" and "ValueError" in r.stderr
    r = run_function_tests("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f", limits=FAST)
    assert (r.status, r.reason) == ("ok", "correct")


def test_only_allowlisted_packages_are_importable(iso):
    if not iso.get("minimal_root"):
        pytest.skip("no minimal root here: site-packages stay out of sys.path only")
    from dataclasses import replace
    code = ("import importlib\nfor n in ('click', 'yaml'):\n    try:\n        importlib.import_module(n)\n"
            "        print(n, 'ok')\n    except ImportError:\n        print(n, 'missing')\n")
    assert run_python(code, limits=FAST).stdout.split() == ["click", "missing", "yaml", "missing"]
    allowed = replace(FAST, packages=("click",))
    assert run_python(code, limits=allowed).stdout.split() == ["click", "ok", "yaml", "missing"]
    r = run_function_tests("import click\ndef f():\n    return click.unstyle(click.style('x', fg='red'))\n", "def check(c):\n    assert c() == 'x'\n",
                           "f", limits=allowed)
    assert (r.status, r.reason) == ("ok", "correct"), r.detail
    with pytest.raises(ValueError, match="'no_such_package_xyz' allowed for solutions is not installed"):
        run_python("pass", limits=replace(FAST, packages=("no_such_package_xyz",)))


def test_grading_from_threads_and_env_is_scrubbed():
    os.environ["POSTTRAIN_SECRET_FOR_TEST"] = "s3cret"
    try:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=run_python(
            "import os\nprint(sorted(os.environ))\n", limits=FAST)))
        t.start()
        t.join()
        assert out["r"].status == "ok"
        assert "POSTTRAIN_SECRET_FOR_TEST" not in out["r"].stdout
    finally:
        del os.environ["POSTTRAIN_SECRET_FOR_TEST"]
