"""Bad-input corpus: every stage that reads a user file or a number, fed bad input.

Each case is (stage, the bad file content or param, the exact expected outcome):
- an error: exit status != 0, stderr's last line is one line naming the stage and the
  file / line / field (a regex), no "Traceback" anywhere in stderr, and no output file
  exists (nothing looks finished);
- or a counted skip: exit 0 and the count in the stage's metrics.

Stages run as subprocesses (`python stages/X.py` with the args dvc.yaml gives them),
outputs in tmp_path/out. No case loads a model (bad input is found before), so the
tiny model folder is only a realistic `--model` argument.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ML_TINY = REPO / "tests" / "fixtures" / "ml-tiny"
SHARED = REPO.parent / "shared" / "data"
HH_SPLIT = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
MODEL_STAGES = {"rec_tokenize", "pref_rm", "reason_generate"}


@dataclass
class Case:
    id: str
    stage: str
    build: Callable  # (tmp, model_dir) -> args; writes its inputs under tmp/"in"
    error: str | None = None  # regex for stderr's last line; None = the stage succeeds
    check: Callable | None = None  # (tmp) -> None, for cases that succeed (counted skips)
    needs: tuple = field(default=())  # "shared": needs ../shared/data beside the repo
    slow: bool = False  # pref_rm imports torch (~5 s a run): only two of its cases run by default


def jl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def put(tmp: Path, name: str, content) -> Path:
    p = tmp / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def out(tmp: Path, name: str) -> Path:
    return tmp / "out" / name


def metrics(tmp: Path) -> dict:
    return json.loads(out(tmp, "m.json").read_text())


# ------------------------------------------------------------------ rec_prepare

RATINGS = (ML_TINY / "ratings.csv").read_text().splitlines()  # line 1 = header
MOVIES = (ML_TINY / "movies.csv").read_text()


def rec_prepare(*, lines: dict | None = None, append=(), header=None, movies=MOVIES, threshold="4.0",
                val="0.1", test="0.2", source=None, raw=None, sep=None):
    """ml-tiny with file line N of ratings.csv replaced by lines[N] (None drops it); `sep`
    rewrites every ratings row with another separator; `raw` maps a file name (ratings.csv,
    movies.csv) to (line, bytes) put at that line's start, for bytes that are not text."""
    def build(tmp, _model):
        rows = list(RATINGS)
        if header is not None:
            rows[0] = header
        for n, text in (lines or {}).items():
            rows[n - 1] = text
        rows = [r for r in rows if r is not None] + list(append)
        if sep is not None:
            rows = [r.replace(",", sep) for r in rows]
        put(tmp, "ml/ratings.csv", "\n".join(rows) + "\n" if rows else "")
        put(tmp, "ml/movies.csv", movies)
        for name, (n, blob) in (raw or {}).items():
            f = tmp / "in" / "ml" / name
            text = f.read_bytes().split(b"\n")
            text[n - 1] = blob + text[n - 1]
            f.write_bytes(b"\n".join(text))
        return ["--source", source or tmp / "in" / "ml", "--history-len", 3, "--rating-threshold", threshold,
                "--val-ratio", val, "--test-ratio", test, "--seed", 0, "--out-dir", out(tmp, "rec"),
                "--metrics", out(tmp, "m.json")]
    return build


def _rec_dupes(tmp):
    m = metrics(tmp)
    assert m["duplicate_ratings_dropped"] == 2 and m["ratings"] == 160
    # the re-rated movie (user 1, movie 11) appears once, with its latest rating
    rows = [json.loads(x) for x in out(tmp, "rec/test_raw.jsonl").read_text().splitlines()]
    rows += [json.loads(x) for x in out(tmp, "rec/train_meta.jsonl").read_text().splitlines()]
    assert [r["rating"] for r in rows if r["user_id"] == "1" and r["item_id"] == "11"] in ([], [1.0])


def _ratings_folder(tmp, model):
    args = rec_prepare()(tmp, model)
    f = tmp / "in" / "ml" / "ratings.csv"
    f.unlink()
    f.mkdir()
    return args


