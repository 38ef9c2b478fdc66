"""llama.cpp as a generation engine: the policy's GGUF file, sampled through llama-cpp-python.

On this 2-core CPU it samples ~3x as many tokens per second as transformers at batch 8
(`python bench/generate.py`): the samples of one prompt decode together, sharing the
prompt's KV cells, through llama.cpp's CPU kernels. The GGUF's weights can first be
converted by llama.cpp's own quantizer (`llama_model_quantize`, under a second for 135M
parameters): the default policy ships as Q4_1, whose batched matmul is slower here than the
16-bit types' (bench: bf16 ~1.5x Q4_1 at batch 8 on this AVX512-BF16 CPU), and bf16 holds
the Q4_1 values, i.e. the fp32 weights transformers runs, to bf16 rounding (2^-9 relative;
f16: 2^-11). Greedy decoding matched transformers token for token on the test prompts with
every type (`reason.llamacpp_weights`; `source` runs the file as it is).

Sampling semantics are transformers': temperature, then top-p (keeping at least one token),
then a draw from the full vocabulary, each row with its own RNG (`llama_sampler_init_dist`,
seeded per row). Token ids are the transformers tokenizer's (the GGUF's vocabulary; checked
on load), and a row ends at the tokenizer's end-of-turn ids, as on the transformers path.

What a row depends on differs from the transformers path: llama.cpp's attention kernels split
work by KV length and thread, so a row's last bits can depend on the other rows decoded with
it. `posttrain.core.generation` therefore runs this engine on whole groups of sample indices
(0..B-1, B..2B-1, ...) and keys the cache by the group size: a row is a deterministic function
of (GGUF bytes, weight type, prompt, sampling, seed, sample index, group size, threads,
llama-cpp-python version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from posttrain.core import assets

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements-llamacpp.txt"  # the pinned engine: a dep of every stage that imports this
SOURCE_FILE = "posttrain_source.json"  # written by base_models: what the folder was made from
WEIGHTS = ("source", "f16", "bf16", "q8_0", "f32")  # what the GGUF's weights run as


def gguf_of(ref: str) -> Path:
    """The GGUF file that `ref` runs as: a .gguf path or asset name, or a `base_models` folder
    made from one (its posttrain_source.json names the source). The folder's weights are that
    file's weights, dequantized; llama.cpp runs them in their stored 4-bit form."""
    src = assets.resolve(str(ref))
    if isinstance(src, Path) and src.suffix == ".gguf" and src.is_file():
        return src
    meta = src / SOURCE_FILE if isinstance(src, Path) and src.is_dir() else None
    if meta is not None and meta.is_file():
        source = json.loads(meta.read_text(encoding="utf-8")).get("source")
        if source:
            origin = assets.resolve(str(source))
            if isinstance(origin, Path) and origin.suffix == ".gguf" and origin.is_file():
                return origin
    raise ValueError(
        f"{ref}: the llamacpp backend runs GGUF models, and this is not one nor a base_models folder made "
        "from one. Convert it with llama.cpp's convert_hf_to_gguf.py and pass the .gguf file as the "
        "model, or use the hf backend")


def system_info() -> dict:
    """What the built engine runs on: its version and the ggml CPU features compiled in, from
    llama.cpp's own system info (`CPU : SSE3 = 1 | AVX512_BF16 = 1 | ...`). Recorded beside the
    samples, since a build's kernels decide which weight types run and how fast."""
    import llama_cpp

    text = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    features = sorted({part.split("=")[0].strip() for part in text.replace("CPU :", "|").split("|")
                       if "=" in part and part.split("=")[1].strip() == "1"})
    return {"llama_cpp": llama_cpp.__version__, "cpu_features": features}


