"""vLLM is a GPU-only extra: here only its import guard and the requests we build are tested,
against a stand-in `vllm` module that records them (the real engine is not installed)."""

import importlib.util
import sys
import types

import pytest

from posttrain.core.generation import Row, Sampling, generate_rows


@pytest.fixture()
def fake_vllm(monkeypatch):
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, model, seed):
            calls["llm"] = {"model": model, "seed": seed}

        def generate(self, prompts, params, use_tqdm):
            calls.setdefault("generate", []).append((prompts, [p.kw for p in params]))
            # each row answers its seed's last digit, then end of turn (id 2)
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[p.kw["seed"] % 7 + 10, 2, 99])])
                    for p in params]

    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-test"
    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    return calls


def test_each_row_is_one_request_with_its_own_seed(fake_vllm, tokenizer):
    from posttrain.core.vllm_engine import VLLMEngine

    engine = VLLMEngine("some/model", tokenizer, seed=3)
    assert fake_vllm["llm"] == {"model": "some/model", "seed": 3}
    rows = [Row("p", (5, 6, 7), i) for i in range(3)]
    sampling = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=5, seed=1)
    out, stats = generate_rows(engine, rows, sampling, batch_size=4)
    (prompts, params), = fake_vllm["generate"]  # one group of 4 sample indices, one call
    assert prompts == [{"prompt_token_ids": [5, 6, 7]}] * 4
    assert len({p["seed"] for p in params}) == 4
    assert all(p["temperature"] == 0.7 and p["top_p"] == 0.9 and p["max_tokens"] == 5 and p["top_k"] == -1
               and p["stop_token_ids"] == [tokenizer.eos_token_id] for p in params)
    assert stats["generated"] == 4 and [o["completion_tokens"] for o in out] == [2, 2, 2]  # cut after end of turn


def test_without_vllm_the_backend_is_a_clear_error():
    from posttrain.reason.generation import load_engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match="pip install vllm"):
        load_engine("data/models/policy", "vllm", threads=0, seed=0, llamacpp_weights="f16")