R_LINE = "ratings\\.csv, line"
CASES = [
    Case("rec-rating-inf", "rec_prepare", rec_prepare(lines={5: "1,21,inf,1003001"}),
         rf"^rec_prepare: error: .*{R_LINE} 5: field 'rating': not a finite number: 'inf'$"),
    Case("rec-rating-nan", "rec_prepare", rec_prepare(lines={7: "1,3,nan,1005001"}),
         rf"^rec_prepare: error: .*{R_LINE} 7: field 'rating': not a finite number: 'nan'$"),
    Case("rec-rating-7", "rec_prepare", rec_prepare(lines={3: "1,5,7,1001001"}),
         rf"^rec_prepare: error: .*{R_LINE} 3: field 'rating': rating 7 outside the MovieLens scale 0.5-5$"),
    Case("rec-rating-negative", "rec_prepare", rec_prepare(lines={4: "1,13,-3,1002001"}),
         rf"^rec_prepare: error: .*{R_LINE} 4: field 'rating': rating -3 outside the MovieLens scale"),
    Case("rec-rating-text", "rec_prepare", rec_prepare(lines={6: "1,2,good,1004001"}),
         rf"^rec_prepare: error: .*{R_LINE} 6: field 'rating': not a finite number: 'good'$"),
    Case("rec-timestamp-inf", "rec_prepare", rec_prepare(lines={8: "1,18,2.0,inf"}),
         rf"^rec_prepare: error: .*{R_LINE} 8: field 'timestamp': not a finite number: 'inf'$"),
    Case("rec-timestamp-nan", "rec_prepare", rec_prepare(lines={9: "1,4,3.0,NaN"}),
         rf"^rec_prepare: error: .*{R_LINE} 9: field 'timestamp': not a finite number: 'NaN'$"),
    # a short row, another separator or an extra column is the file's shape, not a bad value
    Case("rec-short-row", "rec_prepare", rec_prepare(lines={10: "1,12"}),
         rf"^rec_prepare: error: .*{R_LINE} 10: expected 4 fields, got 2; is the separator ','\?$"),
    Case("rec-row-other-separator", "rec_prepare", rec_prepare(lines={6: "1;2;4.5;1004001"}),
         rf"^rec_prepare: error: .*{R_LINE} 6: expected 4 fields, got 1; is the separator ','\?$"),
    Case("rec-row-extra-column", "rec_prepare", rec_prepare(lines={7: "1,3,1.0,1005001,x"}),
         rf"^rec_prepare: error: .*{R_LINE} 7: expected 4 fields, got 5; is the separator ','\?$"),
    Case("rec-first-row-extra-column", "rec_prepare", rec_prepare(lines={2: "1,11,4.5,1000001,x"}),
         rf"^rec_prepare: error: .*{R_LINE} 2: expected 4 fields, got 5; is the separator ','\?$"),
    Case("rec-file-other-separator", "rec_prepare", rec_prepare(sep=";"),
         rf"^rec_prepare: error: .*{R_LINE} 1: expected at least 4 fields, got 1; is the separator ','\?$"),
    Case("rec-movies-extra-column", "rec_prepare", rec_prepare(movies=MOVIES.replace(
        "4,Film 4 (1974),", "4,Film 4, the sequel (1974),")),
         r"^rec_prepare: error: .*movies\.csv, line 5: expected 3 fields, got 4; is the separator ','\?$"),
    Case("rec-timestamp-fractional", "rec_prepare", rec_prepare(lines={12: "1,26,1.0,964982703.9"}),
         rf"^rec_prepare: error: .*{R_LINE} 12: field 'timestamp': not a whole number of seconds: "
         r"'964982703.9'$"),
    # the bad byte's own line (a text decoder reads ahead and failed lines before it)
    Case("rec-ratings-not-utf8", "rec_prepare", rec_prepare(raw={"ratings.csv": (10, b"\xff")}),
         rf"^rec_prepare: error: .*{R_LINE} 10: not UTF-8 text \(invalid start byte at column 1\)$"),
    Case("rec-movies-not-utf8", "rec_prepare", rec_prepare(raw={"movies.csv": (20, b"\xe9")}),
         r"^rec_prepare: error: .*movies\.csv, line 20: not UTF-8 text \(invalid continuation byte at "
         r"column 1\)$"),
    Case("rec-unknown-movie", "rec_prepare", rec_prepare(lines={11: "1,999,4.0,1009001"}),
         rf"^rec_prepare: error: .*{R_LINE} 11: field 'movieId': rating of unknown movie '999'"),
    Case("rec-missing-column", "rec_prepare", rec_prepare(header="userId,movieId,stars,timestamp"),
         rf"^rec_prepare: error: .*{R_LINE} 1: field 'rating': missing column"),
    Case("rec-empty-ratings", "rec_prepare", rec_prepare(lines={n: None for n in range(1, 162)}),
         r"^rec_prepare: error: .*ratings\.csv: empty file$"),
    Case("rec-duplicate-movie-id", "rec_prepare", rec_prepare(movies=MOVIES + "3,Film 3 again (1973),Drama\n"),
         r"^rec_prepare: error: .*movies\.csv, line 32: field 'movieId': duplicate movie id '3'$"),
    Case("rec-threshold-7", "rec_prepare", rec_prepare(threshold="7"),
         r"^rec_prepare: error: Invalid value for --rating-threshold: rating_threshold must be in \(0.5, 5\] "
         r"\(the MovieLens star scale\), got 7.0$"),
    Case("rec-threshold-nan", "rec_prepare", rec_prepare(threshold="nan"),
         r"^rec_prepare: error: Invalid value for '--rating-threshold' .*'nan' is not a finite number.$"),
    Case("rec-split-ratios", "rec_prepare", rec_prepare(val="0.6", test="0.5"),
         r"^rec_prepare: error: Invalid value for --val-ratio/--test-ratio: val_ratio \+ test_ratio must be < 1 "
         r"\(a train split must remain\), got 0.6 \+ 0.5$"),
    Case("rec-ratings-is-a-folder", "rec_prepare", _ratings_folder,
         r"^rec_prepare: error: .*ratings\.csv: is a directory, expected a file$"),
    Case("rec-missing-folder", "rec_prepare", rec_prepare(source="in/no-such-folder/ml"),
         r"^rec_prepare: error: in/no-such-folder/ml: file not found$"),
    # user 1 re-rates movie 11 later (1.0) and repeats a row exactly: 2 dropped, latest kept
    Case("rec-duplicate-ratings-counted", "rec_prepare",
         rec_prepare(append=["1,11,1.0,1015500", "1,5,2.0,1001001"]), check=_rec_dupes),
]


