"""Math answer grading: extract a final answer from a solution and compare it with the gold one.

`extract_answer` looks for, in order of trust: the last `\\boxed{...}` (nested braces),
the last `#### x` line, the last "final answer: x", the last "the answer is x", and
finally the last number in the text; it reports which method matched. `last_boxed` and
`gold_from_gsm8k` also read the gold answers in `posttrain.reason.problems`.

`answers_equal` is the one answer comparator of the project (reason_filter grading and
the CHAMP pair labels of pref_download). After surface
normalization (`\\dfrac` -> `\\frac`, `1,000` -> 1000, `$5` -> 5, `50\\%` -> 50,
`\\text{}` units dropped): equal strings are equal; two plain numbers (`0.5`, `1/2`,
`\\frac{1}{2}`) compare as exact rationals (math-verify agrees, ~150x slower:
`python bench/answers.py`); everything else is math-verify's symbolic equivalence (sympy
underneath), with one fallback after it for a number followed by units (`18 dollars` = 18).

Time bound: math-verify's own timeouts use `signal.alarm`, which only works on the main
thread. On the main thread we use them; elsewhere (a grading thread) we switch them off and
bound the work instead by refusing symbolic comparison of long answers or answers with huge
powers/factorials, which are what make sympy hang.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction

log = logging.getLogger(__name__)

# math-verify warns once when timeouts are off; that is intended off the main thread.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_SYMBOLIC_CHARS = 200  # longer answers are compared as strings only (sympy can blow up)
SIGNAL_TIMEOUT_S = 3  # math-verify per-call timeout when on the main thread


@dataclass(frozen=True)
class Grade:
    """Verdict for one solution. grade 1/0; reason correct|wrong_answer|no_answer|timeout|error|
    memory|output_limit|...; extracted = the answer (math) or code (code) that was graded;
    method = how it was extracted (boxed, hash, final_answer, answer_is, last_number, fenced, ...)."""

    grade: int
    reason: str
    extracted: str | None
    method: str | None
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- extraction

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is)?\s*[:：]?\s*([^\n]+)", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"(?<![a-z])answer\s+is\b\s*[:：]?\s*([^\n]+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...} with balanced (nested) braces, in order."""
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\" and i + 1 < len(text):  # \{ and \} are literal braces, not groups
                i += 2
                continue
            depth += (c == "{") - (c == "}")
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1].strip())
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if absent."""
    found = _boxed_contents(text)
    return found[-1] if found else None


def _clean_phrase(s: str) -> str:
    """Answer captured after a phrase: cut at sentence end, unwrap $...$ and bold."""
    s = s.strip()
    boxed = _boxed_contents(s)
    if boxed:
        return boxed[-1]
    m = re.search(r"\$\$?(.+?)\$\$?", s)
    if m and "\\$" not in s[:m.start() + 1]:
        s = m.group(1)
    else:
        s = re.split(r"(?<!\d)\.(?!\d)|\.\s|\.$", s, maxsplit=1)[0]  # sentence end, not decimal point
    return s.strip().strip("*").strip().rstrip(".").strip()


def extract_answer_with_method(text: str) -> tuple[str | None, str | None]:
    """(answer, method) with method in boxed|hash|final_answer|answer_is|last_number, or (None, None)."""
    if not text:
        return None, None
    boxed = [b for b in _boxed_contents(text) if b]
    if boxed:
        return boxed[-1], "boxed"
    for method, rx in (("hash", _HASH_RE), ("final_answer", _FINAL_RE), ("answer_is", _ANSWER_IS_RE)):
        found = [m.group(1) for m in rx.finditer(text)]
        for cand in reversed(found):
            ans = _clean_phrase(cand)
            if ans:
                return ans, method
    nums = _NUMBER_RE.findall(text)
    if nums:
        return nums[-1].rstrip(","), "last_number"
    return None, None


def extract_answer(text: str) -> str | None:
    """The final answer in a solution text, or None when there is none."""
    return extract_answer_with_method(text)[0]


# ---------------------------------------------------------------- comparison

_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm|operatorname)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_UNIT_TAIL_RE = re.compile(r"^(-?[\d.,/]+)\s*[A-Za-z][A-Za-z .]*$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_HUGE_RE = re.compile(r"\^\s*\{?\s*[\d(]{3,}|\*\*\s*\(?\d{3,}|\d{3,}\s*!|\^\s*\{?[^}]*\^")


def normalize_answer(s: str) -> str:
    """Surface normalization that keeps meaning: LaTeX spacing, $ and \\text{} units, % and
    thousands separators, \\dfrac/\\tfrac -> \\frac."""
    s = str(s).strip().replace("\u2212", "-").replace("\u2013", "-")  # unicode minus / en dash
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ")
    s = s.replace("\\left", "").replace("\\right", "")
    for delim in ("\\(", "\\)", "\\[", "\\]"):  # inline / display math delimiters
        s = s.replace(delim, "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "").replace("^\\circ", "").replace("^{\\circ}", "")
    s = _TEXT_CMD_RE.sub(lambda m: "" if re.fullmatch(r"\s*[A-Za-z .]*", m.group(1)) else m.group(1), s)
    s = s.strip().rstrip(".").strip()
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1].strip()
    if _THOUSANDS_RE.match(s.replace(" ", "")):
        s = s.replace(",", "").replace(" ", "")
    return s


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number / fraction / simple \\frac, else None."""
    t = s.replace(" ", "")
    if _THOUSANDS_RE.match(t):
        t = t.replace(",", "")
    m = _FRAC_RE.match(t)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        v = Fraction(num, den)
        return -v if m.group(1) else v
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)(/\d+)?", t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _number_with_unit(s: str) -> Fraction | None:
    """'18 dollars' -> 18 (a number followed only by words)."""
    m = _UNIT_TAIL_RE.match(s)
    return _as_number(m.group(1).rstrip(".,")) if m else None


