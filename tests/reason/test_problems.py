"""reason_collect: packaged sources, hub schemas (in-memory rows), caps and sampling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.reason import problems as P
from posttrain.core.io import DataError, read_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packaged():
    out = {}
    for name in ("gsm8k-test", "aime2025", "champ", "humaneval"):
        recs, skipped = P.load_source(P.SourceSpec(name))
        assert skipped == 0
        out[name] = {r["id"]: r for r in recs}
    return out


def _run_tests_program(code: str, program: str) -> None:
    """Execute solution + HumanEval-style test program (trusted reference code only)."""
    ns: dict = {}
    exec(compile(code + "\n\n" + program, "<test>", "exec"), ns)


def test_packaged_counts_and_gold_answers(packaged):
    assert {k: len(v) for k, v in packaged.items()} == {
        "gsm8k-test": 1319, "aime2025": 30, "champ": 270, "humaneval": 164}
    g = packaged["gsm8k-test"]
    assert g["gsm8k-test/0000"]["answer"] == "18"  # Janet's ducks
    assert g["gsm8k-test/0000"]["problem"].startswith("Janet")
    # thousands separators are dropped from gold answers
    assert not [r for r in g.values() if "," in r["answer"]]
    assert "1450000" in {r["answer"] for r in g.values()}
    a = packaged["aime2025"]
    assert a["aime2025/0000"]["answer"] == "70"          # 2025-I problem 1 (bases b > 9)
    assert a["aime2025/0015"]["answer"] == "468" and a["aime2025/0016"]["answer"] == "49"  # 2025-II 1, 2
    assert all(r["domain"] == "math" and r["answer"] for r in a.values())
    c = packaged["champ"]["champ/P_Combinatorics_1"]
    assert c["answer"] == "239" and c["category"] == "Combinatorics"
    assert "@@" not in "".join(r["answer"] for r in packaged["champ"].values())


def test_humaneval_records_run_their_tests(packaged):
    from posttrain.core.assets import asset_path
    from posttrain.core.io import iter_jsonl

    canon = {rec["task_id"]: rec["canonical_solution"] for _, rec in iter_jsonl(asset_path("humaneval"))}
    h = packaged["humaneval"]
    rec = h["humaneval/0000"]
    assert rec["domain"] == "code" and rec["entry_point"] == "has_close_elements"
    assert rec["task_id"] == "HumanEval/0"
    assert rec["tests"].rstrip().endswith("check(has_close_elements)")
    for pid in ("humaneval/0000", "humaneval/0053", "humaneval/0163"):
        r = h[pid]
        _run_tests_program(r["prompt"] + canon[r["task_id"]], r["tests"])
        with pytest.raises(AssertionError):  # a wrong body fails the program
            _run_tests_program(r["prompt"] + "    return None\n", r["tests"])


def test_sample_is_deterministic_and_round_robin():
    specs = P.parse_sources([{"name": "gsm8k-test", "weight": 2}, "aime2025", {"name": "humaneval", "cap": 5}])
    a, ma = P.collect(specs, P.CollectSettings(sample=10, seed=3))
    b, _ = P.collect(specs, P.CollectSettings(sample=10, seed=3))
    c, _ = P.collect(specs, P.CollectSettings(sample=10, seed=4))
    assert [p["id"] for p in a] == [p["id"] for p in b]
    assert [p["id"] for p in a] != [p["id"] for p in c]
    sel = {s: m["selected"] for s, m in ma["by_source"].items()}
    # turns of (2, 1, 1) until 10: g g a h | g g a h | g g -> 6, 2, 2
    assert sel == {"gsm8k-test": 6, "aime2025": 2, "humaneval": 2}
    assert ma["by_domain"] == {"math": 8, "code": 2}
    assert len({p["id"] for p in a}) == 10


def test_caps_limit_each_source_and_sample_zero_keeps_all():
    specs = P.parse_sources(["aime2025:7", {"name": "humaneval", "cap": 3}])
    probs, m = P.collect(specs, P.CollectSettings(sample=0, seed=0))
    assert m["by_source"]["aime2025"]["selected"] == 7 and m["by_source"]["humaneval"]["selected"] == 3
    # the cap is a seeded subset, not just the first rows
    assert [p["id"] for p in probs if p["source"] == "aime2025"] != [f"aime2025/{i:04d}" for i in range(7)]
    # a sample larger than what the sources hold takes everything
    probs2, _ = P.collect(specs, P.CollectSettings(sample=100, seed=0))
    assert sorted(p["id"] for p in probs2) == sorted(p["id"] for p in probs)


def test_parse_sources_rejects_bad_entries():
    for bad in ([], [{"cap": 3}], [{"name": "x", "cap": -1}], [{"name": "x", "bogus": 1}],
                ["gsm8k-test", "gsm8k-test"], [{"name": "x", "weight": 0}]):
        with pytest.raises(ValueError):
            P.parse_sources(bad)
    with pytest.raises(ValueError, match="unknown dataset"):
        P.load_source(P.SourceSpec("someone/unknown-set"))


def test_last_boxed_and_gsm8k_answer():
    assert P.last_boxed(r"so \boxed{3} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert P.last_boxed(r"\boxed{x^{2}+\sqrt{y}}") == r"x^{2}+\sqrt{y}"
    assert P.last_boxed("no box") is None
    assert P.gold_from_gsm8k("a\n#### 1,000") == "1000"
    with pytest.raises(ValueError):
        P.gold_from_gsm8k("no marker")


def _rows(rows):
    return list(enumerate(rows, start=1))


def test_math500_and_full_math_rows():
    m500 = [{"problem": "What is $1+1$?", "solution": r"It is $\boxed{2}$.", "answer": "2",
             "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"}]
    recs, skipped = P.convert_math(_rows(m500), "HuggingFaceH4__MATH-500", "hub")
    assert recs[0]["answer"] == "2" and recs[0]["category"] == "Prealgebra" and recs[0]["difficulty"] == "1"
    assert recs[0]["id"] == "HuggingFaceH4__MATH-500/0000"
    full = [{"problem": "Half of one?", "level": "Level 2", "type": "Algebra",
             "solution": r"We get $\boxed{\frac{1}{2}}$."},
            {"problem": "No box", "level": "Level 1", "type": "Algebra", "solution": "The answer is 3."}]
    recs, skipped = P.convert_math(_rows(full), "math", "hub")
    assert [r["answer"] for r in recs] == [r"\frac{1}{2}"] and skipped == 1


def test_aime_hub_schemas():
    rows = [{"id": 0, "problem": "Find x.", "solution": "...", "answer": 204, "url": "u"},
            {"ID": "2024-I-1", "Problem": "Find y.", "Solution": "...", "Answer": 33}]
    recs, _ = P.convert_aime(_rows(rows), "aime", "hub")
    assert [(r["problem"], r["answer"]) for r in recs] == [("Find x.", "204"), ("Find y.", "33")]
    with pytest.raises(DataError, match="answer"):
        P.convert_aime(_rows([{"problem": "q"}]), "aime", "hub")


def test_apps_stdin_and_call_based_rows():
    stdin_row = {"problem_id": 7, "question": "Read two ints, print their sum.",
                 "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}),
                 "difficulty": "introductory", "starter_code": "", "solutions": "[]"}
    call_row = {"problem_id": 8, "question": "Return a+b.", "difficulty": "interview",
                "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [5, 5]], "outputs": [[3], 10]}),
                "starter_code": "class Solution:\n    def add(self, a, b):\n        ", "solutions": "[]"}
    empty_row = {"problem_id": 9, "question": "q", "input_output": "", "starter_code": ""}
    recs, skipped = P.convert_apps(_rows([stdin_row, call_row, empty_row]), "codeparrot__apps", "hub")
    assert skipped == 1 and len(recs) == 2
    s, c = recs
    assert s["tests"] == [{"input": "1 2\n", "output": "3\n"}, {"input": "3 4\n", "output": "7\n"}]
    assert s["difficulty"] == "introductory" and s["domain"] == "code"
    assert c["entry_point"] == "add" and "Starter code" in c["problem"]
    _run_tests_program("class Solution:\n    def add(self, a, b):\n        return a + b\n", c["tests"])
    with pytest.raises(AssertionError):
        _run_tests_program("class Solution:\n    def add(self, a, b):\n        return a - b\n", c["tests"])
    with pytest.raises(DataError, match="input_output"):
        P.convert_apps(_rows([{**stdin_row, "input_output": "{not json"}]), "apps", "hub")


def test_mbpp_rows_become_check_programs():
    row = {"task_id": 2, "text": "Write a function to find the shared elements from the given two lists.",
           "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
           "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                         "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
           "test_setup_code": "", "challenge_test_list": []}
    recs, _ = P.convert_mbpp(_rows([row]), "mbpp", "hub")
    r = recs[0]
    assert r["entry_point"] == "similar_elements" and r["tests"].rstrip().endswith("check(similar_elements)")
    assert "Your code should pass these tests" in r["problem"]
    _run_tests_program(row["code"], r["tests"])
    with pytest.raises(AssertionError):
        _run_tests_program("def similar_elements(a, b):\n    return ()", r["tests"])
    sanitized = {"task_id": 3, "prompt": "Write a python function to identify non-prime numbers.",
                 "code": "def is_not_prime(n):\n    return n < 2 or any(n % i == 0 for i in range(2, n))",
                 "test_imports": ["import math"], "test_list": ["assert is_not_prime(2) == False"]}
    recs, _ = P.convert_mbpp(_rows([sanitized]), "mbpp", "hub")
    assert recs[0]["tests"].startswith("import math") and recs[0]["entry_point"] == "is_not_prime"


def test_hub_ids_dispatch_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"problem": f"p-{config}", "level": "Level 1", "type": "Algebra",
                                            "solution": r"$\boxed{5}$"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs, _ = P.load_source(P.SourceSpec("EleutherAI/hendrycks_math"))
    assert len(recs) == 7 and all(r["answer"] == "5" for r in recs)  # every subject config
    assert {c[2] for c in calls} == {"test"}
    assert recs[0]["source"] == "EleutherAI__hendrycks_math"

    calls.clear()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or datasets.Dataset.from_list(
        [{"id": 4, "question": "Sum.", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}),
          "difficulty": "interview", "starter_code": "", "solutions": "[]", "url": "u"}]))
    recs, _ = P.load_source(P.SourceSpec("codeparrot/apps", split="test"))
    assert calls == [(("json",), {"data_files": "hf://datasets/codeparrot/apps/test.jsonl", "split": "train"})]
    assert recs[0]["task_id"] == "4" and recs[0]["tests"] == [{"input": "1 2\n", "output": "3\n"}]


def test_local_file_with_loader(tmp_path):
    f = tmp_path / "my_gsm.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n{"question": "bad"}\n')
    with pytest.raises(DataError) as e:
        P.load_source(P.SourceSpec(str(f), loader="gsm8k"))
    assert "line 2" in str(e.value) and "answer" in str(e.value)


def test_collect_stage_writes_problems_and_metrics(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("reason:\n  sources:\n    - {name: gsm8k-test, cap: 10}\n    - {name: humaneval, cap: 4}\n")
    out, met = tmp_path / "problems.jsonl", tmp_path / "m.json"
    cmd = [sys.executable, str(REPO / "stages/reason_collect.py"), "--params-file", str(params),
           "--sample", "6", "--seed", "1", "--out", str(out), "--metrics", str(met)]
    subprocess.run(cmd, check=True, cwd=REPO)
    first = out.read_bytes()
    recs = P.read_problems(out)
    assert len(recs) == 6 and {r["domain"] for r in recs} == {"math", "code"}
    m = json.loads(met.read_text())
    assert m["by_domain"] == {"math": 3, "code": 3} and m["by_source"]["humaneval"]["available"] == 164
    subprocess.run(cmd, check=True, cwd=REPO)
    assert out.read_bytes() == first  # byte-identical rerun
    assert read_jsonl(out)[0]["id"].startswith("gsm8k-test/")
