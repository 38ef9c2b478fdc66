"""Reasoning problems: math and code sources -> one list of problem records.

Record shape (the `data/reason/problems.jsonl` contract):
  math: {id, domain: "math", source, problem, answer}
  code: {id, domain: "code", source, problem, answer: "", prompt, tests, entry_point}
  plus optional metadata `category`, `difficulty` (and `task_id` where the source has one).

`tests` is either a Python test program that ends by calling `check(<entry_point>)`
(HumanEval style) or, for stdin/stdout problems, a list of {"input", "output"} strings.

Offline sources are packaged assets (gsm8k-test, aime2025, champ, humaneval). With
internet, or from a local mirror (`posttrain.core.hub`), hub ids load through
`datasets.load_dataset` and a converter for that dataset's real schema (MATH-500 / MATH,
AIME sets, APPS, MBPP). Converters take plain row dicts, so they are tested on in-memory
rows without the hub.
"""

from __future__ import annotations

import json
import logging
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from posttrain.core import assets, hub
from posttrain.core.io import DataError, iter_jsonl, read_json
from posttrain.core.settings import SettingsError, param
from posttrain.reason.grading import gold_from_gsm8k, last_boxed

log = logging.getLogger(__name__)

MATH, CODE = "math", "code"


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class SourceSpec:
    """One entry of `reason.sources`: a name (asset, local path or hub id), a cap
    (max problems kept from it; None/0 = all) and optional loader details."""

    name: str
    cap: int | None = None
    weight: int = 1  # problems taken per round-robin turn when sampling
    loader: str | None = None  # converter name, when `name` alone does not say it
    split: str | None = None
    config: str | None = None

    @property
    def label(self) -> str:
        """Source label written into records and ids (path-safe, stable)."""
        if assets.is_asset(self.name):
            return self.name
        base = Path(self.name).name if Path(self.name).exists() else self.name
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base.replace("/", "__")).strip("_") or "source"


def parse_sources(obj) -> list[SourceSpec]:
    """`reason.sources` -> specs. Items are {name, cap, [weight, loader, split, config]} mappings
    or plain strings `name` / `name:cap`."""
    if not isinstance(obj, list) or not obj:
        raise ValueError(f"reason.sources must be a non-empty list, got {obj!r}")
    specs = []
    for i, item in enumerate(obj):
        if isinstance(item, str):
            name, _, cap = item.rpartition(":") if re.search(r":\d+$", item) else (item, "", "")
            item = {"name": name, "cap": int(cap) if cap else None}
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"reason.sources[{i}]: expected {{name, cap}}, got {item!r}")
        unknown = set(item) - {"name", "cap", "weight", "loader", "split", "config"}
        if unknown:
            raise ValueError(f"reason.sources[{i}]: unknown keys {sorted(unknown)}")
        cap = item.get("cap")
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            raise ValueError(f"reason.sources[{i}].cap must be a non-negative integer or null")
        weight = item.get("weight", 1)
        if not isinstance(weight, int) or weight < 1:
            raise ValueError(f"reason.sources[{i}].weight must be a positive integer")
        specs.append(SourceSpec(str(item["name"]), cap or None, weight, item.get("loader"),
                                item.get("split"), item.get("config")))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"reason.sources: duplicate sources {labels}")
    return specs


def _id(label: str, index: int) -> str:
    return f"{label}/{index:04d}"


def _field(row: dict, names: Iterable[str], where, line, required=True):
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    if required:
        raise DataError(where, "missing", line=line, field="/".join(names))
    return None


def _text(row: dict, names: Iterable[str], where, line) -> str:
    """A required, non-blank text field: a number, a list or "" where the problem text goes is
    bad input."""
    value = _field(row, names, where, line)
    if not isinstance(value, str):
        raise DataError(where, f"expected a string, got {type(value).__name__}", line=line, field="/".join(names))
    if not value.strip():  # an empty problem would be "solved" by any answer that matches its gold
        raise DataError(where, "empty text", line=line, field="/".join(names))
    return value


# --------------------------------------------------------------------------- converters
# Each converter: (rows, label, where) -> (records, skipped). `rows` yields (line, dict);
# `where` names the file / hub id for DataError messages. Skips are only for rows that
# are well formed but carry no usable gold answer (counted in the collect metrics).

Converted = tuple[list[dict], int]


