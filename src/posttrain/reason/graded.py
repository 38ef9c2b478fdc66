"""Rejection sampling over sampled solutions: grade them, summarize, pair them.

Grading itself lives in `posttrain.reason.grading` (math answers) and `posttrain.reason.sandbox`
(code run against tests in a sandbox); this module runs them over a samples file,
keeps every grade and its reason on the sample record, computes the filter metrics,
and builds preference pairs (correct vs incorrect solution of the same problem).

Pairs use the pref pipeline's normalized pair format, so `pref_download` can take it
as a source: {id, prefix: {messages}, chosen, rejected, src: "reason"}. The prefix is
the generation prompt (system + user; the last message is the user's), chosen and
rejected are the two sampled answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass

from posttrain.core import stats
from posttrain.core.settings import param
from posttrain.reason import prompts
from posttrain.reason.sft_format import count_steps

SRC = "reason"
GRADE_FIELDS = ("grade", "reason", "extracted", "method")


def _grade_dict(g) -> dict:
    """A Grade (dataclass, namedtuple or mapping) -> the fields graded.jsonl keeps."""
    if is_dataclass(g):
        d = asdict(g)
    elif hasattr(g, "_asdict"):
        d = g._asdict()
    elif isinstance(g, dict):
        d = dict(g)
    else:
        d = {f: getattr(g, f, None) for f in GRADE_FIELDS}
    out = {f: d.get(f) for f in GRADE_FIELDS}
    out["grade"] = 1 if out["grade"] else 0
    if d.get("detail"):  # why a run failed (assertion, exception, limit): worth keeping
        out["detail"] = d["detail"]
    return out


def grade_samples(samples: list[dict], problems: dict[str, dict], *, timeout_s: float,
                  memory_mb: int, workers: int) -> list[dict]:
    """Grade every sample; returns sample records + grade, reason, extracted, method.

    Math is checked in-process (answer extraction + equivalence); code goes to the
    sandbox in parallel workers. Sample order is kept."""
    from posttrain.reason.grading import grade_math
    from posttrain.reason.sandbox import SandboxLimits, grade_many

    grades: list = [None] * len(samples)
    code_idx, code_items = [], []
    for k, s in enumerate(samples):
        p = problems[s["problem_id"]]
        if s["domain"] == "math":
            grades[k] = grade_math(s["text"], p["answer"])
        else:
            code_idx.append(k)
            code_items.append((s["text"], p))
    if code_items:
        limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
        for k, g in zip(code_idx, grade_many(code_items, workers=workers, limits=limits)):
            grades[k] = g
    return [{**s, **_grade_dict(g)} for s, g in zip(samples, grades)]


def _means(rows: list[dict], steps: dict[int, int], seed: int) -> dict:
    """Mean completion tokens, characters and steps of `rows`, each with n and a
    problem-clustered CI (a problem's samples are alike in length)."""
    problems = len({g["problem_id"] for g in rows})
    if problems < 2:  # no between-problem spread: a mean here would have no CI, so none is given
        return {"n": len(rows), "n_clusters": problems}
    specs = {"mean_completion_tokens": ("mean", [[g["completion_tokens"] for g in rows]]),
             "mean_chars": ("mean", [[len(g["text"]) for g in rows]]),
             "mean_steps": ("mean", [[steps[id(g)] for g in rows]])}
    return stats.report(specs, [g["problem_id"] for g in rows], seed=seed)


def _pass_rate(rows: list[dict], seed: int) -> dict:
    """pass_rate with n and a CI; a problem's samples are correlated, so problems are resampled."""
    return stats.estimate("proportion", [[g["grade"] for g in rows]], [g["problem_id"] for g in rows],
                          seed=seed, name="pass_rate")


def _counts(rows: list[dict]) -> dict:
    """Samples, accepted, problems, problems solved (>= 1 accepted sample), grading reasons and
    answer extraction failures of `rows`: counts, not estimates, so they sit apart from the
    pass-rate blocks."""
    reasons: dict[str, int] = {}
    for g in rows:
        reasons[g["reason"]] = reasons.get(g["reason"], 0) + 1
    return {"samples": len(rows), "accepted": sum(g["grade"] for g in rows),
            "problems": len({g["problem_id"] for g in rows}),
            "problems_solved": len({g["problem_id"] for g in rows if g["grade"] == 1}),
            "answer_extraction_failures": reasons.get("no_answer", 0),
            "reasons": dict(sorted(reasons.items()))}


def _by(graded: list[dict], key: str, fn) -> dict[str, dict]:
    return {name: fn([g for g in graded if g[key] == name]) for name in sorted({g[key] for g in graded})}


def filter_metrics(graded: list[dict], *, seed: int) -> dict:
    """Pass rates (with problem-clustered CIs) overall, per domain and per source; lengths
    and steps; and apart from them the counts (accepted, solved, reasons, extraction failures)."""
    acc = [g for g in graded if g["grade"] == 1]
    steps = {id(g): count_steps(g["text"], g["domain"]) for g in graded}
    return {
        "overall": _pass_rate(graded, seed),
        "by_domain": _by(graded, "domain", lambda rows: _pass_rate(rows, seed)),
        "by_source": _by(graded, "source", lambda rows: _pass_rate(rows, seed)),
        "counts": {**_counts(graded), "by_domain": _by(graded, "domain", _counts),
                   "by_source": _by(graded, "source", _counts)},
        "lengths": _means(graded, steps, seed),
        "lengths_accepted": _means(acc, steps, seed),
    }


def prediction_rows(graded: list[dict]) -> list[dict]:
    """Per sample: id, problem, source, domain and grade, sorted by id (`posttrain compare` input)."""
    rows = [{"id": g["id"], "problem_id": g["problem_id"], "source": g["source"], "domain": g["domain"],
             "grade": int(g["grade"])} for g in graded]
    return sorted(rows, key=lambda r: str(r["id"]))


def build_pairs(graded: list[dict], problems: dict[str, dict]) -> tuple[list[dict], dict]:
    """Every incorrect sample of a problem is paired with a correct one of the same
    problem (cycling through the correct ones). Returns (pairs, stats)."""
    by_problem: dict[str, list[dict]] = {}
    for g in graded:
        by_problem.setdefault(g["problem_id"], []).append(g)
    pairs, identical, mixed = [], 0, 0
    for pid in sorted(by_problem):
        samples = sorted(by_problem[pid], key=lambda g: g["sample_idx"])
        good = [g for g in samples if g["grade"] == 1]
        bad = [g for g in samples if g["grade"] != 1]
        if not good or not bad:
            continue
        mixed += 1
        prefix = {"messages": prompts.messages(problems[pid])}
        for k, r in enumerate(bad):
            c = good[k % len(good)]
            if c["text"] == r["text"]:  # same text graded both ways (flaky run): no signal
                identical += 1
                continue
            pairs.append({"id": f"{SRC}/{pid}/{c['sample_idx']}-{r['sample_idx']}", "prefix": prefix,
                          "chosen": c["text"], "rejected": r["text"], "src": SRC})
    return pairs, {"n_pairs": len(pairs), "problems_with_pairs": mixed, "skipped_identical": identical}


@dataclass(frozen=True)
class FilterSettings:
    """reason_filter's params (reason.timeout_s, memory_mb, workers, seed)."""

    timeout_s: float = param("wall-time limit per code run in the sandbox", min=0, min_open=True)
    memory_mb: int = param("memory limit per code run", min=16)
    workers: int = param("parallel sandbox workers", min=1)
    seed: int = param("seed of the bootstrap CIs on the pass rates")


def filter_run(samples: list[dict], problems: dict[str, dict], s: FilterSettings) -> dict:
    """reason_filter's work: every sample graded (math answers checked, code run in the sandbox),
    the accepted ones, correct/incorrect pairs, and metrics with the sandbox's protections."""
    from posttrain.reason.sandbox import protections

    graded = grade_samples(samples, problems, timeout_s=s.timeout_s, memory_mb=s.memory_mb, workers=s.workers)
    pairs, pair_stats = build_pairs(graded, problems)
    metrics = {**filter_metrics(graded, seed=s.seed), "pairs": pair_stats}
    metrics["sandbox"] = protections()  # which isolation this host gave the code runs
    return {"graded": graded, "accepted": [g for g in graded if g["grade"] == 1], "pairs": pairs,
            "metrics": metrics, "predictions": prediction_rows(graded)}