def _symbolic_equal(pred: str, gold: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if any(len(x) > MAX_SYMBOLIC_CHARS or _HUGE_RE.search(x) for x in (pred, gold)):
        return False
    on_main = threading.current_thread() is threading.main_thread()
    tmo = SIGNAL_TIMEOUT_S if on_main else None  # signal.alarm only works on the main thread
    cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        g = parse(f"${gold}$", extraction_config=cfg, parsing_timeout=tmo)
        p = parse(f"${pred}$", extraction_config=cfg, parsing_timeout=tmo)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=tmo))
    except Exception as e:  # math-verify/sympy internals: treat as not equal, never crash a run
        log.debug("symbolic compare failed for %r vs %r: %s", pred, gold, e)
        return False


def answers_equal(pred: str | None, gold: str | None) -> bool:
    """True when pred and gold denote the same value (the module docstring says how)."""
    if pred is None or gold is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    pn, gn = _as_number(p), _as_number(g)
    if pn is not None and gn is not None:
        return _rationals_equal(pn, gn, p, g)  # math-verify would add nothing, ~150x slower
    if _symbolic_equal(p, g):
        return True
    # math-verify reads "18 dollars" as a product with a symbol; the number is the answer
    pn = _number_with_unit(p) if gn is not None else None
    return pn is not None and _rationals_equal(pn, gn, p, g)


def _rationals_equal(pn: Fraction, gn: Fraction, p: str, g: str) -> bool:
    if pn == gn:
        return True
    # decimals written with finite digits vs a repeating fraction (0.333333 vs 1/3)
    return abs(pn - gn) <= Fraction(1, 10**6) * max(1, abs(gn)) and ("." in p or "." in g)


def grade_math(text: str, gold: str) -> Grade:
    """Grade a math solution against its gold answer."""
    extracted, method = extract_answer_with_method(text)
    if extracted is None:
        return Grade(0, "no_answer", None, None)
    ok = answers_equal(extracted, gold)
    return Grade(int(ok), "correct" if ok else "wrong_answer", extracted, method)


def gold_from_gsm8k(answer_field: str) -> str:
    """GSM8K gold: the text after '####', thousands separators removed."""
    if "####" not in answer_field:
        raise ValueError("GSM8K answer has no '####' line")
    return normalize_answer(answer_field.rsplit("####", 1)[1].strip())