def convert_gsm8k(rows, label: str, where) -> Converted:
    out, skipped = [], 0
    for i, (line, row) in enumerate(rows):
        q = _text(row, ["question"], where, line)
        solution = str(_field(row, ["answer"], where, line))
        ans = gold_from_gsm8k(solution) if "####" in solution else ""
        if not ans:
            raise DataError(where, "no '#### <answer>' in the solution", line=line, field="answer")
        out.append({"id": _id(label, i), "domain": MATH, "source": label, "problem": q, "answer": ans})
    return out, skipped


def convert_aime(rows, label: str, where) -> Converted:
    """AIME sets: packaged/opencompass (question, answer), AI-MO/aimo-validation-aime and
    math-ai/aime25 (problem, answer), Maxwell-Jia/AIME_2024 (Problem, Answer)."""
    out = []
    for i, (line, row) in enumerate(rows):
        q = _text(row, ["problem", "question", "Problem", "Question"], where, line)
        a = _field(row, ["answer", "Answer"], where, line)
        rec = {"id": _id(label, i), "domain": MATH, "source": label, "problem": str(q),
               "answer": str(a).strip(), "difficulty": "aime"}
        for k in ("id", "ID", "url"):
            if row.get(k) is not None:
                rec["task_id"] = str(row[k])
                break
        out.append(rec)
    return out, 0


def convert_math(rows, label: str, where) -> Converted:
    """MATH: HuggingFaceH4/MATH-500 has `answer`; the full competition set (e.g.
    EleutherAI/hendrycks_math) only a `solution` whose last `\\boxed{}` is the answer."""
    out, skipped = [], 0
    for i, (line, row) in enumerate(rows):
        q = _text(row, ["problem"], where, line)
        ans = row.get("answer")
        if ans in (None, ""):
            ans = last_boxed(str(_field(row, ["solution"], where, line)))
        if not ans:
            skipped += 1  # a handful of MATH solutions state the answer without \boxed{}
            continue
        rec = {"id": _id(label, i), "domain": MATH, "source": label, "problem": q, "answer": str(ans)}
        cat = row.get("subject") or row.get("type")
        if cat:
            rec["category"] = str(cat)
        if row.get("level") not in (None, ""):
            rec["difficulty"] = str(row["level"])
        if row.get("unique_id"):
            rec["task_id"] = str(row["unique_id"])
        out.append(rec)
    return out, skipped


def convert_humaneval(rows, label: str, where) -> Converted:
    out = []
    for i, (line, row) in enumerate(rows):
        prompt = _text(row, ["prompt"], where, line)
        test = _text(row, ["test"], where, line)
        entry = _text(row, ["entry_point"], where, line)
        if "def check(" not in test:
            raise DataError(where, "test program defines no check(candidate)", line=line, field="test")
        out.append({
            "id": _id(label, i), "domain": CODE, "source": label, "task_id": row.get("task_id", str(i)),
            "problem": prompt, "answer": "", "prompt": prompt, "entry_point": entry,
            # HumanEval's test only defines check(); the contract's program also calls it.
            "tests": f"{test.rstrip()}\n\n\ncheck({entry})\n",
        })
    return out, 0


def _mbpp_entry_point(code: str | None, tests: list[str]) -> str | None:
    m = re.search(r"^def\s+([A-Za-z_]\w*)\s*\(", code or "", re.M)
    if m:
        return m.group(1)
    for t in tests:
        m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", t)
        if m:
            return m.group(1)
    return None


def convert_mbpp(rows, label: str, where) -> Converted:
    """MBPP (full: text/code/test_list/test_setup_code; sanitized: prompt/test_imports)."""
    out = []
    for i, (line, row) in enumerate(rows):
        text = _field(row, ["text", "prompt"], where, line)
        tests = _field(row, ["test_list"], where, line)
        if not isinstance(tests, list) or not tests:
            raise DataError(where, "expected a non-empty list of assert lines", line=line, field="test_list")
        entry = _mbpp_entry_point(row.get("code"), tests)
        if entry is None:
            raise DataError(where, "cannot tell the function name", line=line, field="code")
        setup = [row.get("test_setup_code") or "", *(row.get("test_imports") or [])]
        # The asserts call the function by its own name; wrapping them in check() keeps
        # one test-program shape for the sandbox (HumanEval style).
        body = "\n".join(f"    {t.strip()}" for t in tests)
        program = "\n".join(s for s in setup if s.strip())
        program = f"{program}\n\n\ndef check(candidate):\n{body}\n\n\ncheck({entry})\n".lstrip()
        problem = f"{text.strip()}\nYour code should pass these tests:\n" + "\n".join(t.strip() for t in tests)
        out.append({"id": _id(label, i), "domain": CODE, "source": label,
                    "task_id": str(row.get("task_id", i)), "problem": problem, "answer": "",
                    "prompt": problem, "entry_point": entry, "tests": program})
    return out, 0


