"""The hub loaders of the full profile, run on local mirrors in each dataset's published
layout (`tests/hub_fixtures.py`) through `POSTTRAIN_HUB_DIR`: the same `load_dataset` calls
and converters as for the hub ids, so these check the real file layout -> records path
(splits, configs, nested columns), not just the converters on hand-made dicts."""

import json

import datasets
import pytest

import hub_fixtures as F
from posttrain.core import hub
from posttrain.core.io import DataError
from posttrain.pref import pairs
from posttrain.reason import problems as P
from posttrain.reason.sandbox import SandboxLimits, grade_code

FAST = SandboxLimits(timeout_s=5, memory_mb=256, max_procs=8, max_output_bytes=64 << 10)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An empty POSTTRAIN_HUB_DIR; `datasets` caches under tmp_path, not the user's cache."""
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv(hub.ENV, str(root))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return root


def _texts(recs) -> str:
    return json.dumps(recs)


def _run(program: str, code: str) -> None:
    """Solution + HumanEval-style test program in this process (trusted fixture code only)."""
    exec(compile(code + "\n\n" + program, "<test>", "exec"), {})


# --------------------------------------------------------------------------- the hook

def test_ids_pass_through_without_a_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.ENV, raising=False)
    assert hub.resolve(F.HH_RLHF) == F.HH_RLHF
    assert hub.file_url(F.APPS, "test.jsonl") == "hf://datasets/codeparrot/apps/test.jsonl"
    monkeypatch.setenv(hub.ENV, str(tmp_path))  # a mirror that lacks these repos
    F.write_math_500(tmp_path)
    assert hub.resolve(F.HH_RLHF) == F.HH_RLHF
    assert hub.file_url(F.APPS, "test.jsonl") == "hf://datasets/codeparrot/apps/test.jsonl"
    (tmp_path / "Anthropic").mkdir()  # the org folder alone is not the repo
    assert hub.resolve(F.HH_RLHF) == F.HH_RLHF
    assert hub.resolve(F.MATH_500) == str((tmp_path / F.MATH_500).resolve())
    (tmp_path / "outside").mkdir()
    assert hub.resolve("../outside") == "../outside"  # not a hub id: never a path escape


def test_mirror_files_resolve_inside_the_repo_folder(mirror):
    repo = F.write_apps(mirror)
    assert hub.resolve(F.APPS) == str(repo.resolve())
    assert hub.file_url(F.APPS, "train.jsonl") == str(repo.resolve() / "train.jsonl")


# --------------------------------------------------------------------------- pref

def test_hh_rlhf_reads_every_subset_train_split_only(mirror):
    F.write_hh_rlhf(mirror)
    got, stats = pairs.load_source("hh-rlhf")
    train = [r for k, rs in F.HH_DEFAULT.items() if k.endswith("/train") for r in rs]
    assert stats.rows == len(train) == 6  # four subsets' train.jsonl.gz; not test, not red-team
    assert dict(stats.skipped) == {"unparsable_transcript": 1}
    assert "NOT-READ" not in _texts(got)
    want = []
    for row in train:
        try:
            want.append(pairs.hh_row_to_pair(row, "hh-rlhf"))
        except pairs.Skip:
            pass
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in want)
    by_prompt = {p["prefix"]["messages"][0]["content"]: p for p in got}
    lock = by_prompt["How do I pick a lock?"]
    assert lock["chosen"].startswith("I can't help") and lock["rejected"].startswith("Insert a tension")
    mean = by_prompt["Say something mean."]
    assert mean["prefix"]["messages"] == [{"role": "user", "content": "Say something mean."},
                                         {"role": "assistant", "content": "I'd rather not."},
                                         {"role": "user", "content": "Please?"}]
    assert (mean["chosen"], mean["rejected"]) == ("How about a compliment instead?", "You are boring.")
    assert by_prompt["How many legs does a spider have?"]["src"] == "hh-rlhf"


def test_hh_rlhf_broken_transcript_names_the_field(mirror):
    bad = [dict(F.HH_DEFAULT["helpful-online/train"][0], chosen=None)]
    F.write_hh_rlhf(mirror, {"helpful-online/train": bad})
    with pytest.raises(DataError) as e:
        pairs.load_source("hh-rlhf")
    assert (e.value.path, e.value.field) == (F.HH_RLHF, "chosen")
    assert e.value.line == 5  # harmless-base (2), helpful-base (2), then helpful-online's first row


