"""reason_format templates, math:code mix, graded pairs and filter metrics (no grading libs needed)."""

import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from posttrain.reason import graded as G
from posttrain.reason import sft_format as F
from posttrain.core.io import read_jsonl, write_jsonl

MATH_P = {"id": "gsm8k-test/0000", "domain": "math", "source": "gsm8k-test",
          "problem": "Janet has 3 apples and buys 2 more. How many?", "answer": "5"}
CODE_P = {"id": "humaneval/0053", "domain": "code", "source": "humaneval", "answer": "",
          "problem": "def add(x, y):\n    \"\"\"Add.\"\"\"\n", "prompt": "def add(x, y):\n    \"\"\"Add.\"\"\"\n",
          "entry_point": "add", "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"}
PROBLEMS = {p["id"]: p for p in (MATH_P, CODE_P)}

MATH_OK = "Step 1: Janet starts with 3 apples.\nStep 2: She buys 2, so 3 + 2 = 5.\nThe answer is \\boxed{5}."
MATH_BAD = "1. She has 3.\n2. 3 + 3 = 6.\nFinal answer: \\boxed{6}"
CODE_OK = ("First, we add the two numbers.\n\nThen we return the sum.\n\n"
           "```python\ndef add(x, y):\n    return x + y\n```")
CODE_BAD = "```python\ndef add(x, y):\n    return x - y\n```"


def sample(pid, idx, text, grade, reason, extracted=None, domain=None, source=None):
    p = PROBLEMS[pid]
    return {"id": f"{pid}/{idx}", "problem_id": pid, "sample_idx": idx, "domain": domain or p["domain"],
            "source": source or p["source"], "text": text, "prompt_tokens": 50,
            "completion_tokens": len(text.split()), "grade": grade, "reason": reason,
            "extracted": extracted, "method": "test"}


def test_split_steps_variants():
    assert F.split_steps("Step 1: a\nb\nStep 2: c") == ["a b", "c"]
    assert F.split_steps("**Step 1:** a\n**Step 2:** b") == ["a", "b"]
    assert F.split_steps("1. a\n2) b\n3. c") == ["a", "b", "c"]
    assert F.split_steps("para one\nline\n\npara two") == ["para one line", "para two"]
    assert F.split_steps("- x\n- y") == ["x", "y"]
    assert F.split_steps("### Step 1: a\n### Step 2: b") == ["a", "b"]
    assert F.split_steps("  ") == []
    assert F.count_steps(CODE_OK, "code") == 2  # the code block is not a step


def test_math_template():
    text = F.assistant_text(sample(MATH_P["id"], 0, MATH_OK, 1, "correct", extracted="5"))
    # the model's closing "The answer is ..." line gives way to the template's final line
    assert text == ("Step 1: Janet starts with 3 apples.\nStep 2: She buys 2, so 3 + 2 = 5.\n"
                    "\nFinal answer: \\boxed{5}")
    # no extracted answer -> no example (cannot write the final line)
    assert F.assistant_text(sample(MATH_P["id"], 0, MATH_OK, 1, "correct", extracted=None)) is None
    ex = F.sft_example(sample(MATH_P["id"], 0, MATH_BAD, 1, "correct", extracted="6"), MATH_P)
    roles = [m["role"] for m in ex["messages"]]
    assert roles == ["system", "user", "assistant"] and ex["messages"][0]["content"] == F.MATH_SFT_SYSTEM
    assert MATH_P["problem"] in ex["messages"][1]["content"]
    # the model's own 'Final answer' line is replaced by the template's
    assert ex["messages"][2]["content"] == "Step 1: She has 3.\nStep 2: 3 + 3 = 6.\n\nFinal answer: \\boxed{6}"