def runs_here(gguf: Path, weights: str, timeout: float = 120.0) -> str | None:
    """None if this build of llama.cpp loads `gguf` as `weights` and decodes with it on this CPU;
    else why not, in one line. It runs in a child process, since a kernel that crashes (ggml's
    AMX Q4_1 matmul did, issue 30) takes its process with it: tests and benches skip a weight
    type with this reason instead of dying."""
    import signal
    import subprocess
    import sys

    code = ("import sys, types; from posttrain.core.llamacpp import LlamaCppEngine\n"
            "e = LlamaCppEngine(sys.argv[1], None, threads=1, weights=sys.argv[2])\n"
            "e.sample((1, 2, 3, 4), [0, 1], types.SimpleNamespace(temperature=0.8, top_p=0.95, max_new_tokens=4), set())\n")
    try:
        res = subprocess.run([sys.executable, "-c", code, str(gguf), weights], capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"llama.cpp did not decode {weights} weights within {timeout:.0f} s on this CPU"
    if res.returncode == 0:
        return None
    how = (f"died of {signal.Signals(-res.returncode).name}" if res.returncode < 0
           else f"failed ({(res.stderr.strip().splitlines() or ['exit ' + str(res.returncode)])[-1]})")
    return (f"llama.cpp {how} decoding {weights} weights on this CPU; its build has "
            f"{' '.join(system_info()['cpu_features'])}")


def _quiet() -> None:
    # llama.cpp logs every tensor and kernel at load; keep its errors only.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


class LlamaCppEngine:
    """Samples rows of one prompt together (see the module docstring). `tokenizer` is the
    transformers tokenizer of the same model: it renders prompts and decodes completions."""

    name = "llamacpp"
    exact_rows = False  # a row depends on its group: generation runs whole groups

    def __init__(self, gguf: Path, tokenizer, *, threads: int, weights: str):
        try:
            import llama_cpp
        except ImportError as e:
            raise ImportError(f"the llamacpp backend needs llama-cpp-python: pip install -r {REQUIREMENTS_FILE}") from e
        if weights not in WEIGHTS:
            raise ValueError(f"unknown llama.cpp weight type {weights!r}; use one of {', '.join(WEIGHTS)}")
        _quiet()
        self._ll = llama_cpp
        self.gguf = Path(gguf)
        self.weights = weights
        self.tokenizer = tokenizer
        self.threads = threads or os.cpu_count() or 1
        self._model = None
        llama_cpp.llama_backend_init()
        with tempfile.TemporaryDirectory(prefix="posttrain-gguf-") as tmp:
            path = self.gguf if weights == "source" else self._convert(Path(tmp) / f"model.{weights}.gguf")
            self._model = llama_cpp.llama_model_load_from_file(str(path).encode(),
                                                               llama_cpp.llama_model_default_params())
        if not self._model:
            raise ValueError(f"{self.gguf}: llama.cpp could not load this GGUF file")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._ctx = None
        self._ctx_size = (0, 0)
        self._gguf_hash = None
        self._batch = None
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        if tokenizer is not None and n_vocab != len(tokenizer):  # None: a probe (runs_here)
            raise ValueError(f"{self.gguf}: {n_vocab} tokens in the GGUF vocabulary, {len(tokenizer)} in the "
                             "tokenizer: they are not the same model")

    def _convert(self, out: Path) -> Path:
        """The GGUF with its weights as `self.weights`, by llama.cpp's quantizer (loaded into
        memory right after, so the file can go)."""
        import ctypes

        ll = self._ll
        p = ll.llama_model_quantize_default_params()
        p.ftype = {"f32": ll.LLAMA_FTYPE_ALL_F32, "f16": ll.LLAMA_FTYPE_MOSTLY_F16,
                   "bf16": ll.LLAMA_FTYPE_MOSTLY_BF16, "q8_0": ll.LLAMA_FTYPE_MOSTLY_Q8_0}[self.weights]
        p.allow_requantize = True  # the source may be quantized already (the default is Q4_1)
        p.nthread = self.threads
        if ll.llama_model_quantize(str(self.gguf).encode(), str(out).encode(), ctypes.byref(p)) != 0:
            raise ValueError(f"{self.gguf}: llama.cpp could not convert its weights to {self.weights}")
        return out

    def key(self) -> dict:
        """What besides the row itself decides its tokens (goes into the cache key): the GGUF's
        bytes too, since the cache is keyed by the model folder it was made from."""
        if self._gguf_hash is None:
            h = hashlib.sha256()
            with open(self.gguf, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            self._gguf_hash = h.hexdigest()[:24]
        return {"backend": self.name, "llama_cpp": self._ll.__version__, "threads": self.threads,
                "gguf": self._gguf_hash, "weights": self.weights}

    def check_prompt(self, text: str, ids: tuple[int, ...]) -> None:
        """The GGUF's own tokenizer must read `text` as the transformers tokenizer did: same model,
        same token ids. A mismatch would sample from the wrong prompt."""
        ll = self._ll
        raw = text.encode("utf-8")
        buf = (ll.llama_token * (len(raw) + 16))()
        n = ll.llama_tokenize(self._vocab, raw, len(raw), buf, len(buf), False, True)
        if list(buf[:max(n, 0)]) != list(ids):
            raise ValueError(f"{self.gguf}: its tokenizer and the transformers tokenizer give different ids "
                             "for the same prompt; the tokenizer folder does not belong to this GGUF")

    def _context(self, n_ctx: int, n_seq: int):
        """A context with room for `n_ctx` KV cells shared by `n_seq` sequences (grown on demand)."""
        ll = self._ll
        have_ctx, have_seq = self._ctx_size
        if self._ctx is not None and have_ctx >= n_ctx and have_seq >= n_seq:
            return self._ctx
        self.close_context()
        n_ctx, n_seq = max(n_ctx, have_ctx), max(n_seq, have_seq)
        p = ll.llama_context_default_params()
        p.n_ctx = -(-n_ctx // 256) * 256
        p.n_batch = p.n_ubatch = 512
        p.n_seq_max = n_seq
        p.kv_unified = True  # one pool of cells: the prompt's cells are shared by its samples
        p.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED  # "auto" leaves it off on CPU; on is ~10% faster here
        p.n_threads = p.n_threads_batch = self.threads
        p.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, p)
        if not self._ctx:
            raise MemoryError(f"llama.cpp could not allocate a context of {p.n_ctx} tokens")
        self._batch = ll.llama_batch_init(max(512, n_seq), 0, n_seq)
        self._ctx_size = (p.n_ctx, n_seq)
        return self._ctx

    def _decode(self, items) -> None:
        """One llama_decode of (token, position, sequence, want logits) items."""
        b = self._batch
        b.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        rc = self._ll.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")

    def _sampler(self, seed: int, temperature: float, top_p: float):
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if temperature == 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(temperature))
        if top_p < 1:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(top_p, 1))
        # 32-bit seed; 0xFFFFFFFF means "random" to llama.cpp, so it is never used
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed % 0xFFFFFFFF))
        return chain

    def sample(self, prompt_ids: tuple[int, ...], seeds: list[int], sampling, eos_ids: set[int]) -> list[list[int]]:
        """len(seeds) completions (token ids, up to and including the end-of-turn token) of one prompt."""
        ll = self._ll
        k, n = len(seeds), len(prompt_ids)
        if n == 0:
            raise ValueError("empty prompt")
        ctx = self._context(n + k * sampling.max_new_tokens + 1, k)
        mem = ll.llama_get_memory(ctx)
        ll.llama_memory_clear(mem, True)
        head = prompt_ids[:-1]  # prefilled once, in chunks of the batch size; the last token starts decoding
        for start in range(0, len(head), 512):
            self._decode([(t, start + i, 0, False) for i, t in enumerate(head[start:start + 512])])
        for s in range(1, k):
            ll.llama_memory_seq_cp(mem, 0, s, -1, -1)  # shares the prompt's cells, no copy
        chains = [self._sampler(seed, sampling.temperature, sampling.top_p) for seed in seeds]
        try:
            outs: list[list[int]] = [[] for _ in seeds]
            active, last, pos = list(range(k)), [prompt_ids[-1]] * k, n - 1
            while active:
                self._decode([(last[s], pos, s, True) for s in active])
                still = []
                for i, s in enumerate(active):
                    tok = ll.llama_sampler_sample(chains[s], ctx, i)
                    outs[s].append(tok)
                    last[s] = tok
                    if tok not in eos_ids and len(outs[s]) < sampling.max_new_tokens:
                        still.append(s)
                active, pos = still, pos + 1
        finally:
            for c in chains:
                ll.llama_sampler_free(c)
        return outs

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def close_context(self) -> None:
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = None

    def close(self) -> None:
        self.close_context()
        if self._model:
            self._ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__":  # `make setup` prints what the engine was built with
    info = system_info()
    print(f"llama-cpp-python {info['llama_cpp']}: ggml CPU features {' '.join(info['cpu_features'])}")
