"""The llama.cpp engine on the real SmolLM2 GGUF asset (135M, 4-bit: samples in milliseconds).

What it must keep from the transformers path: the same token ids and end of turn, seeded
per-row sampling, byte-identical reruns, and a cache that only generates what is missing
(whole groups of sample indices, since a llama.cpp row may depend on the rows decoded with it).
"""

import json

import pytest
from click.testing import CliRunner

from posttrain.core import assets
from posttrain.core.generation import GenerationCache, Row, Sampling, generate_rows
from posttrain.core.io import read_jsonl, write_jsonl

pytest.importorskip("llama_cpp", reason="llama-cpp-python (requirements-llamacpp.txt) is not installed")

from posttrain.core.llamacpp import LlamaCppEngine, gguf_of, runs_here, system_info  # noqa: E402
from posttrain.reason.generation import SamplingConfig, generate  # noqa: E402

ASSET = "smollm2-135m-instruct"
MATH = {"id": "gsm8k-test/0000", "domain": "math", "source": "gsm8k-test",
        "problem": "Janet has 3 apples and buys 2 more. How many apples does she have?", "answer": "5"}
PROBLEMS = [MATH, {**MATH, "id": "gsm8k-test/0001", "problem": "What is 2 + 2?", "answer": "4"},
            {**MATH, "id": "gsm8k-test/0002", "problem": "A train travels 60 km in 1.5 hours. Its speed?",
             "answer": "40"}]


def cfg_of(**kw) -> SamplingConfig:
    return SamplingConfig(**{**dict(n_samples=4, temperature=0.8, top_p=0.95, max_new_tokens=12,
                                    batch_size=4, seed=0), **kw})


_RUNS: dict[str, str | None] = {}


def needs(weights: str) -> None:
    """Skip, with the reason, where this CPU's build cannot decode `weights` (probed in a child
    process, so a crashing kernel ends the probe, not the test run)."""
    if weights not in _RUNS:
        _RUNS[weights] = runs_here(gguf_of(ASSET), weights)
    if _RUNS[weights]:
        pytest.skip(_RUNS[weights])


@pytest.fixture(scope="module")
def engine(tokenizer):
    needs("bf16")
    e = LlamaCppEngine(gguf_of(ASSET), tokenizer, threads=1, weights="bf16")
    yield e
    e.close()


def test_gguf_of_asset_folder_and_refusal(tmp_path, tiny_model_dir):
    path = gguf_of(ASSET)
    assert path.suffix == ".gguf" and path == assets.resolve(ASSET)
    assert gguf_of(str(path)) == path
    folder = tmp_path / "policy"  # what base_models writes for the default policy
    folder.mkdir()
    (folder / "posttrain_source.json").write_text(json.dumps({"source": ASSET}))
    assert gguf_of(str(folder)) == path
    with pytest.raises(ValueError, match="convert_hf_to_gguf"):
        gguf_of(str(tiny_model_dir))  # made from tiny-random: no GGUF behind it


def test_samples_are_seeded_per_row_and_reproducible(engine):
    cfg = cfg_of()
    a, _ = generate(engine, PROBLEMS, cfg, progress=False)
    b, _ = generate(engine, PROBLEMS, cfg, progress=False)
    c, _ = generate(engine, PROBLEMS, cfg_of(seed=1), progress=False)
    assert a == b
    assert [x["text"] for x in a] != [x["text"] for x in c]
    assert len({x["text"] for x in a[:4]}) > 1, "samples of one problem differ"
    assert all(1 <= x["completion_tokens"] <= 12 for x in a)
    greedy, _ = generate(engine, PROBLEMS[:1], cfg_of(temperature=0), progress=False)
    assert len({x["text"] for x in greedy}) == 1


def test_a_row_depends_on_its_group_only(engine):
    """Groups are fixed (sample indices 0-3, 4-7 for batch size 4), so neither n_samples nor the
    other problems nor their order (which also resizes the context) change a row."""
    ref, _ = generate(engine, PROBLEMS, cfg_of(n_samples=8), progress=False)
    by_id = {r["id"]: r for r in ref}
    for probs, n in ((PROBLEMS[::-1], 8), (PROBLEMS[2:], 5), (PROBLEMS[:1], 2)):
        out, _ = generate(engine, probs, cfg_of(n_samples=n), progress=False)
        assert out == [by_id[r["id"]] for r in out], n


