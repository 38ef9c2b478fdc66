"""reason_generate: prompts through the chat template, batched sampling with the tiny model."""

import json

import pytest
from click.testing import CliRunner

from posttrain.reason import prompts
from posttrain.core.generation import HFEngine
from posttrain.reason.generation import SamplingConfig, generate, load_model, open_cache, summarize
from posttrain.core.io import read_jsonl, write_jsonl

MATH = {"id": "gsm8k-test/0000", "domain": "math", "source": "gsm8k-test",
        "problem": "Janet has 3 apples and buys 2 more. How many apples does she have?", "answer": "5"}
CODE = {"id": "humaneval/0053", "domain": "code", "source": "humaneval", "answer": "",
        "problem": "\n\ndef add(x: int, y: int):\n    \"\"\"Add two numbers x and y\"\"\"\n",
        "prompt": "\n\ndef add(x: int, y: int):\n    \"\"\"Add two numbers x and y\"\"\"\n",
        "entry_point": "add", "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"}
STDIN = {"id": "apps/0001", "domain": "code", "source": "apps", "answer": "", "problem": "Print the sum.",
         "prompt": "Print the sum.", "entry_point": "", "tests": [{"input": "1 2\n", "output": "3\n"}]}
PROBLEMS = [MATH, CODE, {**MATH, "id": "gsm8k-test/0001", "problem": "What is 2 + 2?", "answer": "4"}]



def cfg_of(**kw) -> SamplingConfig:
    """A SamplingConfig: reason.* values of params.yaml except where a test sets one."""
    return SamplingConfig(**{**dict(n_samples=4, temperature=0.8, top_p=0.95, max_new_tokens=160,
                                    batch_size=8, seed=0), **kw})

def test_domain_prompts(tokenizer):
    m = prompts.messages(MATH)
    assert m[-1]["role"] == "user" and "\\boxed{}" in m[-1]["content"] and "step by step" in m[-1]["content"]
    assert MATH["problem"] in m[-1]["content"]
    c = prompts.user_message(CODE)
    assert "`add`" in c and "```python" in c and "def add(x: int, y: int):" in c
    s = prompts.user_message(STDIN)
    assert "standard input" in s and "```python" in s
    text = prompts.render(tokenizer, MATH)
    assert text.startswith("<|im_start|>system\n" + prompts.MATH_SYSTEM)
    assert text.endswith("<|im_start|>assistant\n")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is too small to gain from intra-op threads; on a shared CPU they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFEngine(*load_model(tiny_model_dir))


def test_generate_shapes_and_token_counts(tiny):
    engine, tok = tiny, tiny.tokenizer
    assert tok.padding_side == "left"
    cfg = cfg_of(n_samples=3, max_new_tokens=6, batch_size=4, seed=1)
    out, _ = generate(engine, PROBLEMS, cfg, progress=False)
    assert len(out) == 9
    assert [o["id"] for o in out[:3]] == ["gsm8k-test/0000/0", "gsm8k-test/0000/1", "gsm8k-test/0000/2"]
    for o in out:
        assert set(o) == {"id", "problem_id", "sample_idx", "domain", "source", "text",
                          "prompt_tokens", "completion_tokens"}
        assert 1 <= o["completion_tokens"] <= 6
    by_pid = {p["id"]: p for p in PROBLEMS}
    for o in out:
        rendered = prompts.render(tok, by_pid[o["problem_id"]])
        assert o["prompt_tokens"] == len(tok(rendered, add_special_tokens=False)["input_ids"])
        assert o["domain"] == by_pid[o["problem_id"]]["domain"]
    # output follows the input problem order, whatever order the batches ran in
    assert [o["problem_id"] for o in out][::3] == [p["id"] for p in PROBLEMS]
    s = summarize(out)
    assert s["n_samples"] == 9 and s["n_problems"] == 3 and s["samples_by_domain"] == {"math": 6, "code": 3}
    assert s["completion_tokens"] == sum(o["completion_tokens"] for o in out)


def test_generate_is_deterministic_for_a_seed(tiny):
    engine, tok = tiny, tiny.tokenizer
    cfg = cfg_of(n_samples=2, max_new_tokens=5, batch_size=3, seed=7)
    a, _ = generate(engine, PROBLEMS, cfg, progress=False)
    b, _ = generate(engine, PROBLEMS, cfg, progress=False)
    c, _ = generate(engine, PROBLEMS, cfg_of(n_samples=2, max_new_tokens=5, batch_size=3, seed=8),
                    progress=False)
    assert a == b
    assert [x["text"] for x in a] != [x["text"] for x in c]
    # samples of one problem differ from each other (they are samples, not copies)
    assert a[0]["text"] != a[1]["text"]


def test_greedy_samples_are_identical(tiny):
    engine, tok = tiny, tiny.tokenizer
    out, _ = generate(engine, PROBLEMS[:2], cfg_of(n_samples=2, temperature=0, max_new_tokens=4,
                                                       batch_size=4), progress=False)
    assert out[0]["text"] == out[1]["text"] and out[2]["text"] == out[3]["text"]
    assert out[0]["completion_tokens"] == out[1]["completion_tokens"]