# ------------------------------------------------------------------ pref_download

def pref_download(content=None, name="p.jsonl", twice=False, source=None, cap=0, path=None):
    def build(tmp, _model):
        f = source(tmp) if source else put(tmp, name, content)
        src = ["--path:" + (str(f) if path is None else path), cap] * (2 if twice else 1)
        return ["--out", out(tmp, "pairs.jsonl"), "--metrics", out(tmp, "m.json"), "--per-prompt", 4,
                "--seed", 0, *src]
    return build


def _truncated_hh(tmp):
    blob = HH_SPLIT.read_bytes()
    return put(tmp, "hh.jsonl.gz", blob[: len(blob) // 2])


def _skips(name, want: dict, pairs: int):
    def check(tmp):
        m = metrics(tmp)
        (s,) = m["sources"].values()
        assert s["skipped"] == want and s["pairs"] == pairs == m["pairs"]
        assert s["rows"] == s["rows_with_pairs"] + s["skipped_total"]
    return check


def _joined_parts(tmp):
    (pair,) = [json.loads(x) for x in out(tmp, "pairs.jsonl").read_text().splitlines()]
    assert pair["prefix"]["messages"] == [{"role": "user", "content": "Name a prime.\nOne word."}]
    assert (pair["chosen"], pair["rejected"]) == ("Seven.", "Eight.")


OK = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
HH_OK = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
P = r"^pref_download: error: .*p\.jsonl"
CASES += [
    Case("pref-null-prompt", "pref_download", pref_download(jl(OK, {**OK, "prompt": None})),
         rf"{P}, line 2: field 'prompt': expected a string or a list of text parts, got null$"),
    Case("pref-dict-prompt", "pref_download", pref_download(jl({**OK, "prompt": {"text": "hi"}})),
         rf"{P}, line 1: field 'prompt': expected a string or a list of text parts, got dict$"),
    Case("pref-number-answer", "pref_download", pref_download(jl(OK, OK, {**OK, "chosen": 4})),
         rf"{P}, line 3: field 'chosen': expected a string or a list of messages$"),
    Case("pref-null-message-content", "pref_download", pref_download(jl(
        {"chosen": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": "user", "content": None}, {"role": "assistant", "content": "b"}]})),
         rf"{P}, line 1: field 'chosen\[0\].content': expected a string or a list of text parts, got null$"),
    Case("pref-null-role", "pref_download", pref_download(jl(
        {"chosen": [{"role": None, "content": "q"}, {"role": "assistant", "content": "a"}],
         "rejected": [{"role": None, "content": "q"}, {"role": "assistant", "content": "b"}]})),
         rf"{P}, line 1: field 'chosen\[0\].role': expected a string$"),
    Case("pref-part-without-text", "pref_download", pref_download(jl(
        {**OK, "prompt": [{"type": "text", "text": None}]})),
         rf"{P}, line 1: field 'prompt': a text part without a string 'text'$"),
    Case("pref-missing-rejected", "pref_download", pref_download(jl(OK, {"prompt": "q", "chosen": "a"})),
         rf"{P}, line 2: field 'rejected': missing$"),
    Case("pref-malformed-line", "pref_download", pref_download(jl(OK) + '{"prompt": "q", "chosen": \n'),
         rf"{P}, line 2: malformed JSON: Expecting value \(column \d+\)$"),
    Case("pref-nan-constant", "pref_download", pref_download(jl(OK) + '{"prompt": "q", "chosen": NaN, "rejected": "b"}\n'),
         rf"{P}, line 2: NaN is not a JSON value \(non-finite numbers are not allowed\)$"),
    Case("pref-not-an-object", "pref_download", pref_download(jl(OK) + "[1, 2]\n"),
         rf"{P}, line 2: expected a JSON object, got list$"),
    Case("pref-se-score-text", "pref_download", pref_download(jl(
        {"question": "q", "answers": [{"text": "a", "pm_score": "high"}, {"text": "b", "pm_score": 1}]})),
         rf"{P}, line 1: field 'answers\[0\].pm_score': expected a number, got 'high'$"),
    Case("pref-json-not-a-list", "pref_download", pref_download(json.dumps({"rows": [OK]}), name="p.json"),
         r"^pref_download: error: .*p\.json: expected a JSON list of records$"),
    Case("pref-json-malformed", "pref_download", pref_download('[\n{"prompt": "q",\n', name="p.json"),
         r"^pref_download: error: .*p\.json, line 3: malformed JSON: Expecting property name"),
    Case("pref-truncated-gzip", "pref_download", pref_download(source=_truncated_hh),
         r"^pref_download: error: .*hh\.jsonl\.gz, line \d+: truncated or corrupt gzip after \d+ complete lines",
         needs=("shared",)),
    Case("pref-missing-file", "pref_download", pref_download(source=lambda tmp: tmp / "in" / "nope.jsonl"),
         r"^pref_download: error: .*nope\.jsonl: source file not found$"),
    Case("pref-path-is-a-folder", "pref_download", pref_download(source=lambda tmp: put(tmp, "d/x.txt", "x").parent),
         r"^pref_download: error: .*in/d: is a directory, expected a file$"),
    Case("pref-empty-path", "pref_download", pref_download(jl(OK), path=""),
         r"^pref_download: error: pref\.sources: source 'path:': empty path, expected path:FILE$"),
    Case("pref-negative-cap", "pref_download", pref_download(jl(OK), cap=-5),
         r"^pref_download: error: pref\.sources: source 'path:.*p\.jsonl': cap must be an integer >= 0 "
         r"\(0 = all\), got -5$"),
    Case("pref-not-utf8-line-10", "pref_download", pref_download(
        jl(*[{**OK, "prompt": f"{i} " + "x" * 2000} for i in range(9)]).encode()
        + b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n'),
         rf"{P}, line 10: not UTF-8 text \(invalid start byte at column 13\)$"),
    Case("pref-same-source-twice", "pref_download", pref_download(jl(OK), twice=True),
         r"^pref_download: error: source 'path:.*p\.jsonl' given more than once$"),
    Case("pref-content-parts-joined", "pref_download", pref_download(jl(
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Name a prime."},
                                                 {"type": "text", "text": "One word."}]}],
         "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Seven."}]}],
         "rejected": [{"role": "assistant", "content": "Eight."}]})), check=_joined_parts),
    Case("pref-image-part-skipped", "pref_download", pref_download(jl(
        OK, {**OK, "prompt": [{"type": "image_url", "image_url": {"url": "x.png"}}]})),
         check=_skips("p", {"non_text_content": 1}, 1)),
    Case("pref-identical-and-mismatch-skipped", "pref_download", pref_download(jl(
        HH_OK, {**OK, "rejected": "4"}, {**HH_OK, "rejected": "\n\nHuman: yo\n\nAssistant: go away"})),
         check=_skips("p", {"identical_answers": 1, "prefix_mismatch": 1}, 1)),
    Case("pref-real-hh-split", "pref_download", pref_download(source=lambda tmp: HH_SPLIT),
         check=_skips("hh", {"prefix_mismatch": 5}, 2307), needs=("shared",)),
]


