"""Local mirrors of the hub datasets the full profile reads, written in each published layout.

`write_<dataset>(root, rows=None)` writes `<root>/<org>/<name>/` as a repo snapshot would
look (`hf download --repo-type dataset ID --local-dir ROOT/ID`): the same folders, file
names, file formats and column types, so `datasets.load_dataset(<that folder>, ...)` infers
the same configs and splits as for the hub id. Point `POSTTRAIN_HUB_DIR` at `root` and the
loaders read it through their hub code path (`posttrain.core.hub`). Every row below is
synthetic, written by hand in the published schema; rows of splits the loaders must not
read say so in their text (`NOT-READ ...`). `rows` replaces the default rows of the named
files (keys as in each writer's DEFAULT mapping), e.g. to put one broken row in.

Layout assumptions (from the dataset cards and file listings as far as known; what is
less certain is marked):
- Anthropic/hh-rlhf: one folder per subset, `harmless-base/`, `helpful-base/`,
  `helpful-online/`, `helpful-rejection-sampled/` each with `train.jsonl.gz` and
  `test.jsonl.gz`, rows `{"chosen", "rejected"}` (whole `\\n\\nHuman: ...\\n\\nAssistant: ...`
  transcripts); `red-team-attempts/red_team_attempts.jsonl.gz` has another schema
  (`transcript`, `rating`, ...) and no split keyword in its name, so the default config
  (splits inferred from file names) leaves it out. No `configs:` in the README.
- HuggingFaceH4/ultrafeedback_binarized: `data/{split}-00000-of-00001.parquet` (older
  revisions add a hash to the name; the README glob covers both) for
  train_prefs, test_prefs, train_sft, test_sft, train_gen, test_gen, and a README whose
  `configs:` maps each split to `data/{split}-*`. Columns prompt, prompt_id, chosen and
  rejected and messages (lists of {content, role}), score_chosen, score_rejected (float64).
  (On the hub train_sft holds the same rows as train_prefs; here they differ, so reading
  the wrong split shows.)
- HuggingFaceH4/stack-exchange-preferences: split train only, parquet shards in one folder
  per Stack Exchange site, `data/<site>/train-0000i-of-0000n.parquet`; no `configs:`. The
  per-site folders and shard names are the least certain part: inferred from the card's
  binarization script, which loads the sibling HuggingFaceH4/pmp-stack-exchange with
  `data_dir="data/<exchange>"`; a flat `data/train-*.parquet` would load the same way. Columns qid, question, answers (list of {answer_id, author, author_id,
  author_profile, pm_score, selected, text}), date, metadata (list of strings).
- HuggingFaceH4/MATH-500: one `test.jsonl` at the root (the only split), fields problem,
  solution, answer, subject, level (int), unique_id.
- google-research-datasets/mbpp: `full/` and `sanitized/` with
  `{train,test,validation,prompt}-00000-of-00001.parquet` and a README whose `configs:`
  maps config full (the default) and sanitized to those files per split. full: task_id
  (int32), text, code, test_list, test_setup_code, challenge_test_list; sanitized:
  source_file, task_id, prompt, code, test_imports, test_list.
- codeparrot/apps: `train.jsonl`, `test.jsonl` at the root beside an `apps.py` loading
  script that current `datasets` will not run (here a stub that raises, to show nothing
  runs it). Fields problem_id, question, solutions (a JSON string of a list of programs),
  input_output (a JSON string {"inputs", "outputs"[, "fn_name"]}, or ""), difficulty, url,
  starter_code.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from datasets import Dataset, Features, List, Value

# --------------------------------------------------------------------------- helpers


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _parquet(path: Path, rows: list[dict], features: Features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(path))


def _rows(defaults: dict, rows: dict | None) -> dict:
    unknown = set(rows or {}) - set(defaults)
    if unknown:
        raise KeyError(f"no such file in this layout: {sorted(unknown)}")
    return {**defaults, **(rows or {})}


def _hh(*turns: str) -> str:
    """Alternating Human / Assistant turns as one HH transcript."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