def test_a_sample_does_not_depend_on_the_batch_or_the_other_rows(tiny):
    """Per-row RNG and unpadded one-prompt batches: batch size, n_samples and the problem set
    leave every (problem, sample index) row's tokens unchanged."""
    engine, tok = tiny, tiny.tokenizer
    kw = dict(max_new_tokens=12, seed=3)
    ref, _ = generate(engine, PROBLEMS, cfg_of(n_samples=4, batch_size=8, **kw), progress=False)
    by_id = {r["id"]: r for r in ref}
    for probs, n, bs in ((PROBLEMS, 4, 1), (PROBLEMS, 4, 3), (PROBLEMS[1:], 2, 8), (PROBLEMS[::-1], 3, 2)):
        out, _ = generate(engine, probs, cfg_of(n_samples=n, batch_size=bs, **kw), progress=False)
        assert out == [by_id[r["id"]] for r in out], (n, bs)
    assert len({r["text"] for r in ref}) > len(PROBLEMS), "samples of a problem differ"


def test_cache_generates_only_missing_rows_and_matches_a_fresh_run(tiny, tiny_model_dir, tmp_path):
    engine, tok = tiny, tiny.tokenizer
    cache = tmp_path / "cache"
    kw = dict(max_new_tokens=10, batch_size=4, seed=5)
    fresh, s0 = generate(engine, PROBLEMS, cfg_of(n_samples=4, **kw), progress=False)
    assert s0 == {"rows": 12, "generated": 12, "cache_hits": 0,
                  "generated_tokens": sum(r["completion_tokens"] for r in fresh)}
    run = lambda probs, n: generate(engine, probs, cfg_of(n_samples=n, **kw), cache=open_cache(cache, tiny_model_dir),
                                    progress=False)
    a, s1 = run(PROBLEMS[:2], 2)                # 2 problems x 2 samples: all new
    b, s2 = run(PROBLEMS[:2], 4)                # n_samples 2 -> 4: only samples 2 and 3 are new
    c, s3 = run(PROBLEMS, 4)                    # one more problem: only its 4 rows are new
    d, s4 = run(PROBLEMS, 4)                    # nothing new
    assert [(s["generated"], s["cache_hits"]) for s in (s1, s2, s3, s4)] == [(4, 0), (4, 4), (4, 8), (0, 12)]
    assert c == d == fresh, "cached rows are byte-identical to a fresh run's"
    assert b == [r for r in fresh if r["problem_id"] in {p["id"] for p in PROBLEMS[:2]}]
    # another seed, max_new_tokens or model never reuses a row
    _, s5 = generate(engine, PROBLEMS[:1], cfg_of(n_samples=4, **{**kw, "seed": 6}), cache=open_cache(cache, tiny_model_dir),
                     progress=False)
    _, s6 = generate(engine, PROBLEMS[:1], cfg_of(n_samples=4, **{**kw, "max_new_tokens": 9}),
                     cache=open_cache(cache, tiny_model_dir), progress=False)
    _, s7 = generate(engine, PROBLEMS[:1], cfg_of(n_samples=4, **kw), cache=open_cache(cache, tmp_path),
                     progress=False)
    assert s5["cache_hits"] == s6["cache_hits"] == s7["cache_hits"] == 0


def test_cache_survives_a_corrupt_shard(tiny, tiny_model_dir, tmp_path):
    from posttrain.core.generation import GenerationCache
    from posttrain.core.fingerprint import model_key

    engine, tok = tiny, tiny.tokenizer
    run = lambda: generate(engine, PROBLEMS[:1], cfg_of(n_samples=2, max_new_tokens=4), cache=open_cache(tmp_path, tiny_model_dir),
                           progress=False)
    a, _ = run()
    shard = next((tmp_path / model_key(str(tiny_model_dir))).glob("*.jsonl"))
    lines = shard.read_text().splitlines()
    shard.write_text(lines[0] + "\n" + lines[1][:20] + "\n")  # a torn last line
    assert len(GenerationCache(tmp_path, model_key(str(tiny_model_dir)))) == 1
    b, s = run()
    assert b == a and (s["generated"], s["cache_hits"]) == (1, 1)


def test_sampling_config_validation():
    with pytest.raises(ValueError):
        cfg_of(n_samples=0)
    with pytest.raises(ValueError):
        cfg_of(top_p=0)