# ------------------------------------------------------------------ reason_collect

def reason_collect(sources=None, files: dict | None = None, params_text=None):
    def build(tmp, _model):
        for name, content in (files or {}).items():
            put(tmp, name, content)
        text = params_text if params_text is not None else json.dumps({"reason": {"sources": sources}})
        params = put(tmp, "params.yaml", text)
        return ["--params-file", params, "--sources-key", "reason.sources", "--sample", 0, "--seed", 0,
                "--out", out(tmp, "problems.jsonl"), "--metrics", out(tmp, "m.json")]
    return build


def _gsm(path, loader="gsm8k"):
    return [{"name": f"in/{path}", "loader": loader}]


def _no_gold_counted(tmp):
    m = metrics(tmp)
    assert m["n_problems"] == 1 and m["by_source"]["m.jsonl"] == {"available": 1, "skipped_no_gold": 1,
                                                                  "selected": 1}


GSM_OK = {"question": "1+1?", "answer": "1+1=2\n#### 2"}
C = r"^reason_collect: error: "
CASES += [
    Case("collect-missing-local-file", "reason_collect", reason_collect(_gsm("probs/missing.jsonl")),
         rf"{C}in/probs/missing.jsonl: file not found$"),
    Case("collect-missing-in-existing-dir", "reason_collect",
         reason_collect([{"name": "in/problemz"}], files={"problems/other.txt": "x"}),
         rf"{C}in/problemz: file not found$"),
    Case("collect-gsm8k-no-answer-field", "reason_collect",
         reason_collect(_gsm("g.jsonl"), files={"g.jsonl": jl(GSM_OK, {"question": "2+2?"})}),
         rf"{C}in/g\.jsonl, line 2: field 'answer': missing$"),
    Case("collect-gsm8k-no-hashes", "reason_collect",
         reason_collect(_gsm("g.jsonl"), files={"g.jsonl": jl({"question": "q", "answer": "it is 4"})}),
         rf"{C}in/g\.jsonl, line 1: field 'answer': no '#### <answer>' in the solution$"),
    Case("collect-question-not-text", "reason_collect",
         reason_collect(_gsm("g.jsonl"), files={"g.jsonl": jl(GSM_OK, {**GSM_OK, "question": 7})}),
         rf"{C}in/g\.jsonl, line 2: field 'question': expected a string, got int$"),
    Case("collect-truncated-gzip", "reason_collect",
         reason_collect(_gsm("g.jsonl.gz"), files={"g.jsonl.gz": gzip.compress(
             jl(*[{**GSM_OK, "question": f"q{i} " + "x" * 40} for i in range(400)]).encode(), mtime=0)[:900]}),
         rf"{C}in/g\.jsonl\.gz, line \d+: truncated or corrupt gzip after \d+ complete lines"),
    Case("collect-humaneval-no-check", "reason_collect",
         reason_collect(_gsm("h.jsonl", "humaneval"), files={"h.jsonl": jl(
             {"prompt": "def f():\n", "test": "assert f() == 1", "entry_point": "f"})}),
         rf"{C}in/h\.jsonl, line 1: field 'test': test program defines no check\(candidate\)$"),
    Case("collect-problems-is-a-folder", "reason_collect",
         reason_collect(_gsm("probs"), files={"probs/g.jsonl": jl(GSM_OK)}),
         rf"{C}in/probs: is a directory, expected a file$"),
    Case("collect-empty-question", "reason_collect",
         reason_collect(_gsm("g.jsonl"), files={"g.jsonl": jl(GSM_OK, {**GSM_OK, "question": " "})}),
         rf"{C}in/g\.jsonl, line 2: field 'question': empty text$"),
    Case("collect-not-utf8-line-10", "reason_collect",
         reason_collect(_gsm("g.jsonl"), files={"g.jsonl": jl(*[{**GSM_OK, "question": "q" * 3000}] * 9).encode()
                                                 + b'{"question": "\xc3(", "answer": "#### 1"}\n'}),
         rf"{C}in/g\.jsonl, line 10: not UTF-8 text \(invalid continuation byte at column 15\)$"),
    Case("collect-unknown-dataset", "reason_collect", reason_collect([{"name": "no-such-dataset"}]),
         r"^reason_collect: error: Invalid value for reason.sources: source 'no-such-dataset': unknown dataset"),
    Case("collect-negative-cap", "reason_collect", reason_collect([{"name": "gsm8k-test", "cap": -2}]),
         r"^reason_collect: error: Invalid value for reason.sources: reason.sources\[0\].cap must be a "
         r"non-negative integer or null$"),
    Case("collect-params-not-yaml", "reason_collect", reason_collect(params_text="reason: [unclosed\n"),
         r"^reason_collect: error: .*params\.yaml, line \d+: not YAML"),
    Case("collect-math-no-gold-counted", "reason_collect",
         reason_collect(_gsm("m.jsonl", "math"), files={"m.jsonl": jl(
             {"problem": "1+1?", "solution": "so \\boxed{2}"}, {"problem": "2+2?", "solution": "four"})}),
         check=_no_gold_counted),
]