def test_cache_generates_only_missing_groups_and_matches_a_fresh_run(engine, tmp_path):
    fresh, _ = generate(engine, PROBLEMS, cfg_of(n_samples=8), progress=False)
    cache = lambda: GenerationCache(tmp_path, "smollm2")  # noqa: E731
    run = lambda probs, n: generate(engine, probs, cfg_of(n_samples=n), cache=cache(), progress=False)  # noqa: E731
    a, s1 = run(PROBLEMS[:2], 2)   # 2 problems: their group 0 (4 rows each), 2 rows used each
    b, s2 = run(PROBLEMS[:2], 4)   # n_samples 2 -> 4: still group 0, all cached
    c, s3 = run(PROBLEMS[:2], 6)   # -> 6: group 1 of each problem is new
    d, s4 = run(PROBLEMS, 8)       # one more problem: its two groups only
    e, s5 = run(PROBLEMS, 8)
    assert [(s["generated"], s["cache_hits"]) for s in (s1, s2, s3, s4, s5)] == \
        [(8, 0), (0, 8), (8, 8), (8, 16), (0, 24)]
    assert d == e == fresh, "cached rows are byte-identical to a fresh run's"
    # another batch size is another grouping: nothing reused
    _, s6 = generate(engine, PROBLEMS[:1], cfg_of(batch_size=2), cache=cache(), progress=False)
    assert s6["cache_hits"] == 0


def test_the_gguf_vocabulary_and_prompt_ids_are_checked(engine, tokenizer):
    with pytest.raises(ValueError, match="different ids"):
        engine.check_prompt("What is 2 + 2?", (1, 2, 3))
    engine.check_prompt("What is 2 + 2?", tuple(tokenizer("What is 2 + 2?", add_special_tokens=False)["input_ids"]))
    other = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["<extra-token-1>", "<extra-token-2>"])
    with pytest.raises(ValueError, match="not the same model"):
        LlamaCppEngine(gguf_of(ASSET), other, threads=1, weights="bf16")


def test_the_build_states_its_cpu_features_and_leaves_out_amx():
    """The Makefile builds for this CPU less ggml's AMX kernels (their Q4_1 matmul segfaults on
    AMX CPUs, issue 30); on a CPU without AMX this only checks what the build says."""
    info = system_info()
    assert info["llama_cpp"] and "SSE3" in info["cpu_features"], info
    assert not [f for f in info["cpu_features"] if f.startswith("AMX")], info