def _stage_main(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "stages" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_stage", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _stage():
    return _stage_main("reason_generate")


def test_generate_stage_writes_samples_and_metrics(tmp_path, tiny_model_dir):
    probs = tmp_path / "problems.jsonl"
    write_jsonl(probs, PROBLEMS[:2])
    out, met = tmp_path / "samples.jsonl", tmp_path / "m.json"
    args = ["--model", str(tiny_model_dir), "--problems", str(probs), "--out", str(out), "--metrics", str(met),
            "--n-samples", "2", "--temperature", "0.8", "--top-p", "0.95", "--max-new-tokens", "4",
            "--batch-size", "4", "--seed", "0", "--backend", "hf", "--llamacpp-weights", "f16", "--threads", "0",
            "--no-progress"]
    res = CliRunner().invoke(_stage(), args)
    assert res.exit_code == 0, res.output
    first = out.read_bytes()
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["gsm8k-test/0000/0", "gsm8k-test/0000/1", "humaneval/0053/0",
                                       "humaneval/0053/1"]
    m = json.loads(met.read_text())
    assert m["n_samples"] == 4 and m["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert m["cache"] == {"generated": 4, "cache_hits": 0}
    assert CliRunner().invoke(_stage(), args).exit_code == 0
    assert out.read_bytes() == first
    # with a cache: the first run fills it, the second generates nothing, same bytes
    cached = args + ["--cache-dir", str(tmp_path / "cache")]
    for generated in (4, 0):
        res = CliRunner().invoke(_stage(), cached)
        assert res.exit_code == 0, res.output
        assert out.read_bytes() == first
        assert json.loads(met.read_text())["cache"] == {"generated": generated, "cache_hits": 4 - generated}


def _deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_tiny_profile_collect_then_generate(tmp_path, tiny_model_dir):
    """The reason group of profiles/tiny.yaml drives collect -> generate as dvc.yaml wires them."""
    import yaml
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    params = _deep_merge(yaml.safe_load((repo / "params.yaml").read_text()),
                         yaml.safe_load((repo / "profiles/tiny.yaml").read_text()))
    r = params["reason"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    collect = _stage_main("reason_collect")
    res = CliRunner().invoke(collect, ["--params-file", str(tmp_path / "params.yaml"), "--sample", str(r["sample"]),
                                       "--seed", str(r["seed"]), "--out", str(tmp_path / "problems.jsonl"),
                                       "--metrics", str(tmp_path / "mc.json")])
    assert res.exit_code == 0, res.output
    problems = read_jsonl(tmp_path / "problems.jsonl")
    assert len(problems) == r["sample"] and {p["domain"] for p in problems} == {"math", "code"}
    res = CliRunner().invoke(_stage(), [
        "--model", r["model"], "--problems", str(tmp_path / "problems.jsonl"),
        "--out", str(tmp_path / "samples.jsonl"), "--metrics", str(tmp_path / "mg.json"),
        "--n-samples", str(r["n_samples"]), "--temperature", str(r["temperature"]), "--top-p", str(r["top_p"]),
        "--max-new-tokens", str(r["max_new_tokens"]), "--batch-size", str(r["batch_size"]),
        "--seed", str(r["seed"]), "--backend", r["backend"],
        "--llamacpp-weights", r["llamacpp_weights"], "--threads", str(r["threads"]), "--no-progress"])
    assert res.exit_code == 0, res.output
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == r["sample"] * r["n_samples"]
    assert all(s["completion_tokens"] <= r["max_new_tokens"] for s in samples)


def test_greedy_rows_pad_batches_and_cache_them_by_batch(tiny, tiny_model_dir, tmp_path):
    """GRPO's eval path: greedy completions of many prompts in left-padded batches. A row's key
    holds its batch's prompts, so a rerun of the same list is all cache hits and a changed
    prompt regenerates its own batch only; at batch size 1 it equals the exact per-row path."""
    from posttrain.core.generation import GenerationCache, Row, Sampling, generate_rows, greedy_rows

    tok = tiny.tokenizer
    texts = [prompts.render(tok, {**MATH, "problem": f"What is {i} + {i}?"}) for i in range(5)]
    rows = [Row(t, tuple(tok(t, add_special_tokens=False)["input_ids"])) for t in texts]
    cache = lambda: GenerationCache(tmp_path, "tiny")  # noqa: E731
    a, s1 = greedy_rows(tiny, rows, max_new_tokens=6, batch_size=2, cache=cache())
    b, s2 = greedy_rows(tiny, rows, max_new_tokens=6, batch_size=2, cache=cache())
    assert (s1["generated"], s2["generated"], s2["cache_hits"]) == (5, 0, 5) and a == b
    changed = rows[:3] + [Row(texts[0] + " ", rows[0].prompt_ids + (220,))] + rows[4:]
    c, s3 = greedy_rows(tiny, changed, max_new_tokens=6, batch_size=2, cache=cache())
    assert s3["generated"] == 2 and c[:2] == a[:2] and c[4] == a[4]  # batch [2, 3] changed
    one, _ = greedy_rows(tiny, rows, max_new_tokens=6, batch_size=1)
    exact, _ = generate_rows(tiny, rows, Sampling(temperature=0.0, top_p=1.0, max_new_tokens=6, seed=0),
                             batch_size=1)
    assert one == exact
    assert all(1 <= o["completion_tokens"] <= 6 for o in a)