# ------------------------------------------------------------------ pref_prefixes

PAIR = {"id": "p1", "prefix": {"messages": [{"role": "user", "content": "q"}]}, "chosen": "a",
        "rejected": "b", "src": "t"}


def pref_prefixes(content):
    def build(tmp, _model):
        return ["--pairs", put(tmp, "pairs.jsonl", content), "--prefixes", out(tmp, "prefixes.jsonl"),
                "--id-map", out(tmp, "map.tsv"), "--metrics", out(tmp, "m.json")]
    return build


PP = r"^pref_prefixes: error: .*pairs\.jsonl, line"
CASES += [
    Case("prefixes-prefix-not-object", "pref_prefixes", pref_prefixes(jl(PAIR, {**PAIR, "prefix": "q"})),
         rf"{PP} 2: field 'prefix': prefix.messages must be a non-empty list$"),
    Case("prefixes-last-not-user", "pref_prefixes", pref_prefixes(jl({**PAIR, "prefix": {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}})),
         rf"{PP} 1: field 'prefix.messages': last prefix message must be from the user$"),
    Case("prefixes-chosen-number", "pref_prefixes", pref_prefixes(jl(PAIR, PAIR, {**PAIR, "chosen": 1})),
         rf"{PP} 3: field 'chosen': expected a string, got int$"),
    Case("prefixes-missing-src", "pref_prefixes",
         pref_prefixes(jl({k: v for k, v in PAIR.items() if k != "src"})),
         rf"{PP} 1: field 'src': missing$"),
]


# ------------------------------------------------------------------ pref_density

def pref_density(emb=None, ids=("a", "b", "c", "d"), eps="0.01", emb_bytes=None):
    def build(tmp, _model):
        e = put(tmp, "emb.npy", b"")
        if emb_bytes is not None:
            e.write_bytes(emb_bytes)
        else:
            np.save(e, np.eye(4, 8, dtype=np.float32) if emb is None else emb)
        idp = put(tmp, "ids.json", json.dumps(list(ids)))
        info = put(tmp, "info.json", "{}")
        pre = put(tmp, "prefixes.jsonl", jl(*[{"prefix_id": i, "text": f"t {i}"} for i in ids]))
        return ["--embeddings", e, "--ids", idp, "--info", info, "--prefixes", pre, "--k", 2, "--eps", eps,
                "--method", "exact", "--auto-threshold", 100, "--power", 1, "--cap-quantile", 1, "--seed", 0,
                "--weights", out(tmp, "w.npy"), "--metadata", out(tmp, "meta.json"),
                "--projection", out(tmp, "proj.json"), "--metrics", out(tmp, "m.json"),
                "--hist", out(tmp, "hist.json")]
    return build


def _with(value, row=2):
    x = np.eye(4, 8, dtype=np.float32)
    x[row, 5] = value
    return x