def test_code_template():
    text = F.assistant_text(sample(CODE_P["id"], 0, CODE_OK, 1, "correct"))
    assert text == ("Step 1: First, we add the two numbers.\nStep 2: Then we return the sum.\n\n"
                    "Final code:\n```python\ndef add(x, y):\n    return x + y\n```")
    assert F.assistant_text(sample(CODE_P["id"], 0, "no code here", 1, "correct")) is None
    assert F.last_code_block("```python\na=1\n```\ntext\n```\nb=2\n```") == "b=2"
    graded_code = "def add(x, y):\n    \"\"\"Add.\"\"\"\n    return y + x\n"
    text = F.assistant_text(sample(CODE_P["id"], 0, CODE_OK, 1, "correct", extracted=graded_code))
    assert text.endswith("Final code:\n```python\n" + graded_code.rstrip("\n") + "\n```")
    ex = F.sft_example(sample(CODE_P["id"], 0, CODE_BAD, 1, "correct"), CODE_P)
    assert ex["messages"][2]["content"].startswith("Final code:\n```python\ndef add")
    assert ex["messages"][0]["content"] == F.CODE_SFT_SYSTEM


def test_mix_counts():
    w = F.mix_weights(1, 1)
    assert F.mix_counts({"math": 10, "code": 4}, w) == {"math": 4, "code": 4}
    assert F.mix_counts({"math": 10, "code": 4}, F.mix_weights(3, 1)) == {"math": 10, "code": 3}
    assert F.mix_counts({"math": 10, "code": 4}, F.mix_weights(1, 0)) == {"math": 10, "code": 0}
    # a weighted domain with nothing accepted: the other is kept whole, not emptied
    assert F.mix_counts({"math": 5, "code": 0}, w) == {"math": 5, "code": 0}
    assert F.mix_counts({"math": 0, "code": 0}, w) == {"math": 0, "code": 0}
    for bad in ((0, 0), (-1, 2), (float("nan"), 1), (1, float("inf"))):
        with pytest.raises(ValueError):
            F.mix_weights(*bad)


def _accepted():
    math = [sample(MATH_P["id"], i, MATH_OK + f" ({i})", 1, "correct", extracted="5") for i in range(4)]
    code = [sample(CODE_P["id"], 0, CODE_OK, 1, "correct")]
    return math + code


def test_build_sft_balances_and_dedups():
    acc = _accepted() + [sample(MATH_P["id"], 9, MATH_OK + " (0)", 1, "correct", extracted="5")]  # duplicate text
    ex, m = F.build_sft(acc, PROBLEMS, F.FormatSettings(mix_math=1, mix_code=1, seed=0))
    assert m["by_domain"] == {"math": 1, "code": 1} and m["available_by_domain"] == {"math": 4, "code": 1}
    assert m["skipped_duplicates"] == 1 and m["n_examples"] == 2 == len(ex)
    ex2, _ = F.build_sft(acc, PROBLEMS, F.FormatSettings(mix_math=1, mix_code=1, seed=0))
    ex3, _ = F.build_sft(acc, PROBLEMS, F.FormatSettings(mix_math=1, mix_code=1, seed=5))
    assert ex == ex2
    assert {e["id"] for e in ex if e["domain"] == "math"} | {e["id"] for e in ex3 if e["domain"] == "math"}
    ex4, m4 = F.build_sft(acc, PROBLEMS, F.FormatSettings(mix_math=1, mix_code=0, seed=0))
    assert m4["by_domain"] == {"math": 4, "code": 0} and m4["math_fraction"] == 1.0


def test_graded_pairs_in_pref_format():
    graded = [sample(MATH_P["id"], 0, MATH_OK, 1, "correct", "5"),
              sample(MATH_P["id"], 1, MATH_BAD, 0, "wrong_answer", "6"),
              sample(MATH_P["id"], 2, "I don't know", 0, "no_answer"),
              sample(CODE_P["id"], 0, CODE_BAD, 0, "wrong_answer"),  # no correct one: no pair
              sample(CODE_P["id"], 1, CODE_BAD, 0, "wrong_answer")]
    pairs, stats = G.build_pairs(graded, PROBLEMS)
    assert stats == {"n_pairs": 2, "problems_with_pairs": 1, "skipped_identical": 0}
    assert [p["id"] for p in pairs] == ["reason/gsm8k-test/0000/0-1", "reason/gsm8k-test/0000/0-2"]
    for p in pairs:
        assert set(p) == {"id", "prefix", "chosen", "rejected", "src"} and p["src"] == "reason"
        msgs = p["prefix"]["messages"]
        assert msgs[-1]["role"] == "user" and MATH_P["problem"] in msgs[-1]["content"]
        assert p["chosen"] == MATH_OK
    assert {p["rejected"] for p in pairs} == {MATH_BAD, "I don't know"}