def test_ultrafeedback_reads_train_prefs_message_lists(mirror):
    F.write_ultrafeedback_binarized(mirror)
    got, stats = pairs.load_source("ultrafeedback-binarized")
    assert (stats.rows, stats.pairs, dict(stats.skipped)) == (3, 2, {"tied_scores": 1})
    assert "NOT-READ" not in _texts(got)  # train_sft / test_* / *_gen are other splits
    haiku, prime = got
    assert haiku["prefix"]["messages"] == [{"role": "user", "content": "Write a haiku about rain."}]
    assert haiku["chosen"] == "Soft rain on the roof\nthe gutters hum a low song\nthe street shines again"
    assert haiku["rejected"] == "Rain is wet."
    assert (prime["chosen"], prime["rejected"]) == ("No: 91 = 7 x 13.", "Yes, 91 is prime.")
    assert haiku["id"] == pairs.messages_row_to_pair(F.UF_DEFAULT["train_prefs"][0], "x")["id"]


def test_ultrafeedback_null_answer_names_the_field(mirror):
    row = F.uf_row("Is 91 a prime number?", "No.", "Yes.")
    row["chosen"][1]["content"] = None
    F.write_ultrafeedback_binarized(mirror, {"train_prefs": [F.UF_DEFAULT["train_prefs"][0], row]})
    with pytest.raises(DataError) as e:
        pairs.load_source("ultrafeedback-binarized")
    assert (e.value.path, e.value.line, e.value.field) == (F.ULTRAFEEDBACK, 2, "chosen")


def test_stack_exchange_reads_every_site_shard(mirror):
    F.write_stack_exchange_preferences(mirror)
    got, stats = pairs.load_source("stack-exchange-preferences", per_prompt=4)
    assert stats.rows == 4  # cooking (2 questions) + math, two shards
    assert dict(stats.skipped) == {"too_few_answers": 1, "no_score_gap": 1}
    bread = [p for p in got if p["prefix"]["messages"] == [{"role": "user",
                                                            "content": "<p>Why does bread go stale?</p>"}]]
    assert {p["chosen"] for p in bread} == {"<p>Starch retrogradation: the starch recrystallises.</p>"}
    assert [p["rejected"] for p in bread] == ["<p>Bread never goes stale.</p>", "<p>It dries out.</p>"]
    math = [p for p in got if "0.999" in p["prefix"]["messages"][0]["content"]]
    assert [(p["chosen"][:7], p["rejected"]) for p in math] == [
        ("<p>Yes:", "<p>No, it is always a little less.</p>")]
    assert len(got) == stats.pairs == 3


def test_stack_exchange_null_score_names_the_field(mirror):
    row = F.se_row(31, "<p>q</p>", [F.se_answer(1, 4, "<p>a</p>"), F.se_answer(2, None, "<p>b</p>")],
                   "math.stackexchange.com")
    F.write_stack_exchange_preferences(mirror, {"math.stackexchange.com/train-00001-of-00002": [row]})
    with pytest.raises(DataError) as e:
        pairs.load_source("stack-exchange-preferences")
    assert (e.value.path, e.value.line, e.value.field) == (F.STACK_EXCHANGE, 4, "answers[1].pm_score")


# --------------------------------------------------------------------------- reason

def test_math500_test_split(mirror):
    F.write_math_500(mirror)
    recs, skipped = P.load_source(P.SourceSpec(F.MATH_500))
    assert skipped == 0
    assert [(r["problem"], r["answer"]) for r in recs] == [
        ("What is $3 \\cdot 4 + 5$?", "17"), ("Simplify $\\frac{6}{8}$.", "\\frac{3}{4}"),
        ("Solve $2x + 1 = 9$ for $x$.", "4")]
    r = recs[1]
    assert (r["id"], r["domain"], r["category"], r["difficulty"], r["task_id"]) == (
        "HuggingFaceH4__MATH-500/0001", "math", "Number Theory", "2", "test/number_theory/9002.json")
    with pytest.raises(ValueError, match="train"):  # the repo has a test split only
        P.load_source(P.SourceSpec(F.MATH_500, split="train"))


def test_math500_missing_problem_names_the_field(mirror):
    rows = [F.MATH_DEFAULT["test"][0], dict(F.MATH_DEFAULT["test"][1], problem=None)]
    F.write_math_500(mirror, {"test": rows})
    with pytest.raises(DataError) as e:
        P.load_source(P.SourceSpec(F.MATH_500))
    assert (e.value.path, e.value.line, e.value.field) == (f"hub:{F.MATH_500}", 2, "problem")


def test_mbpp_full_test_split_programs_run(mirror):
    F.write_mbpp(mirror)
    recs, _ = P.load_source(P.SourceSpec(F.MBPP))  # default config (full), split test
    rows = F.MBPP_DEFAULT["full/test"]
    assert [r["task_id"] for r in recs] == ["9011", "9012"]
    assert "NOT-READ" not in _texts(recs)
    for rec, row in zip(recs, rows):
        assert rec["problem"].startswith(row["text"]) and rec["prompt"] == rec["problem"]
        assert all(t in rec["problem"] and t in rec["tests"] for t in row["test_list"])
        assert grade_code(row["code"], rec, FAST).grade == 1
    assert recs[0]["entry_point"] == "sum_squares"
    assert recs[0]["tests"].rstrip().endswith("check(sum_squares)")
    assert recs[1]["tests"].startswith("import math")  # test_setup_code
    assert grade_code("def sum_squares(xs):\n    return sum(xs)\n", recs[0], FAST).reason == "wrong_answer"