D = r"^pref_density: error: .*emb\.npy"
CASES += [
    Case("density-nan-row", "pref_density", pref_density(_with(np.nan)),
         rf"{D}: field 'embedding': row 2 \(id c\) has non-finite values; 1 such row\(s\)$"),
    Case("density-inf-row", "pref_density", pref_density(_with(np.inf, row=0)),
         rf"{D}: field 'embedding': row 0 \(id a\) has non-finite values"),
    Case("density-ids-mismatch", "pref_density", pref_density(ids=("a", "b", "c")),
         r"^pref_density: error: .*ids\.json: 3 ids for 4 embedding rows in .*emb\.npy$"),
    Case("density-one-dimensional", "pref_density", pref_density(np.ones(4, dtype=np.float32)),
         rf"{D}: expected a numeric \[N, dim\] array, got float32 of shape \(4,\)$"),
    Case("density-not-npy", "pref_density", pref_density(emb_bytes=b"not an array"),
         rf"{D}: not a readable \.npy array"),
    Case("density-eps-nan", "pref_density", pref_density(eps="nan"),
         r"^pref_density: error: Invalid value for '--eps': 'nan' is not a finite number.$"),
]


# ------------------------------------------------------------------ reason_format

PROBLEMS = jl({"id": "m1", "domain": "math", "source": "s", "problem": "1+1?", "answer": "2"},
              {"id": "c1", "domain": "code", "source": "s", "problem": "add", "answer": "",
               "prompt": "def add(a, b):\n", "tests": "def check(c): pass\n", "entry_point": "add"})
SOL = {"id": "m1/0", "problem_id": "m1", "domain": "math", "source": "s", "text": "1+1=2", "extracted": "2"}
CODE_SOL = {"id": "c1/0", "problem_id": "c1", "domain": "code", "source": "s",
            "text": "```python\ndef add(a, b):\n    return a + b\n```"}


def reason_format(filtered, problems=PROBLEMS, mix=("1", "1")):
    def build(tmp, _model):
        return ["--problems", put(tmp, "problems.jsonl", problems), "--filtered", put(tmp, "f.jsonl", filtered),
                "--out", out(tmp, "sft.jsonl"), "--metrics", out(tmp, "m.json"), "--mix-math", mix[0],
                "--mix-code", mix[1], "--seed", 0]
    return build


def _format_skips(tmp):
    m = metrics(tmp)
    assert (m["skipped_duplicates"], m["skipped_no_final"], m["n_examples"]) == (1, 1, 2)


F = r"^reason_format: error: .*f\.jsonl, line"
CASES += [
    Case("format-mix-nan", "reason_format", reason_format(jl(SOL, CODE_SOL), mix=("nan", "1")),
         r"^reason_format: error: Invalid value for '--mix-math' .*'nan' is not a finite number.$"),
    Case("format-mix-negative", "reason_format", reason_format(jl(SOL), mix=("-1", "1")),
         r"^reason_format: error: Invalid value for '--mix-math' .*-1.0 is not in the range x>=0.$"),
    Case("format-mix-both-zero", "reason_format", reason_format(jl(SOL), mix=("0", "0")),
         r"^reason_format: error: Invalid value for --mix-math/--mix-code: reason.mix_math and mix_code must be "
         r"finite, >= 0 and not both 0, got 0.0 and 0.0$"),
    Case("format-unknown-problem", "reason_format", reason_format(jl(SOL, {**SOL, "problem_id": "zz"})),
         rf"{F} 2: field 'problem_id': unknown problem 'zz'$"),
    Case("format-domain-mismatch", "reason_format", reason_format(jl({**CODE_SOL, "domain": "math"})),
         rf"{F} 1: field 'domain': domain 'math' differs from its problem's 'code'$"),
    Case("format-text-not-string", "reason_format", reason_format(jl(SOL, {**SOL, "text": 12})),
         rf"{F} 2: field 'text': expected a string, got int$"),
    Case("format-infinity-constant", "reason_format",
         reason_format(jl(SOL) + '{"id": "m1/1", "problem_id": "m1", "domain": "math", "source": "s", '
                                 '"text": "t", "extracted": Infinity}\n'),
         rf"{F} 2: Infinity is not a JSON value"),
    Case("format-problem-missing-answer", "reason_format",
         reason_format(jl(SOL), problems=jl({"id": "m1", "domain": "math", "source": "s", "problem": "q"})),
         r"^reason_format: error: .*problems\.jsonl, line 1: field 'answer': missing$"),
    Case("format-duplicate-and-no-final-counted", "reason_format", reason_format(jl(
        SOL, SOL, {**SOL, "id": "m1/1", "text": "no idea", "extracted": None}, CODE_SOL)),
         check=_format_skips),
]


# ------------------------------------------------------------------ rec_tokenize

ALPACA = {"instruction": "Will the user like it?", "input": "history", "output": "Yes", "system": "s",
          "history": []}


def rec_tokenize(train=None, cutoff="64"):
    def build(tmp, model):
        put(tmp, "rec/train.json", json.dumps([ALPACA]) if train is None else train)
        put(tmp, "rec/eval.json", json.dumps([ALPACA]))
        return ["--model", model, "--data-dir", tmp / "in" / "rec", "--cutoff-len", cutoff,
                "--truncation", "left", "--out", out(tmp, "tokenized"), "--metrics", out(tmp, "m.json"),
                "--hist", out(tmp, "hist.json")]
    return build