def test_filter_metrics():
    graded = [sample(MATH_P["id"], 0, MATH_OK, 1, "correct", "5"),
              sample(MATH_P["id"], 1, MATH_BAD, 0, "wrong_answer", "6"),
              sample(MATH_P["id"], 2, "no idea", 0, "no_answer"),
              sample(CODE_P["id"], 0, CODE_OK, 1, "correct"),
              sample(CODE_P["id"], 1, "while True: pass", 0, "timeout")]
    m = G.filter_metrics(graded, seed=0)
    o = m["overall"]
    assert m["counts"]["samples"] == 5 and m["counts"]["accepted"] == 2 and o["pass_rate"] == 0.4
    assert m["by_domain"]["math"]["pass_rate"] == round(1 / 3, 6)
    # Two problems: the CI resamples problems, so it spans the two problems' rates (1/3 and 1/2).
    assert o["n_clusters"] == 2 and o["pass_rate_ci_low"] == round(1 / 3, 6) and o["pass_rate_ci_high"] == 0.5
    assert m["by_domain"]["math"]["n_clusters"] == 1 and m["by_domain"]["math"]["pass_rate_ci_low"] is None
    assert m["counts"]["by_domain"]["code"]["reasons"] == {"correct": 1, "timeout": 1}
    assert m["counts"]["by_source"]["gsm8k-test"]["problems_solved"] == 1
    assert m["counts"]["answer_extraction_failures"] == 1
    assert {d: c["answer_extraction_failures"] for d, c in m["counts"]["by_domain"].items()} == {"code": 0, "math": 1}
    assert m["lengths_accepted"]["mean_steps"] == 2.0 and m["lengths"]["mean_steps"] == (2 + 2 + 1 + 2 + 1) / 5
    assert m["lengths"]["n"] == 5 and m["lengths_accepted"]["n"] == 2 and m["lengths"]["n_clusters"] == 2
    lo, hi = m["lengths"]["mean_chars_ci_low"], m["lengths"]["mean_chars_ci_high"]
    assert lo < m["lengths"]["mean_chars"] < hi  # the two problems' samples differ in length


# --- grade_samples against stand-in grading modules (the real ones come from reason-grade)

@pytest.fixture()
def fake_grading(monkeypatch):
    from dataclasses import dataclass

    # Modules that import the real grading helpers bind them now, before the stand-in is
    # installed (run alone, this file would otherwise hand them the stand-in).
    import posttrain.reason.problems  # noqa: F401

    @dataclass
    class Grade:
        grade: int
        reason: str
        extracted: str | None = None
        method: str = "fake"

    grading = types.ModuleType("posttrain.reason.grading")
    grading.grade_math = lambda text, gold: (
        Grade(1, "correct", gold) if f"\\boxed{{{gold}}}" in text else
        Grade(0, "no_answer") if "boxed" not in text else Grade(0, "wrong_answer", "?"))
    sandbox = types.ModuleType("posttrain.reason.sandbox")

    @dataclass
    class SandboxLimits:
        timeout_s: float = 5
        memory_mb: int = 512

    seen = {}

    def grade_many(items, workers=1, limits=None):
        seen.update(workers=workers, limits=limits, n=len(items))
        return [Grade(int("x + y" in t), "correct" if "x + y" in t else "wrong_answer", F.last_code_block(t))
                for t, _ in items]

    sandbox.SandboxLimits, sandbox.grade_many = SandboxLimits, grade_many
    sandbox.protections = lambda limits=None: {}  # reason_filter reports the host's isolation
    monkeypatch.setitem(sys.modules, "posttrain.reason.grading", grading)
    monkeypatch.setitem(sys.modules, "posttrain.reason.sandbox", sandbox)
    return seen