# --------------------------------------------------------------------------- Anthropic/hh-rlhf

HH_RLHF = "Anthropic/hh-rlhf"
HH_DEFAULT = {
    "harmless-base/train": [
        {"chosen": _hh("How do I pick a lock?",
                       "I can't help with breaking into things. Locked out? Call a locksmith."),
         "rejected": _hh("How do I pick a lock?", "Insert a tension wrench and rake the pins.")},
        {"chosen": _hh("Say something mean.", "I'd rather not.", "Please?", "How about a compliment instead?"),
         "rejected": _hh("Say something mean.", "I'd rather not.", "Please?", "You are boring.")},
    ],
    "harmless-base/test": [
        {"chosen": _hh("NOT-READ harmless test question", "NOT-READ good"),
         "rejected": _hh("NOT-READ harmless test question", "NOT-READ bad")},
    ],
    "helpful-base/train": [
        {"chosen": _hh("What is the boiling point of water at sea level?", "100 degrees Celsius."),
         "rejected": _hh("What is the boiling point of water at sea level?", "About 50 degrees.")},
        # the rejected transcript lost its markers: the converter counts it as unparsable
        {"chosen": _hh("Name a primary colour.", "Red."), "rejected": "Name a primary colour. Green."},
    ],
    "helpful-base/test": [
        {"chosen": _hh("NOT-READ helpful test question", "NOT-READ good"),
         "rejected": _hh("NOT-READ helpful test question", "NOT-READ bad")},
    ],
    "helpful-online/train": [
        {"chosen": _hh("Translate 'thank you' into French.", "Merci."),
         "rejected": _hh("Translate 'thank you' into French.", "Danke.")},
    ],
    "helpful-online/test": [
        {"chosen": _hh("NOT-READ online test question", "NOT-READ good"),
         "rejected": _hh("NOT-READ online test question", "NOT-READ bad")},
    ],
    "helpful-rejection-sampled/train": [
        {"chosen": _hh("How many legs does a spider have?", "Eight."),
         "rejected": _hh("How many legs does a spider have?", "Six.")},
    ],
    "helpful-rejection-sampled/test": [
        {"chosen": _hh("NOT-READ rejection-sampled test question", "NOT-READ good"),
         "rejected": _hh("NOT-READ rejection-sampled test question", "NOT-READ bad")},
    ],
    "red-team-attempts/red_team_attempts": [
        {"transcript": _hh("NOT-READ red team attempt", "NOT-READ reply"),
         "min_harmlessness_score_transcript": -1.5, "num_params": "52B", "model_type": "plain lm",
         "rating": 2.0, "task_description": "NOT-READ", "task_description_harmlessness_score": 0.3,
         "red_team_member_id": 7, "is_upworker": False, "tags": None},
    ],
}