T = r"^rec_tokenize: error: .*train\.json"
CASES += [
    Case("tokenize-cutoff-0", "rec_tokenize", rec_tokenize(cutoff="0"),
         r"^rec_tokenize: error: Invalid value for '--cutoff-len' / '--cutoff_len': 0 is not in the range x>=1.$"),
    Case("tokenize-cutoff-negative", "rec_tokenize", rec_tokenize(cutoff="-5"),
         r"^rec_tokenize: error: Invalid value for '--cutoff-len' / '--cutoff_len': -5 is not in the range x>=1.$"),
    Case("tokenize-missing-output", "rec_tokenize",
         rec_tokenize(json.dumps([ALPACA, {k: v for k, v in ALPACA.items() if k != "output"}])),
         rf"{T}: field 'output': record 2: expected a non-empty string, got None$"),
    Case("tokenize-empty-output", "rec_tokenize", rec_tokenize(json.dumps([{**ALPACA, "output": " "}])),
         rf"{T}: field 'output': record 1: expected a non-empty string, got ' '$"),
    Case("tokenize-not-a-list", "rec_tokenize", rec_tokenize(json.dumps(ALPACA)),
         rf"{T}: expected a JSON list of Alpaca records, got dict$"),
    Case("tokenize-malformed", "rec_tokenize", rec_tokenize('[{"instruction": "x",'),
         rf"{T}, line 1: malformed JSON: Expecting property name"),
]


# ------------------------------------------------------------------ pref_rm

def _pref_pair(i, text):
    return {"id": f"p{i}", "prefix": {"messages": [{"role": "user", "content": text}]}, "chosen": "good",
            "rejected": "bad", "src": "t"}


def pref_rm(pairs=None, weights=None, ids=None, heldout="0.25", quantile="0.25"):
    texts = [f"question {i}" for i in range(4)]

    def build(tmp, model):
        from posttrain.pref.pairs import prefix_id

        pids = [prefix_id([{"role": "user", "content": t}]) for t in texts]
        p = put(tmp, "pairs.jsonl", pairs if pairs is not None else jl(*[_pref_pair(i, t) for i, t in enumerate(texts)]))
        idp = put(tmp, "ids.json", json.dumps(ids if ids is not None else pids))
        w = put(tmp, "w.npy", b"")
        np.save(w, np.full(4, 0.25) if weights is None else weights)
        return ["--pairs", p, "--ids", idp, "--weights", w, "--backbone", model, "--out", out(tmp, "rm"),
                "--metrics", out(tmp, "m.json"), "--facts", out(tmp, "run.json"), "--live", out(tmp, "dvclive"),
                "--predictions", out(tmp, "predictions.jsonl"), "--density-aware", "true",
                "--max-pairs", 0, "--heldout-fraction", heldout, "--bucket-quantile", quantile, "--seed", 0,
                "--max-length", 64, "--max-steps", 1, "--batch-size", 2, "--eval-batch-size", 2, "--grad-accum", 1, "--lr", 1e-4,
                "--lora-r", 0, "--lora-alpha", 16, "--num-layers", 0, "--trainable-layers", 0, "--train-seed", 0,
                "--train-precision", "fp32", "--train-frozen-trunk", "true", "--train-labelled-head", "true",
                "--train-shared-prefill", "true",
                "--train-shared-prefix", "true", "--train-frozen-cast", "true",
                "--train-reuse-freed-memory", "true"]
    return build


def _rm_empty_buckets(tmp):
    # equal weights: no prefix is rare or common, so those buckets are empty -> null, not NaN
    m = metrics(tmp)
    rare = m["heldout_buckets"]["rare"]
    assert rare["n"] == 0 and rare["accuracy"] is None and rare["margin"] is None
    s = json.loads((out(tmp, "rm") / "sampling.json").read_text(encoding="utf-8"))
    assert s["draws_per_rare_item"] is None and s["rare_vs_common_draw_ratio"] is None
    assert (out(tmp, "rm") / "split.json").is_file() and (out(tmp, "dvclive") / "metrics.json").is_file()
    assert out(tmp, "predictions.jsonl").is_file()


W = r"^pref_rm: error: .*w\.npy"
CASES += [
    Case("rm-empty-buckets-are-null", "pref_rm", pref_rm(), check=_rm_empty_buckets, slow=True),
    Case("rm-nan-weight", "pref_rm", pref_rm(weights=np.array([0.25, np.nan, 0.25, 0.5])),
         rf"{W}: field 'density_weights': weights must be finite and non-negative$"),
    Case("rm-negative-weight", "pref_rm", pref_rm(weights=np.array([0.5, -0.25, 0.25, 0.5])),
         rf"{W}: field 'density_weights': weights must be finite and non-negative$", slow=True),
    Case("rm-weights-ids-mismatch", "pref_rm", pref_rm(weights=np.full(3, 1 / 3)),
         rf"{W}: field 'density_weights': 3 weights vs 4 ids in .*ids\.json$", slow=True),
    Case("rm-stale-weights", "pref_rm", pref_rm(ids=["0" * 16, "1" * 16, "2" * 16, "3" * 16]),
         rf"{W}: field 'prefix_id': 4 prefix ids of pairs have no weight \(first: \w+\); rerun pref_density$"),
    Case("rm-pair-last-assistant", "pref_rm", pref_rm(pairs=jl({**_pref_pair(0, "q"), "prefix": {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}})),
         r"^pref_rm: error: .*pairs\.jsonl, line 1: field 'prefix.messages': last prefix message must be "
         r"from the user$", slow=True),
    Case("rm-heldout-nan", "pref_rm", pref_rm(heldout="nan"),
         r"^pref_rm: error: Invalid value for '--heldout-fraction' .*'nan' is not a finite number.$", slow=True),
    Case("rm-quantile-too-big", "pref_rm", pref_rm(quantile="0.9"),
         r"^pref_rm: error: Invalid value for '--bucket-quantile' .*0.9 is not in the range 0<x<=0.5.$", slow=True),
]


