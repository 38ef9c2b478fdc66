"""reason_filter end to end with the real grading libraries (posttrain.reason.grading / .sandbox).

Skipped until those modules are present (they are built on another branch)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("posttrain.reason.grading")
pytest.importorskip("posttrain.reason.sandbox")

from posttrain.reason import problems as P  # noqa: E402
from posttrain.core.io import read_jsonl, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

CORRECT_ADD = ("Step 1: Compare every pair.\n\n```python\nfrom typing import List\n\n"
               "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
               "    for i, a in enumerate(numbers):\n"
               "        for j, b in enumerate(numbers):\n"
               "            if i != j and abs(a - b) < threshold:\n"
               "                return True\n"
               "    return False\n```")
WRONG_ADD = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
LOOP = "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n        pass\n```"


def _samples(problems):
    g, h = problems["gsm8k-test/0000"], problems["humaneval/0000"]
    rows = [
        (g, "Step 1: 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 18.\nThe answer is \\boxed{18}."),
        (g, "Step 1: 16 - 3 = 13.\nStep 2: 13 * 2 = 26.\n\\boxed{26}"),
        (g, "I am not sure how to do this."),
        (h, CORRECT_ADD), (h, WRONG_ADD), (h, LOOP),
    ]
    out, counts = [], {}
    for p, text in rows:
        k = counts.get(p["id"], 0)
        counts[p["id"]] = k + 1
        out.append({"id": f"{p['id']}/{k}", "problem_id": p["id"], "sample_idx": k, "domain": p["domain"],
                    "source": p["source"], "text": text, "prompt_tokens": 10, "completion_tokens": len(text)})
    return out


def test_filter_stage_end_to_end(tmp_path):
    probs = []
    for name in ("gsm8k-test", "humaneval"):
        recs, _ = P.load_source(P.SourceSpec(name))
        probs.append(recs[0])
    by_id = {p["id"]: p for p in probs}
    write_jsonl(tmp_path / "problems.jsonl", probs)
    write_jsonl(tmp_path / "samples.jsonl", _samples(by_id))
    d = tmp_path
    cmd = [sys.executable, str(REPO / "stages/reason_filter.py"),
           "--problems", str(d / "problems.jsonl"), "--samples", str(d / "samples.jsonl"),
           "--graded", str(d / "graded.jsonl"), "--filtered", str(d / "filtered.jsonl"),
           "--pairs", str(d / "pairs.jsonl"), "--metrics", str(d / "m.json"), "--facts", str(d / "run.json"),
           "--timeout-s", "2", "--memory-mb", "256", "--workers", "2", "--seed", "0",
           "--predictions", str(d / "pred.jsonl")]
    subprocess.run(cmd, check=True, cwd=REPO)
    graded = read_jsonl(d / "graded.jsonl")
    verdicts = [(g["id"], g["grade"], g["reason"]) for g in graded]
    assert verdicts == [
        ("gsm8k-test/0000/0", 1, "correct"), ("gsm8k-test/0000/1", 0, "wrong_answer"),
        ("gsm8k-test/0000/2", 0, "no_answer"), ("humaneval/0000/0", 1, "correct"),
        ("humaneval/0000/1", 0, "wrong_answer"), ("humaneval/0000/2", 0, "timeout")]
    assert graded[0]["extracted"] == "18" and graded[1]["extracted"] == "26"
    assert [f["id"] for f in read_jsonl(d / "filtered.jsonl")] == ["gsm8k-test/0000/0", "humaneval/0000/0"]
    pairs = read_jsonl(d / "pairs.jsonl")
    assert len(pairs) == 4 and {p["src"] for p in pairs} == {"reason"}
    m = json.loads((d / "m.json").read_text())
    facts = json.loads((d / "run.json").read_text())
    assert facts["counts"]["accepted"] == 2 and m["by_domain"]["math"]["pass_rate"] == round(1 / 3, 6)
    # One problem per domain: no between-problem spread, so no interval (never NaN).
    assert facts["n_clusters"]["by_domain"]["math"] == 1 and m["by_domain"]["math"]["pass_rate_ci_low"] is None
    o = m["overall"]
    assert facts["n_clusters"]["overall"] == 2 and o["pass_rate_ci_low"] <= o["pass_rate"] <= o["pass_rate_ci_high"]
    pred = read_jsonl(d / "pred.jsonl")
    assert [(p["id"], p["grade"]) for p in pred] == [(v[0], v[1]) for v in verdicts]
    assert facts["counts"]["by_source"]["humaneval"]["reasons"] == {"correct": 1, "timeout": 1, "wrong_answer": 1}
    assert facts["counts"]["answer_extraction_failures"] == 1
    from posttrain.reason.sandbox import PROTECTIONS
    assert sorted(facts["sandbox"]) == sorted(PROTECTIONS) and facts["sandbox"]["audit_hook"] is True
