"""Accepted solutions -> SFT chat examples with the math and coding templates.

Templates (one system text per domain; the user turn is the generation prompt):

  math assistant:  Step 1: ...\\nStep 2: ...\\n\\nFinal answer: \\boxed{<answer>}
  code assistant:  Step 1: ...\\nStep 2: ...\\n\\nFinal code:\\n```python\\n<code>\\n```

The steps are the model's own reasoning, re-split and renumbered so every example has
the same shape whatever list style the model used. `mix` ("math:code", e.g. "1:1")
sets the domain balance by downsampling the over-represented domain.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from posttrain.core.settings import SettingsError, param
from posttrain.reason import prompts

MATH_SFT_SYSTEM = ("You are a math expert. Solve the problem step by step, one numbered "
                   "step per line, then give the final answer in \\boxed{}.")
CODE_SFT_SYSTEM = ("You are a coding expert. Reason about the problem step by step, then "
                   "give the final code in a single Python code block.")

_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)
_MARKER = re.compile(r"^\s*(?:(?:#+\s*)?(?:\*\*)?step\s*\d+\s*[:.)](?:\*\*)?|\d+\s*[.)]|[-*\u2022])\s*", re.I)
_STEP_SPLIT = re.compile(r"(?im)^\s*(?:#+\s*)?(?:\*\*)?step\s*\d+\s*[:.)](?:\*\*)?")
_NUM_SPLIT = re.compile(r"(?m)^\s*\d+\s*[.)]\s+")
# A closing "the answer is ..." / "Final answer: ..." line: the template writes its own.
_FINAL_LINE = re.compile(r"(?i)^\W*(?:(?:so|therefore|thus|hence)\W+)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)")


def last_code_block(text: str) -> str | None:
    """The last fenced code block (python or untagged); None if there is none."""
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1].strip("\n") if blocks else None


def reasoning_part(text: str, domain: str) -> str:
    """The explanation part of a solution: code blocks and 'final answer' lines removed."""
    body = _CODE_BLOCK.sub("\n\n", text) if domain == "code" else text
    return "\n".join(line for line in body.splitlines() if not _FINAL_LINE.match(line))


def split_steps(text: str) -> list[str]:
    """Reasoning text -> steps: on 'Step N:' markers if present, else a numbered list,
    else paragraphs, else lines. Markers are stripped; empty steps dropped."""
    text = text.strip()
    if not text:
        return []
    if len(_STEP_SPLIT.findall(text)) >= 2:
        parts = _STEP_SPLIT.split(text)
    elif len(_NUM_SPLIT.findall(text)) >= 2:
        parts = _NUM_SPLIT.split(text)
    elif "\n\n" in text:
        parts = re.split(r"\n\s*\n", text)
    else:
        parts = text.splitlines()
    steps = []
    for p in parts:
        p = _MARKER.sub("", " ".join(p.split()))
        if p:
            steps.append(p)
    return steps


def count_steps(text: str, domain: str) -> int:
    return len(split_steps(reasoning_part(text, domain)))


def assistant_text(record: dict) -> str | None:
    """The templated answer for one accepted solution; None if it lacks the final part
    (math without an extracted answer, code without a code block)."""
    domain = record["domain"]
    steps = split_steps(reasoning_part(record["text"], domain))
    if domain == "math":
        answer = record.get("extracted")
        if answer in (None, ""):
            return None
        final = f"Final answer: \\boxed{{{answer}}}"
    else:
        # The grader records the code it actually ran as `extracted`: that is the code
        # that passed, so it is the final code; the last fenced block is the fallback.
        code = (record.get("extracted") or last_code_block(record["text"]) or "").strip("\n")
        if not code:
            return None
        final = f"Final code:\n```python\n{code}\n```"
    lines = [f"Step {k}: {s}" for k, s in enumerate(steps, start=1)]
    return ("\n".join(lines) + "\n\n" + final) if lines else final


def sft_example(record: dict, problem: dict) -> dict | None:
    text = assistant_text(record)
    if text is None:
        return None
    system = MATH_SFT_SYSTEM if record["domain"] == "math" else CODE_SFT_SYSTEM
    return {
        "id": record["id"], "problem_id": record["problem_id"], "domain": record["domain"],
        "source": record["source"],
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": prompts.user_message(problem)},
                     {"role": "assistant", "content": text}],
    }


@dataclass(frozen=True)
class FormatSettings:
    """reason_format's params (reason.mix_math, reason.mix_code, reason.seed)."""

    mix_math: float = param("weight of math in the SFT set's math:code balance", min=0)
    mix_code: float = param("weight of code in the SFT set's math:code balance", min=0)
    seed: int = param("seed of which accepted solutions fill each domain's share")


def mix_weights(math_w: float, code_w: float) -> dict[str, float]:
    """The math:code balance as {'math': w, 'code': w}: finite, >= 0, not both 0."""
    m, c = float(math_w), float(code_w)
    if not (math.isfinite(m) and math.isfinite(c)) or m < 0 or c < 0 or m + c == 0:
        raise ValueError(f"reason.mix_math and mix_code must be finite, >= 0 and not both 0, got {m} and {c}")
    return {"math": m, "code": c}


def mix_counts(available: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """Largest per-domain counts within `available` whose ratio matches `weights`.

    A weighted domain with nothing accepted cannot be balanced against; the others
    are then kept whole rather than emptied (the metrics show target vs achieved)."""
    active = {d: w for d, w in weights.items() if w > 0 and available.get(d, 0) > 0}
    if not active:
        return {d: 0 for d in weights}
    if any(w > 0 and available.get(d, 0) == 0 for d, w in weights.items()):
        return {d: (available.get(d, 0) if d in active else 0) for d in weights}
    total = sum(active.values())
    scale = min(available[d] / (w / total) for d, w in active.items())
    return {d: (int(scale * w / total + 1e-9) if d in active else 0) for d, w in weights.items()}


def build_sft(accepted: list[dict], problems: dict[str, dict], s: FormatSettings) -> tuple[list[dict], dict]:
    """Accepted graded samples -> (SFT examples sorted by id, metrics)."""
    try:
        weights = mix_weights(s.mix_math, s.mix_code)
    except ValueError as e:
        raise SettingsError("--mix-math/--mix-code", str(e)) from None
    examples: dict[str, list[dict]] = {"math": [], "code": []}
    no_final, duplicates, seen = 0, 0, set()
    for rec in accepted:
        key = (rec["problem_id"], rec["text"])
        if key in seen:  # identical samples of one problem add nothing but weight
            duplicates += 1
            continue
        seen.add(key)
        ex = sft_example(rec, problems[rec["problem_id"]])
        if ex is None:
            no_final += 1
            continue
        examples[rec["domain"]].append(ex)
    available = {d: len(v) for d, v in examples.items()}
    counts = mix_counts(available, weights)
    rng = random.Random(s.seed)
    chosen = []
    for d in ("math", "code"):
        pool = sorted(examples[d], key=lambda e: e["id"])
        rng.shuffle(pool)
        chosen.extend(pool[:counts[d]])
    chosen.sort(key=lambda e: e["id"])
    n = len(chosen)
    metrics = {
        "n_examples": n, "by_domain": counts, "available_by_domain": available,
        "by_source": _count(chosen, "source"),
        "mix_target": weights,
        "math_fraction": round(counts["math"] / n, 4) if n else 0.0,
        "skipped_duplicates": duplicates, "skipped_no_final": no_final,
    }
    return chosen, metrics


def _count(records, field) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r[field]] = out.get(r[field], 0) + 1
    return dict(sorted(out.items()))