def convert_apps(rows, label: str, where) -> Converted:
    """codeparrot/apps: `input_output` is a JSON string {"inputs", "outputs"[, "fn_name"]}.
    Standard-input problems -> list of {input, output}; call-based (fn_name, usually a
    LeetCode `class Solution`) -> a check() program. Rows without tests are skipped."""
    out, skipped = [], 0
    for i, (line, row) in enumerate(rows):
        q = _field(row, ["question"], where, line)
        raw = row.get("input_output") or ""
        if not str(raw).strip():
            skipped += 1
            continue
        try:
            io_ = json.loads(raw) if isinstance(raw, str) else raw
            inputs, outputs = io_["inputs"], io_["outputs"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(where, f"bad input_output JSON: {e}", line=line, field="input_output") from None
        if not inputs or len(inputs) != len(outputs):
            skipped += 1
            continue
        rec = {"id": _id(label, i), "domain": CODE, "source": label, "answer": "",
               "task_id": str(row.get("problem_id", row.get("id", i)))}
        if row.get("difficulty"):
            rec["difficulty"] = str(row["difficulty"])
        starter = row.get("starter_code") or ""
        fn = io_.get("fn_name")
        if fn:
            cases = json.dumps(list(zip(inputs, outputs)))
            rec["entry_point"] = fn
            rec["tests"] = (
                "import json\n\n"
                f"CASES = json.loads({cases!r})\n\n\n"
                "def check(candidate):\n"
                "    for args, expected in CASES:\n"
                "        got = candidate(*args)\n"
                "        # APPS stores call outputs either bare or wrapped in a one-item list.\n"
                "        assert got == expected or [got] == expected, (args, got, expected)\n\n\n"
                f"check(Solution().{fn} if 'Solution' in globals() else {fn})\n")
        else:
            join = lambda v: "\n".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
            rec["entry_point"] = ""
            rec["tests"] = [{"input": join(a), "output": join(b)} for a, b in zip(inputs, outputs)]
        rec["problem"] = q + (f"\n\nStarter code:\n{starter}" if starter.strip() else "")
        rec["prompt"] = rec["problem"]
        out.append(rec)
    return out, skipped


def convert_champ(data: dict, label: str, where) -> Converted:
    """CHAMP v0.json: {"problems": {identifier: {_text, _answer, category, ...}}}."""
    probs = data.get("problems") if isinstance(data, dict) else None
    if not isinstance(probs, dict):
        raise DataError(where, "expected an object with a 'problems' mapping", field="problems")
    out = []
    for i, key in enumerate(sorted(probs, key=_natural_key)):
        p = probs[key]
        for f in ("_text", "_answer"):
            if not p.get(f):
                raise DataError(where, f"problem {key}: missing", field=f)
        out.append({"id": f"{label}/{key}", "domain": MATH, "source": label, "task_id": key,
                    "problem": p["_text"], "answer": p["_answer"].strip(),
                    "category": p.get("category", ""), "difficulty": "competition"})
    return out, 0


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# --------------------------------------------------------------------------- loaders

def _jsonl_rows(path) -> Iterator[tuple[int, dict]]:
    yield from iter_jsonl(path)


def _load_aime_dir(path: Path) -> Iterator[tuple[int, dict]]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise DataError(path, "no *.jsonl files")
    for f in files:
        yield from _jsonl_rows(f)


# Packaged assets and hub ids -> converter name.
KNOWN = {
    "gsm8k-test": "gsm8k", "openai/gsm8k": "gsm8k", "gsm8k": "gsm8k",
    "aime2025": "aime", "opencompass/AIME2025": "aime", "AI-MO/aimo-validation-aime": "aime",
    "math-ai/aime25": "aime", "math-ai/aime24": "aime", "Maxwell-Jia/AIME_2024": "aime",
    "yentinglin/aime_2025": "aime",
    "champ": "champ",
    "humaneval": "humaneval", "openai/openai_humaneval": "humaneval",
    "HuggingFaceH4/MATH-500": "math", "EleutherAI/hendrycks_math": "math",
    "DigitalLearningGmbH/MATH-lighteval": "math", "hendrycks/competition_math": "math",
    "codeparrot/apps": "apps",
    "google-research-datasets/mbpp": "mbpp", "mbpp": "mbpp", "Muennighoff/mbpp": "mbpp",
}

CONVERTERS: dict[str, Callable] = {
    "gsm8k": convert_gsm8k, "aime": convert_aime, "math": convert_math, "humaneval": convert_humaneval,
    "mbpp": convert_mbpp, "apps": convert_apps,
}

# Hub sets whose split is not "test" by default / which need every config.
HUB_DEFAULT_SPLIT = {"AI-MO/aimo-validation-aime": "train", "Maxwell-Jia/AIME_2024": "train",
                     "math-ai/aime25": "test", "yentinglin/aime_2025": "train"}
HUB_DEFAULT_CONFIG = {"openai/gsm8k": "main", "gsm8k": "main"}
HUB_ALL_CONFIGS = {
    "EleutherAI/hendrycks_math": ["algebra", "counting_and_probability", "geometry",
                                  "intermediate_algebra", "number_theory", "prealgebra", "precalculus"],
    "opencompass/AIME2025": ["AIME2025-I", "AIME2025-II"],
}


def _loader_name(spec: SourceSpec) -> str:
    name = spec.loader or KNOWN.get(spec.name)
    if name is None:
        raise ValueError(f"source {spec.name!r}: unknown dataset; add `loader:` "
                         f"(one of {sorted(CONVERTERS) + ['champ']})")
    if name not in CONVERTERS and name != "champ":
        raise ValueError(f"source {spec.name!r}: unknown loader {name!r}")
    return name


# Hub sets that ship a loading script (unsupported by current `datasets`) next to
# their raw JSONL files: read the files directly.
HUB_JSONL = {"codeparrot/apps": "{split}.jsonl"}


def _hub_rows(spec: SourceSpec) -> Iterator[tuple[int, dict]]:
    """Rows of a hub dataset in its real schema (needs internet, a warm HF cache or a
    local mirror under `$POSTTRAIN_HUB_DIR`, see `posttrain.core.hub`)."""
    import datasets

    split = spec.split or HUB_DEFAULT_SPLIT.get(spec.name, "test")
    config = spec.config or HUB_DEFAULT_CONFIG.get(spec.name)
    configs = [config] if config else HUB_ALL_CONFIGS.get(spec.name, [None])
    n = 0
    for config in configs:
        if spec.name in HUB_JSONL and not config:
            files = hub.file_url(spec.name, HUB_JSONL[spec.name].format(split=split))
            ds = datasets.load_dataset("json", data_files=files, split="train")
        else:
            ds = datasets.load_dataset(hub.resolve(spec.name), config, split=split)
        for row in ds:
            n += 1
            yield n, dict(row)


def load_source(spec: SourceSpec) -> Converted:
    """All problems of one source (before caps), plus the count of skipped rows."""
    ref = assets.resolve(spec.name)  # first: a missing local file is "file not found", not a dataset name
    kind = _loader_name(spec)
    label = spec.label
    if kind == "champ":
        if not isinstance(ref, Path):
            raise ValueError(f"champ source {spec.name!r}: expected the asset or a local v0.json")
        return convert_champ(read_json(ref), label, ref)
    if isinstance(ref, Path):
        if kind == "aime":
            rows = _load_aime_dir(ref)
        elif ref.suffix == ".json":
            data = read_json(ref)
            if not isinstance(data, list):
                raise DataError(ref, "expected a JSON list of rows")
            rows = iter(enumerate(data, start=1))
        else:
            rows = _jsonl_rows(ref)
        where = ref
    else:
        rows, where = _hub_rows(spec), f"hub:{spec.name}"
    return CONVERTERS[kind](rows, label, where)


# --------------------------------------------------------------------------- selection

def _rng(seed: int, label: str) -> random.Random:
    # crc32, not hash(): Python's str hash is salted per process.
    return random.Random(seed * 1_000_003 + zlib.crc32(label.encode("utf-8")))


def select(per_source: list[tuple[SourceSpec, list[dict]]], sample: int | None, seed: int) -> list[dict]:
    """Caps, then an overall `sample` size, both deterministic for a seed.

    Each source is shuffled with its own seeded RNG and cut at its cap; `sample` then
    takes problems round-robin across sources (`weight` per turn) so a small sample
    still covers every source. Output keeps source order, then each source's original order.
    """
    pools = []
    for spec, recs in per_source:
        order = list(range(len(recs)))
        _rng(seed, spec.label).shuffle(order)
        if spec.cap:
            order = order[:spec.cap]
        pools.append(order)
    if sample:
        taken = [[] for _ in pools]
        budget = sample
        while budget > 0 and any(len(t) < len(p) for t, p in zip(taken, pools)):
            for (spec, _), pool, t in zip(per_source, pools, taken):
                for _ in range(spec.weight):
                    if budget > 0 and len(t) < len(pool):
                        t.append(pool[len(t)])
                        budget -= 1
        pools = taken
    out = []
    for (spec, recs), pool in zip(per_source, pools):
        out.extend(recs[i] for i in sorted(pool))
    return out


@dataclass(frozen=True)
class CollectSettings:
    """reason_collect's params (reason.sample, reason.seed; reason.sources is a list, which DVC
    cannot put on a command line: the stage reads it from the params file, `sources_from`)."""

    sample: int = param("total problems kept, round-robin over sources (0 = every capped problem)", min=0)
    seed: int = param("seed of the round-robin sample")


def sources_from(params_file, key: str) -> list[SourceSpec]:
    """`key` (e.g. reason.sources) of a YAML params file, parsed into source specs."""
    import yaml

    try:
        with open(params_file, encoding="utf-8") as fh:
            node = yaml.safe_load(fh) or {}
    except OSError as e:
        raise DataError(params_file, f"cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(params_file, f"not YAML: {getattr(e, 'problem', e)}",
                        line=mark.line + 1 if mark else None) from None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SettingsError("--params-file", f"{params_file}: no key {key!r}")
        node = node[part]
    return parse_source_list(node)


def parse_source_list(raw) -> list[SourceSpec]:
    """`parse_sources`, its errors named as the param they are."""
    try:
        return parse_sources(raw)
    except ValueError as e:
        raise SettingsError("reason.sources", str(e)) from None


def collect(specs: list[SourceSpec], s: CollectSettings) -> tuple[list[dict], dict]:
    """Load every source, apply caps and the sample; returns (problems, metrics)."""
    sample, seed = s.sample or None, s.seed
    per_source, stats = [], {}
    for spec in specs:
        try:
            recs, skipped = load_source(spec)
        except DataError:
            raise
        except ValueError as e:  # a source the loaders cannot read (unknown dataset / loader)
            raise SettingsError("reason.sources", str(e)) from e
        log.info("source %s: %d problems (%d skipped)", spec.label, len(recs), skipped)
        per_source.append((spec, recs))
        stats[spec.label] = {"available": len(recs), "skipped_no_gold": skipped}
    problems = select(per_source, sample, seed)
    ids = [p["id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate problem ids across sources")
    by_domain: dict[str, int] = {}
    for p in problems:
        stats[p["source"]]["selected"] = stats[p["source"]].get("selected", 0) + 1
        by_domain[p["domain"]] = by_domain.get(p["domain"], 0) + 1
    for s in stats.values():
        s.setdefault("selected", 0)
    metrics = {"n_problems": len(problems), "by_domain": by_domain, "by_source": stats,
               "sample": sample or 0, "seed": seed}
    return problems, metrics


def index(problems: Iterable[dict]) -> dict[str, dict]:
    return {p["id"]: p for p in problems}


def read_problem_records(path, problems: dict[str, dict], required: Iterable[str]) -> list[dict]:
    """Records of a JSONL file that name a problem by `problem_id` (samples, graded or
    accepted solutions): each has the `required` fields (which include `problem_id`) and a
    problem in `problems`."""
    required = tuple(required)
    if "problem_id" not in required:
        raise ValueError("required fields must include problem_id")
    out = []
    for line, rec in iter_jsonl(path, required=required):
        for f in required:
            if f in _STRING_FIELDS and not isinstance(rec[f], str):
                raise DataError(path, f"expected a string, got {type(rec[f]).__name__}", line=line, field=f)
        if rec["problem_id"] not in problems:
            raise DataError(path, f"unknown problem {rec['problem_id']!r}", line=line, field="problem_id")
        if "domain" in rec and rec["domain"] != problems[rec["problem_id"]]["domain"]:
            raise DataError(path, f"domain {rec['domain']!r} differs from its problem's "
                                  f"{problems[rec['problem_id']]['domain']!r}", line=line, field="domain")
        out.append(rec)
    return out


_STRING_FIELDS = ("id", "problem_id", "domain", "source", "text")


def read_problems(path) -> list[dict]:
    """problems.jsonl -> records, checked for the contract fields."""
    out = []
    for line, rec in iter_jsonl(path, required=("id", "domain", "source", "problem", "answer")):
        if rec["domain"] not in (MATH, CODE):
            raise DataError(path, f"domain must be math or code, got {rec['domain']!r}", line=line, field="domain")
        if rec["domain"] == CODE:
            for f in ("prompt", "tests", "entry_point"):
                if f not in rec:
                    raise DataError(path, "missing", line=line, field=f)
        out.append(rec)
    return out

