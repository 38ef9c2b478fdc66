"""vLLM: the generation engine for GPU machines (`reason.backend: vllm`; GRPO's rollouts go
through trl's own `use_vllm`). An optional extra: `pip install vllm` on a CUDA machine. It is
not installed on the CPU machines this project is tested on, so only the import guard and the
requests this module builds are tested here (with a stand-in module).

Each row is one request with its own seed (vLLM's per-request generator), so samples do not
share an RNG stream. vLLM batches requests dynamically and its kernels are not batch-invariant,
so like llama.cpp it runs whole groups of sample indices (`posttrain.core.generation`).
"""

from __future__ import annotations

import importlib.util

from posttrain.core.settings import NotInstalled


def require_vllm(what: str) -> None:
    """A clear error, before any model loads, when vllm is asked for but not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise NotInstalled(f"{what} needs vllm, which is not installed: on a GPU machine `pip install vllm` "
                          "(see README, Running at scale)")


class VLLMEngine:
    name = "vllm"
    exact_rows = False

    def __init__(self, model_ref: str, tokenizer, *, seed: int):
        require_vllm("reason.backend: vllm")
        import vllm

        self._vllm = vllm
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=str(model_ref), seed=seed)

    def key(self) -> dict:
        return {"backend": self.name, "vllm": self._vllm.__version__}

    def sample(self, prompt_ids: tuple[int, ...], seeds: list[int], sampling, eos_ids: set[int]) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, top_k=-1,
                                 max_tokens=sampling.max_new_tokens, seed=seed, stop_token_ids=sorted(eos_ids),
                                 skip_special_tokens=False)
                  for seed in seeds]
        prompts = [TokensPrompt(prompt_token_ids=list(prompt_ids)) for _ in seeds]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