# ------------------------------------------------------------------ reason_generate

def reason_generate(problems, backend="hf"):
    def build(tmp, model):
        return ["--model", model, "--problems", put(tmp, "problems.jsonl", problems), "--out",
                out(tmp, "samples.jsonl"), "--metrics", out(tmp, "m.json"), "--cache-dir", out(tmp, "cache"),
                "--n-samples", 1,
                "--temperature", 0.8, "--top-p", 0.95, "--max-new-tokens", 4, "--batch-size", 1,
                "--seed", 0, "--backend", backend, "--llamacpp-weights", "bf16", "--threads", 1]
    return build


G = r"^reason_generate: error: .*problems\.jsonl, line"
MATH_P = {"id": "m1", "domain": "math", "source": "s", "problem": "1+1?", "answer": "2"}
CASES += [
    Case("generate-bad-domain", "reason_generate", reason_generate(jl(MATH_P, {**MATH_P, "domain": "bio"})),
         rf"{G} 2: field 'domain': domain must be math or code, got 'bio'$"),
    Case("generate-code-without-tests", "reason_generate", reason_generate(jl(
        {**MATH_P, "domain": "code", "prompt": "def f():", "entry_point": "f"})),
         rf"{G} 1: field 'tests': missing$"),
    Case("generate-malformed-line", "reason_generate", reason_generate(jl(MATH_P) + "{oops}\n"),
         rf"{G} 2: malformed JSON: Expecting property name enclosed in double quotes \(column 2\)$"),
    # the tiny random policy was not made from a GGUF: llama.cpp cannot run it
    Case("generate-llamacpp-without-gguf", "reason_generate", reason_generate(jl(MATH_P), backend="llamacpp"),
         r"^reason_generate: error: .*policy: the llamacpp backend runs GGUF models, .* or use the hf backend$"),
    Case("generate-vllm-not-installed", "reason_generate", reason_generate(jl(MATH_P), backend="vllm"),
         r"^reason_generate: error: reason.backend: vllm needs vllm, which is not installed: on a GPU machine "
         r"`pip install vllm` \(see README, Running at scale\)$"),
]


# ------------------------------------------------------------------ the runner

def run_stage(stage: str, args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("POSTTRAIN_DEBUG", None)  # the one-line form is what is under test
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_library_refuses_what_the_options_refuse():
    """Click ranges stop these at the command line; the library refuses them too (callers
    that skip the stage script must not get emptied examples or all-"No" labels)."""
    from posttrain.pref.density import density_weights
    from posttrain.rec import alpaca
    from posttrain.rec.tokenization import tokenize_records

    for cutoff in (0, -5):
        with pytest.raises(ValueError, match="cutoff_len must be an integer >= 1"):
            tokenize_records(None, [ALPACA], cutoff_len=cutoff, strategy="left")
    for t in (7.0, float("nan")):
        with pytest.raises(ValueError, match="rating_threshold must be in"):
            alpaca.check_params(history_len=3, rating_threshold=t)
    with pytest.raises(ValueError, match="val_ratio"):
        alpaca.check_split(val_ratio=0.6, test_ratio=0.5)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        density_weights(np.zeros(3), float("nan"), 1.0)
    from posttrain.pref.common import check_split

    with pytest.raises(ValueError, match="heldout_fraction"):
        check_split(heldout_fraction=float("nan"), bucket_quantile=0.25)
    with pytest.raises(ValueError, match="bucket_quantile"):
        check_split(heldout_fraction=0.2, bucket_quantile=0.9)


def test_corpus_is_broad():
    stages = {c.stage for c in CASES}
    assert stages == {"rec_prepare", "pref_download", "reason_collect", "pref_prefixes", "pref_density",
                      "reason_format", "rec_tokenize", "pref_rm", "reason_generate"}
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.error is None for c in CASES) >= 6  # counted skips / accepted-correctly cases


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.slow else c for c in CASES],
                         ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, request):
    if "shared" in case.needs and not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    model = request.getfixturevalue("tiny_model_dir") if case.stage in MODEL_STAGES else None
    args = case.build(tmp_path, model)
    res = run_stage(case.stage, args, tmp_path)
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*") if p.is_file()) \
        if (tmp_path / "out").exists() else []
    if case.error is None:
        assert res.returncode == 0, res.stderr[-3000:]
        case.check(tmp_path)
        return
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert lines, "no error line on stderr"
    assert re.search(case.error, lines[-1]), f"last line: {lines[-1]!r}"
    assert written == [], f"outputs left behind: {written}"