def test_a_crashing_decode_is_a_reason_not_a_crash(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    why = runs_here(bad, "source")
    assert why and why.startswith("llama.cpp ") and "on this CPU" in why, why


def test_two_engines_of_different_weight_types_decode_in_one_process(tokenizer):
    """Two engines live side by side and take turns decoding (the bench does this for every
    weight type; on AMX CPUs the second one's first decode used to segfault)."""
    needs("q8_0"), needs("f16")
    a = LlamaCppEngine(gguf_of(ASSET), tokenizer, threads=1, weights="q8_0")
    b = LlamaCppEngine(gguf_of(ASSET), tokenizer, threads=1, weights="f16")
    greedy = cfg_of(n_samples=2, batch_size=2, temperature=0, max_new_tokens=6)
    outs = [generate(e, PROBLEMS[:2], greedy, progress=False)[0] for e in (a, b, a, b)]
    assert outs[0] == outs[2] and outs[1] == outs[3], "each engine is unchanged by the other's decoding"
    assert all(r["completion_tokens"] >= 1 for o in outs for r in o)
    assert sum(x["text"].split()[:2] == y["text"].split()[:2] for x, y in zip(outs[0], outs[1])) >= 2
    a.close(), b.close()


def test_weights_as_stored_or_converted_are_the_same_model(engine, tokenizer):
    """The shipped Q4_1 file as stored and converted to bf16 by llama.cpp's quantizer: same
    vocabulary, same greedy start; another weight type is another cache key."""
    needs("source")
    q4 = LlamaCppEngine(gguf_of(ASSET), tokenizer, threads=1, weights="source")
    greedy = cfg_of(n_samples=1, batch_size=1, temperature=0, max_new_tokens=6)
    a, _ = generate(engine, PROBLEMS, greedy, progress=False)
    b, _ = generate(q4, PROBLEMS, greedy, progress=False)
    assert sum(x["text"].split()[:2] == y["text"].split()[:2] for x, y in zip(a, b)) >= 2, (a, b)
    assert engine.key()["weights"] == "bf16" and q4.key()["weights"] == "source"
    assert engine.key()["gguf"] == q4.key()["gguf"]
    q4.close()
    with pytest.raises(ValueError, match="weight type"):
        LlamaCppEngine(gguf_of(ASSET), tokenizer, threads=1, weights="q2")


def test_long_prompts_prefill_in_chunks(engine, tokenizer):
    ids = tuple(tokenizer(" ".join(["word"] * 1300), add_special_tokens=False)["input_ids"])
    assert len(ids) > 1024  # three prefill chunks of 512
    rows = [Row("long", ids, i) for i in range(2)]
    out, stats = generate_rows(engine, rows, Sampling(temperature=0.0, top_p=1.0, max_new_tokens=4, seed=0),
                               batch_size=2)
    assert stats["generated"] == 2 and out[0] == out[1] and out[0]["completion_tokens"] >= 1


def test_stage_runs_the_llamacpp_backend_with_a_cache(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "stages" / "reason_generate.py"
    spec = importlib.util.spec_from_file_location("reason_generate_stage", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    write_jsonl(tmp_path / "problems.jsonl", PROBLEMS[:2])
    args = ["--model", ASSET, "--problems", str(tmp_path / "problems.jsonl"), "--out", str(tmp_path / "s.jsonl"),
            "--metrics", str(tmp_path / "m.json"), "--cache-dir", str(tmp_path / "cache"), "--n-samples", "2",
            "--temperature", "0.8", "--top-p", "0.95", "--max-new-tokens", "8", "--batch-size", "2",
            "--seed", "0", "--backend", "llamacpp", "--llamacpp-weights", "bf16", "--threads", "1", "--no-progress"]
    first = None
    for generated in (4, 0):
        res = CliRunner().invoke(mod.main, args)
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / "m.json").read_text())["cache"] == {"generated": generated,
                                                                          "cache_hits": 4 - generated}
        first = first or (tmp_path / "s.jsonl").read_bytes()
        assert (tmp_path / "s.jsonl").read_bytes() == first
    assert [r["id"] for r in read_jsonl(tmp_path / "s.jsonl")] == [
        "gsm8k-test/0000/0", "gsm8k-test/0000/1", "gsm8k-test/0001/0", "gsm8k-test/0001/1"]


@pytest.mark.slow  # dequantizes the GGUF into a transformers model (~30 s)
def test_llamacpp_runs_the_same_model_as_transformers(tokenizer):
    """Same weights (the transformers model is the GGUF dequantized, llama.cpp runs them as bf16):
    greedy decoding writes the same text (measured: all 3 identical over 64 tokens; a near-tie
    may flip one in another engine version, hence 2 of 3)."""
    import torch

    from posttrain.core.generation import HFEngine
    from posttrain.core.models import load_source

    model, tok = load_source(ASSET)
    hf, cpp = HFEngine(model, tok), LlamaCppEngine(gguf_of(ASSET), tok, threads=1, weights="bf16")
    greedy = SamplingConfig(n_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=32, batch_size=1, seed=0)
    with torch.no_grad():
        a, _ = generate(hf, PROBLEMS, greedy, progress=False)
    b, _ = generate(cpp, PROBLEMS, greedy, progress=False)
    assert all(x["text"].split()[:3] == y["text"].split()[:3] for x, y in zip(a, b)), (a, b)
    assert sum(x == y for x, y in zip(a, b)) >= 2, (a, b)