def test_mbpp_sanitized_config_and_other_splits(mirror):
    F.write_mbpp(mirror)
    recs, _ = P.load_source(P.SourceSpec(F.MBPP, config="sanitized"))
    assert [r["entry_point"] for r in recs] == ["count_vowels", "gcd_of"]
    assert recs[1]["tests"].startswith("import math")  # test_imports
    for rec, row in zip(recs, F.MBPP_DEFAULT["sanitized/test"]):
        assert rec["problem"].startswith(row["prompt"])
        assert grade_code(row["code"], rec, FAST).grade == 1
    val, _ = P.load_source(P.SourceSpec(F.MBPP, config="full", split="validation"))
    assert [r["problem"].split("\n")[0] for r in val] == ["NOT-READ full/validation task"]


def test_mbpp_empty_test_list_names_the_field(mirror):
    bad = dict(F.MBPP_DEFAULT["full/test"][0], test_list=[])
    F.write_mbpp(mirror, {"full/test": [bad]})
    with pytest.raises(DataError) as e:
        P.load_source(P.SourceSpec(F.MBPP))
    assert (e.value.path, e.value.line, e.value.field) == (f"hub:{F.MBPP}", 1, "test_list")


def test_apps_test_jsonl_stdin_and_call_based(mirror):
    F.write_apps(mirror)  # apps.py beside the files raises if anything runs it
    recs, skipped = P.load_source(P.SourceSpec(F.APPS))  # default split: test
    assert skipped == 1  # problem 4004 has no tests
    assert [r["task_id"] for r in recs] == ["4001", "4002", "4003"]
    assert "NOT-READ" not in _texts(recs)
    rows = {r["problem_id"]: r for r in F.APPS_DEFAULT["test"]}
    stdin, leet, kata = recs
    assert stdin["tests"] == [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6\n"}]
    assert stdin["entry_point"] == "" and stdin["difficulty"] == "introductory"
    for rec in (stdin, kata):
        solution = json.loads(rows[int(rec["task_id"])]["solutions"])[0]
        assert grade_code(solution, rec, FAST).grade == 1
    assert grade_code("a, b = map(int, input().split())\nprint(a - b)\n", stdin, FAST).reason == "wrong_answer"
    assert kata["entry_point"] == "add_one" and "Starter code:\ndef add_one(n):" in kata["problem"]
    assert grade_code("def add_one(n):\n    return n\n", kata, FAST).grade == 0
    assert leet["entry_point"] == "largest" and "class Solution" in leet["problem"]
    _run(leet["tests"], json.loads(rows[4002]["solutions"])[0])
    with pytest.raises(AssertionError):
        _run(leet["tests"], "class Solution:\n    def largest(self, nums):\n        return min(nums)\n")


def test_apps_class_solution_grades_in_the_sandbox(mirror):
    # LeetCode-style call-based rows: the entry point is a method of class Solution.
    F.write_apps(mirror)
    recs, _ = P.load_source(P.SourceSpec(F.APPS))
    leet = next(r for r in recs if r["task_id"] == "4002")
    solution = json.loads(F.APPS_DEFAULT["test"][1]["solutions"])[0]
    assert "class Solution" in solution and grade_code(solution, leet, FAST).grade == 1
    wrong = "class Solution:\n    def largest(self, nums):\n        return min(nums)\n"
    assert grade_code(wrong, leet, FAST).grade == 0
    missing = "class Solution:\n    def smallest(self, nums):\n        return min(nums)\n"
    assert grade_code(missing, leet, FAST).grade == 0


def test_apps_train_split_is_its_own_file(mirror):
    F.write_apps(mirror)
    recs, _ = P.load_source(P.SourceSpec(F.APPS, split="train"))
    assert [(r["task_id"], r["tests"]) for r in recs] == [("5001", [{"input": "\n", "output": "1\n"}])]


def test_apps_bad_input_output_json_names_the_field(mirror):
    rows = [F.APPS_DEFAULT["test"][0], dict(F.APPS_DEFAULT["test"][0], problem_id=4100, input_output="{not json")]
    F.write_apps(mirror, {"test": rows})
    with pytest.raises(DataError) as e:
        P.load_source(P.SourceSpec(F.APPS))
    assert (e.value.path, e.value.line, e.value.field) == (f"hub:{F.APPS}", 2, "input_output")