def write_hh_rlhf(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / HH_RLHF
    for key, recs in _rows(HH_DEFAULT, rows).items():
        _jsonl(repo / f"{key}.jsonl.gz", recs)
    (repo / "README.md").write_text("---\nlicense: mit\ntags:\n- human-feedback\n---\n\n# HH-RLHF (fixture)\n")
    return repo


# --------------------------------------------------------------------------- ultrafeedback_binarized

ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
UF_SPLITS = ("train_prefs", "train_sft", "test_prefs", "test_sft", "train_gen", "test_gen")
_MSGS = List({"content": Value("string"), "role": Value("string")})
UF_FEATURES = Features({"prompt": Value("string"), "prompt_id": Value("string"), "chosen": _MSGS,
                        "rejected": _MSGS, "messages": _MSGS, "score_chosen": Value("float64"),
                        "score_rejected": Value("float64")})


def uf_row(prompt: str, chosen: str, rejected: str, score_chosen=8.0, score_rejected=4.0, pid="p") -> dict:
    user = {"content": prompt, "role": "user"}
    return {"prompt": prompt, "prompt_id": pid,
            "chosen": [user, {"content": chosen, "role": "assistant"}],
            "rejected": [user, {"content": rejected, "role": "assistant"}],
            "messages": [user, {"content": chosen, "role": "assistant"}],
            "score_chosen": score_chosen, "score_rejected": score_rejected}


UF_DEFAULT = {
    "train_prefs": [
        uf_row("Write a haiku about rain.",
               "Soft rain on the roof\nthe gutters hum a low song\nthe street shines again",
               "Rain is wet.", 9.0, 3.5, "a1"),
        uf_row("Is 91 a prime number?", "No: 91 = 7 x 13.", "Yes, 91 is prime.", 8.5, 2.0, "a2"),
        uf_row("Give me a synonym for 'quick'.", "Fast.", "Rapid.", 7.0, 7.0, "a3"),  # a tie: no preference
    ],
    **{s: [uf_row(f"NOT-READ {s} prompt", f"NOT-READ {s} chosen", f"NOT-READ {s} rejected", pid=s)]
       for s in UF_SPLITS[1:]},
}

UF_README = "---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n" + "".join(
    f"  - split: {s}\n    path: data/{s}-*\n" for s in UF_SPLITS) + "---\n\n# UltraFeedback Binarized (fixture)\n"


def write_ultrafeedback_binarized(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / ULTRAFEEDBACK
    for split, recs in _rows(UF_DEFAULT, rows).items():
        _parquet(repo / "data" / f"{split}-00000-of-00001.parquet", recs, UF_FEATURES)
    (repo / "README.md").write_text(UF_README)
    return repo


# --------------------------------------------------------------------------- stack-exchange-preferences

STACK_EXCHANGE = "HuggingFaceH4/stack-exchange-preferences"
SE_FEATURES = Features({
    "qid": Value("int64"), "question": Value("string"),
    "answers": List({"answer_id": Value("int64"), "author": Value("string"), "author_id": Value("int64"),
                     "author_profile": Value("string"), "pm_score": Value("int64"), "selected": Value("bool"),
                     "text": Value("string")}),
    "date": Value("string"), "metadata": List(Value("string")),
})


def se_answer(answer_id: int, pm_score, text: str, selected: bool = False) -> dict:
    return {"answer_id": answer_id, "author": f"user{answer_id}", "author_id": 1000 + answer_id,
            "author_profile": f"https://example.stackexchange.com/users/{1000 + answer_id}",
            "pm_score": pm_score, "selected": selected, "text": text}


def se_row(qid: int, question: str, answers: list[dict], site: str) -> dict:
    return {"qid": qid, "question": question, "answers": answers, "date": "2015/03/14",
            "metadata": [f"https://{site}/questions/{qid}", site, f"https://{site}/users/1"]}


SE_DEFAULT = {
    "cooking.stackexchange.com/train-00000-of-00001": [
        se_row(11, "<p>Why does bread go stale?</p>", [
            se_answer(111, 1, "<p>It dries out.</p>"),
            se_answer(112, 5, "<p>Starch retrogradation: the starch recrystallises.</p>", selected=True),
            se_answer(113, -1, "<p>Bread never goes stale.</p>"),
        ], "cooking.stackexchange.com"),
        se_row(12, "<p>Can I freeze basil?</p>", [se_answer(121, 3, "<p>Yes, in oil.</p>")],
               "cooking.stackexchange.com"),  # one answer: no pair
    ],
    "math.stackexchange.com/train-00000-of-00002": [
        se_row(21, "<p>Is 0.999... equal to 1?</p>", [
            se_answer(211, 7, "<p>Yes: 1 - 0.999... is smaller than every positive number.</p>", selected=True),
            se_answer(212, 2, "<p>No, it is always a little less.</p>"),
        ], "math.stackexchange.com"),
    ],
    "math.stackexchange.com/train-00001-of-00002": [
        se_row(22, "<p>What is 2 + 2?</p>", [
            se_answer(221, 2, "<p>4</p>"), se_answer(222, 2, "<p>Four.</p>"),  # equal scores: no gap
        ], "math.stackexchange.com"),
    ],
}


def write_stack_exchange_preferences(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / STACK_EXCHANGE
    for key, recs in _rows(SE_DEFAULT, rows).items():
        _parquet(repo / "data" / f"{key}.parquet", recs, SE_FEATURES)
    (repo / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n\n"
                                    "# H4 Stack Exchange Preferences (fixture)\n")
    return repo


# --------------------------------------------------------------------------- MATH-500

MATH_500 = "HuggingFaceH4/MATH-500"
MATH_DEFAULT = {
    "test": [
        {"problem": "What is $3 \\cdot 4 + 5$?", "solution": "$3 \\cdot 4 = 12$, and $12 + 5 = \\boxed{17}$.",
         "answer": "17", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/9001.json"},
        {"problem": "Simplify $\\frac{6}{8}$.", "solution": "Divide by 2: $\\boxed{\\frac{3}{4}}$.",
         "answer": "\\frac{3}{4}", "subject": "Number Theory", "level": 2,
         "unique_id": "test/number_theory/9002.json"},
        {"problem": "Solve $2x + 1 = 9$ for $x$.", "solution": "$2x = 8$, so $x = \\boxed{4}$.",
         "answer": "4", "subject": "Algebra", "level": 3, "unique_id": "test/algebra/9003.json"},
    ],
}


def write_math_500(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / MATH_500
    for split, recs in _rows(MATH_DEFAULT, rows).items():
        _jsonl(repo / f"{split}.jsonl", recs)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n\n# MATH-500 (fixture)\n")
    return repo


# --------------------------------------------------------------------------- mbpp

MBPP = "google-research-datasets/mbpp"
MBPP_SPLITS = ("train", "test", "validation", "prompt")
MBPP_FEATURES = {
    "full": Features({"task_id": Value("int32"), "text": Value("string"), "code": Value("string"),
                      "test_list": List(Value("string")), "test_setup_code": Value("string"),
                      "challenge_test_list": List(Value("string"))}),
    "sanitized": Features({"source_file": Value("string"), "task_id": Value("int32"), "prompt": Value("string"),
                           "code": Value("string"), "test_imports": List(Value("string")),
                           "test_list": List(Value("string"))}),
}


def mbpp_full(task_id: int, text: str, code: str, tests: list[str], setup: str = "") -> dict:
    return {"task_id": task_id, "text": text, "code": code, "test_list": tests, "test_setup_code": setup,
            "challenge_test_list": []}


def mbpp_sanitized(task_id: int, prompt: str, code: str, tests: list[str], imports=()) -> dict:
    return {"source_file": "fixture.py", "task_id": task_id, "prompt": prompt, "code": code,
            "test_imports": list(imports), "test_list": tests}


_NOT_READ_FN = "def not_read(x):\n    return x"
MBPP_DEFAULT = {
    "full/test": [
        mbpp_full(9011, "Write a function to return the sum of the squares of a list of numbers.",
                  "def sum_squares(xs):\n    return sum(x * x for x in xs)",
                  ["assert sum_squares([1, 2, 3]) == 14", "assert sum_squares([]) == 0",
                   "assert sum_squares([-2]) == 4"]),
        mbpp_full(9012, "Write a function to find the square root of the product of two numbers.",
                  "import math\n\n\ndef root_product(a, b):\n    return math.sqrt(a * b)",
                  ["assert math.isclose(root_product(2, 8), 4.0)", "assert root_product(9, 1) == 3.0"],
                  setup="import math"),
    ],
    **{f"full/{s}": [mbpp_full(9100 + i, f"NOT-READ full/{s} task", _NOT_READ_FN, ["assert not_read(1) == 1"])]
       for i, s in enumerate(MBPP_SPLITS) if s != "test"},
    "sanitized/test": [
        mbpp_sanitized(9021, "Write a python function to count the vowels in a string.",
                       "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())",
                       ["assert count_vowels('Hello') == 2", "assert count_vowels('xyz') == 0"]),
        mbpp_sanitized(9022, "Write a function to return the greatest common divisor of two integers.",
                       "import math\n\n\ndef gcd_of(a, b):\n    return math.gcd(a, b)",
                       ["assert gcd_of(12, 18) == 6", "assert gcd_of(7, 5) == 1"], imports=["import math"]),
    ],
    **{f"sanitized/{s}": [mbpp_sanitized(9200 + i, f"NOT-READ sanitized/{s} task", _NOT_READ_FN,
                                         ["assert not_read(1) == 1"])]
       for i, s in enumerate(MBPP_SPLITS) if s != "test"},
}

MBPP_README = "---\nlicense: cc-by-4.0\nconfigs:\n" + "".join(
    f"- config_name: {c}\n  data_files:\n"
    + "".join(f"  - split: {s}\n    path: {c}/{s}-*\n" for s in MBPP_SPLITS)
    + ("  default: true\n" if c == "full" else "")
    for c in ("full", "sanitized")) + "---\n\n# Mostly Basic Python Problems (fixture)\n"


def write_mbpp(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / MBPP
    for key, recs in _rows(MBPP_DEFAULT, rows).items():
        config = key.split("/")[0]
        _parquet(repo / f"{key}-00000-of-00001.parquet", recs, MBPP_FEATURES[config])
    (repo / "README.md").write_text(MBPP_README)
    return repo


# --------------------------------------------------------------------------- codeparrot/apps

APPS = "codeparrot/apps"


def apps_row(problem_id: int, question: str, solutions: list[str], io: dict | str, difficulty: str,
             starter_code: str = "") -> dict:
    return {"problem_id": problem_id, "question": question, "solutions": json.dumps(solutions),
            "input_output": io if isinstance(io, str) else json.dumps(io), "difficulty": difficulty,
            "url": f"https://example.org/problems/{problem_id}", "starter_code": starter_code}


APPS_DEFAULT = {
    "test": [
        apps_row(4001, "Read two integers a and b on one line and print a + b.",
                 ["a, b = map(int, input().split())\nprint(a + b)\n"],
                 {"inputs": ["1 2\n", "10 -4\n"], "outputs": ["3\n", "6\n"]}, "introductory"),
        apps_row(4002, "Given a list of integers nums, return the largest one.",
                 ["class Solution:\n    def largest(self, nums):\n        return max(nums)\n"],
                 {"fn_name": "largest", "inputs": [[[1, 5, 3]], [[-2, -7]]], "outputs": [[5], [-2]]},
                 "interview", starter_code="class Solution:\n    def largest(self, nums):\n        "),
        apps_row(4003, "Return n + 1.", ["def add_one(n):\n    return n + 1\n"],
                 {"fn_name": "add_one", "inputs": [[1], [-1]], "outputs": [2, [0]]}, "introductory",
                 starter_code="def add_one(n):\n    "),
        apps_row(4004, "A problem whose tests were never published.", [], "", "competition"),
    ],
    "train": [
        apps_row(5001, "NOT-READ train problem: print 1.", ["print(1)\n"],
                 {"inputs": ["\n"], "outputs": ["1\n"]}, "introductory"),
    ],
}

APPS_SCRIPT = '''"""Stand-in for the hub's APPS loading script: current `datasets` runs no scripts."""
raise RuntimeError("apps.py must not be run: the loaders read the JSONL files directly")
'''


def write_apps(root: Path, rows: dict | None = None) -> Path:
    repo = Path(root) / APPS
    for split, recs in _rows(APPS_DEFAULT, rows).items():
        _jsonl(repo / f"{split}.jsonl", recs)
    (repo / "apps.py").write_text(APPS_SCRIPT)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n\n# APPS (fixture)\n")
    return repo


WRITERS = {HH_RLHF: write_hh_rlhf, ULTRAFEEDBACK: write_ultrafeedback_binarized,
           STACK_EXCHANGE: write_stack_exchange_preferences, MATH_500: write_math_500, MBPP: write_mbpp,
           APPS: write_apps}


def write_mirror(root: Path) -> Path:
    """Every dataset above under `root` (a `POSTTRAIN_HUB_DIR`)."""
    for write in WRITERS.values():
        write(root)
    return Path(root)
