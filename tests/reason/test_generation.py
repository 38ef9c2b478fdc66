"""reason_generate: prompts through the chat template, batched sampling with the tiny model."""

import json

import pytest
from click.testing import CliRunner

from posttrain.reason import prompts
from posttrain.reason.generation import SamplingConfig, generate, load_model, summarize
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
    return load_model(tiny_model_dir)


def test_generate_shapes_and_token_counts(tiny):
    model, tok = tiny
    assert tok.padding_side == "left"
    cfg = cfg_of(n_samples=3, max_new_tokens=6, batch_size=4, seed=1)
    out = generate(model, tok, PROBLEMS, cfg, progress=False)
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
    # output follows the input problem order, whatever the length-sorted batching did
    assert [o["problem_id"] for o in out][::3] == [p["id"] for p in PROBLEMS]
    s = summarize(out)
    assert s["n_samples"] == 9 and s["n_problems"] == 3 and s["samples_by_domain"] == {"math": 6, "code": 3}
    assert s["completion_tokens"] == sum(o["completion_tokens"] for o in out)


def test_generate_is_deterministic_for_a_seed(tiny):
    model, tok = tiny
    cfg = cfg_of(n_samples=2, max_new_tokens=5, batch_size=3, seed=7)
    a = generate(model, tok, PROBLEMS, cfg, progress=False)
    b = generate(model, tok, PROBLEMS, cfg, progress=False)
    c = generate(model, tok, PROBLEMS, cfg_of(n_samples=2, max_new_tokens=5, batch_size=3, seed=8),
                 progress=False)
    assert a == b
    assert [x["text"] for x in a] != [x["text"] for x in c]
    # samples of one problem differ from each other (they are samples, not copies)
    assert a[0]["text"] != a[1]["text"]


def test_greedy_samples_are_identical(tiny):
    model, tok = tiny
    out = generate(model, tok, PROBLEMS[:2], cfg_of(n_samples=2, temperature=0, max_new_tokens=4,
                                                            batch_size=4), progress=False)
    assert out[0]["text"] == out[1]["text"] and out[2]["text"] == out[3]["text"]
    assert out[0]["completion_tokens"] == out[1]["completion_tokens"]


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
            "--batch-size", "4", "--seed", "0", "--threads", "0", "--no-progress"]
    res = CliRunner().invoke(_stage(), args)
    assert res.exit_code == 0, res.output
    first = out.read_bytes()
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["gsm8k-test/0000/0", "gsm8k-test/0000/1", "humaneval/0053/0",
                                       "humaneval/0053/1"]
    m = json.loads(met.read_text())
    assert m["n_samples"] == 4 and m["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert CliRunner().invoke(_stage(), args).exit_code == 0
    assert out.read_bytes() == first


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
        "--model", str(tiny_model_dir), "--problems", str(tmp_path / "problems.jsonl"),
        "--out", str(tmp_path / "samples.jsonl"), "--metrics", str(tmp_path / "mg.json"),
        "--n-samples", str(r["n_samples"]), "--temperature", str(r["temperature"]), "--top-p", str(r["top_p"]),
        "--max-new-tokens", str(r["max_new_tokens"]), "--batch-size", str(r["batch_size"]),
        "--seed", str(r["seed"]), "--threads", str(r["threads"]), "--no-progress"])
    assert res.exit_code == 0, res.output
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == r["sample"] * r["n_samples"]
    assert all(s["completion_tokens"] <= r["max_new_tokens"] for s in samples)