def _stage(name):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "stages" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_stage", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_filter_and_format_stages_with_stand_in_graders(tmp_path, fake_grading):
    raw = [{k: v for k, v in s.items() if k not in G.GRADE_FIELDS} for s in (
        sample(MATH_P["id"], 0, MATH_OK, 0, ""), sample(MATH_P["id"], 1, MATH_BAD, 0, ""),
        sample(CODE_P["id"], 0, CODE_OK, 0, ""), sample(CODE_P["id"], 1, CODE_BAD, 0, ""))]
    write_jsonl(tmp_path / "problems.jsonl", [MATH_P, CODE_P])
    write_jsonl(tmp_path / "samples.jsonl", raw)
    d = tmp_path
    res = CliRunner().invoke(_stage("reason_filter"), [
        "--problems", str(d / "problems.jsonl"), "--samples", str(d / "samples.jsonl"),
        "--graded", str(d / "graded.jsonl"), "--filtered", str(d / "filtered.jsonl"),
        "--pairs", str(d / "pairs.jsonl"), "--metrics", str(d / "mf.json"), "--facts", str(d / "run.json"),
        "--timeout-s", "3", "--memory-mb", "128", "--workers", "2", "--seed", "0",
        "--predictions", str(d / "pred.jsonl")])
    assert res.exit_code == 0, res.output
    assert fake_grading["workers"] == 2 and fake_grading["n"] == 2
    assert fake_grading["limits"].timeout_s == 3 and fake_grading["limits"].memory_mb == 128
    graded = read_jsonl(d / "graded.jsonl")
    assert [(g["id"], g["grade"], g["reason"]) for g in graded] == [
        ("gsm8k-test/0000/0", 1, "correct"), ("gsm8k-test/0000/1", 0, "wrong_answer"),
        ("humaneval/0053/0", 1, "correct"), ("humaneval/0053/1", 0, "wrong_answer")]
    assert [f["id"] for f in read_jsonl(d / "filtered.jsonl")] == ["gsm8k-test/0000/0", "humaneval/0053/0"]
    assert len(read_jsonl(d / "pairs.jsonl")) == 2
    m = json.loads((d / "mf.json").read_text())
    assert m["by_domain"]["code"]["pass_rate"] == 0.5
    assert json.loads((d / "run.json").read_text())["pairs"]["n_pairs"] == 2

    res = CliRunner().invoke(_stage("reason_format"), [
        "--problems", str(d / "problems.jsonl"), "--filtered", str(d / "filtered.jsonl"),
        "--out", str(d / "sft.jsonl"), "--metrics", str(d / "mfmt.json"), "--mix-math", "1", "--mix-code", "1", "--seed", "0"])
    assert res.exit_code == 0, res.output
    sft = read_jsonl(d / "sft.jsonl")
    assert [e["domain"] for e in sft] == ["math", "code"]
    assert sft[0]["messages"][2]["content"].endswith("Final answer: \\boxed{5}")
    assert sft[1]["messages"][2]["content"].endswith("```python\ndef add(x, y):\n    return x + y\n```")
    assert json.loads((d / "mfmt.json").read_text())["by_domain"] == {"math": 1, "code": 1}


def test_filter_stage_rejects_unknown_problem(tmp_path, fake_grading):
    write_jsonl(tmp_path / "problems.jsonl", [MATH_P])
    bad = {k: v for k, v in sample(MATH_P["id"], 0, "x", 0, "").items() if k not in G.GRADE_FIELDS}
    write_jsonl(tmp_path / "samples.jsonl", [bad, {**bad, "id": "nope/0", "problem_id": "nope"}])
    d = tmp_path
    res = CliRunner().invoke(_stage("reason_filter"), [
        "--problems", str(d / "problems.jsonl"), "--samples", str(d / "samples.jsonl"),
        "--graded", str(d / "g.jsonl"), "--filtered", str(d / "f.jsonl"), "--pairs", str(d / "p.jsonl"),
        "--metrics", str(d / "m.json"), "--facts", str(d / "run.json"), "--timeout-s", "5", "--memory-mb", "512",
        "--workers", "1",
        "--seed", "0", "--predictions", str(d / "pred.jsonl")])
    assert res.exit_code != 0
    assert "line 2" in str(res.exception) and "problem_id" in str(res.exception)
    assert not (d / "g.jsonl").exists()


@pytest.mark.parametrize("mix", [(float("nan"), 1), (1, float("inf")), (-1, 1), (0, 0)])
def test_mix_must_be_two_finite_non_negative_weights(mix):
    from posttrain.reason.sft_format import mix_weights

    with pytest.raises(ValueError, match="reason.mix_math and mix_code"):
        mix_weights(*mix)
