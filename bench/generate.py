"""Generation throughput: posttrain's backends vs tuned transformers vs CTranslate2, and the roofline.

    python bench/generate.py [--model data/models/policy] [--batch-sizes 1,8,32]
                             [--new-tokens 64] [--threads 2] [--paths llamacpp,posttrain,hf,hf-bf16,...]
                             [--workload samples|prompts]

Same prompts (problems of data/reason/problems.jsonl, rendered with the reason chat
prompt), same sampling (T, top_p from --temperature/--top-p, full vocabulary), same
batch sizes, in one process, one path after another. A batch of B is, with
--workload samples (what reason_generate runs: n_samples per problem), B samples of
the first problem; with --workload prompts, one sample of each of B problems.
  llamacpp          posttrain.reason.generation.generate with reason.backend llamacpp (the
                    default): the model's GGUF through llama.cpp with its weights as bf16
                    (reason.llamacpp_weights), a batch's rows decoded together in one context,
                    the prompt's KV cells shared
  llamacpp-q4_1     the same with the GGUF's weights as stored (Q4_1)
  posttrain         the same call with reason.backend hf: transformers, fp32, per-row RNG, one
                    prompt per batch, its prefill shared by the batch's rows
  hf                model.generate, fp32, one left-padded batch (reason_generate's path before
                    the generation cache)
  hf-bf16           model.generate with bf16 weights (the CPU has AMX/avx512_bf16 if lscpu says so)
  hf-static         model.generate, static KV cache + torch.compile (transformers' CPU compile path)
  ct2-float32/int8  CTranslate2 generate_batch on the converted checkpoint (converted once, cached)
Completion tokens are counted up to each row's end-of-turn token and divided by the
wall time of the batch (prefill included: that is what reason_generate waits on); each
path gets one untimed warm-up batch first, hf-static one per batch size (it compiles per
shape), reported apart. The roofline of a batch is its completion tokens over the least
time the machine needs for it: prefill FLOPs (2 x params x prompt tokens, each distinct
prompt once: the samples of one problem share it) at the measured matmul rate, plus per
decode step the larger of reading the weights at the measured bandwidth and the step's
FLOPs (2 x params x B). Each path is held to the roofline of the weights it runs: fp32 (4
bytes a parameter, fp32 matmul rate), 16-bit (2 bytes, bf16 matmul rate: bf16, llama.cpp's
bf16), int8 (1 byte) or the GGUF file as stored (its bytes), both at the bf16 rate.
Measured here at --threads. Needs data/models/policy and data/reason/problems.jsonl
(`dvc repro reason_collect base_models`), for llamacpp requirements-llamacpp.txt (the
Makefile installs it), and for ct2-*, `pip install --no-deps ctranslate2`.
"""

import json
import time
from pathlib import Path

import click


def measure_bandwidth(threads: int, mb: int = 1024) -> float:
    """GB/s of reading a buffer much larger than the caches (a sum over 1 GB of fp32)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mb * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def measure_matmul(threads: int, n: int = 2048, dtype: str = "float32") -> float:
    """GFLOP/s of an n x n matmul at `threads` in `dtype` (the compute ceiling of a decode step)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def load_prompts(problems_path: Path, count: int, workload: str) -> tuple[list[dict], int]:
    """(problems, samples per problem) of a batch of `count` rows."""
    rows = [json.loads(line) for line in problems_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise click.ClickException(f"{problems_path}: no problems")
    if workload == "samples":
        return rows[:1], count
    return [rows[i % len(rows)] for i in range(count)], 1  # cycle when there are fewer than the batch


def completion_tokens(rows: list[list[int]], eos: int) -> int:
    from posttrain.core.generation import completion_length

    return sum(completion_length(r, {eos}) for r in rows)


class Paths:
    """One runner per path: run(problems) -> completion tokens generated for that batch."""

    def __init__(self, model_dir: Path, new_tokens: int, temperature: float, top_p: float, seed: int,
                 threads: int, scratch: Path):
        self.model_dir, self.new_tokens, self.threads, self.scratch = model_dir, new_tokens, threads, scratch
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self._hf = None

    def hf(self):
        if self._hf is None:
            from posttrain.reason.generation import load_model

            self._hf = load_model(self.model_dir)
        return self._hf

    def encode(self, problems, n: int = 1):
        from posttrain.reason import prompts

        _, tok = self.hf()
        return [tok(prompts.render(tok, p), add_special_tokens=False)["input_ids"] for p in problems for _ in range(n)]

    def _posttrain(self, engine):
        from posttrain.reason.generation import SamplingConfig, generate

        def run(problems, n):
            # a batch holds samples of one problem on both backends: batch size n
            cfg = SamplingConfig(n_samples=n, temperature=self.temperature, top_p=self.top_p,
                                 max_new_tokens=self.new_tokens, batch_size=n, seed=self.seed)
            return sum(s["completion_tokens"] for s in generate(engine, problems, cfg, progress=False)[0])
        return run

    def posttrain(self):
        from posttrain.core.generation import HFEngine

        return self._posttrain(HFEngine(*self.hf()))

    def _llamacpp(self, weights: str):
        from posttrain.core.llamacpp import LlamaCppEngine, gguf_of, runs_here

        why = runs_here(gguf_of(str(self.model_dir)), weights)  # a crashing kernel ends a probe, not the bench
        if why:
            raise RuntimeError(why)
        return self._posttrain(LlamaCppEngine(gguf_of(str(self.model_dir)), self.hf()[1], threads=self.threads,
                                              weights=weights))

    def llamacpp(self):
        return self._llamacpp("bf16")

    def llamacpp_q4_1(self):
        return self._llamacpp("source")

    def hf_fp32(self):
        return self._hf_generate(self.hf()[0])

    def _hf_generate(self, model, **extra):
        import torch

        _, tok = self.hf()

        def run(problems, n):
            feats = tok.pad({"input_ids": self.encode(problems, n)}, return_tensors="pt")
            torch.manual_seed(self.seed)
            with torch.no_grad():
                seqs = model.generate(**feats, max_new_tokens=self.new_tokens, do_sample=True,
                                      temperature=self.temperature, top_p=self.top_p, top_k=0,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **extra)
            return completion_tokens(seqs[:, feats["input_ids"].shape[1]:].tolist(), tok.eos_token_id)
        return run

    def hf_bf16(self):
        import copy

        import torch

        return self._hf_generate(copy.deepcopy(self.hf()[0]).to(torch.bfloat16))

    def hf_static(self):
        from transformers import CompileConfig

        # transformers compiles generate only on accelerators unless told to on every device
        cc = CompileConfig(fullgraph=False, dynamic=False)
        cc._compile_all_devices = True  # a class attribute, not an __init__ argument
        return self._hf_generate(self.hf()[0], cache_implementation="static", compile_config=cc)

    def ct2(self, quantization: str):
        try:
            import ctranslate2
        except ImportError as e:
            raise click.ClickException("ct2 paths need `pip install --no-deps ctranslate2`") from e
        out = self.scratch / f"ct2-{quantization}"
        if not (out / "model.bin").exists():
            t = time.perf_counter()
            ctranslate2.converters.TransformersConverter(str(self.model_dir)).convert(
                str(out), quantization=quantization, force=True)
            click.echo(f"  converted to CTranslate2 {quantization} in {time.perf_counter() - t:.0f} s", err=True)
        gen = ctranslate2.Generator(str(out), device="cpu", compute_type=quantization,
                                    intra_threads=self.threads)
        _, tok = self.hf()

        def run(problems, n):
            ctranslate2.set_random_seed(self.seed)
            toks = [tok.convert_ids_to_tokens(ids) for ids in self.encode(problems, n)]
            res = gen.generate_batch(toks, max_length=self.new_tokens, sampling_topk=0,
                                     sampling_topp=self.top_p, sampling_temperature=self.temperature,
                                     include_prompt_in_result=False, end_token=tok.eos_token)
            # ct2 drops the end token from the result: count it as generated, like the HF paths
            return sum(min(len(r.sequences_ids[0]) + 1, self.new_tokens) for r in res)
        return run

    def runner(self, name: str):
        if name.startswith("ct2-"):
            return self.ct2(name[4:])
        return getattr(self, "hf_fp32" if name == "hf" else name.replace("-", "_"))()


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default="data/models/policy",
              show_default=True, help="A transformers checkpoint folder (the base_models stage's policy).")
@click.option("--problems", "problems_path", type=click.Path(path_type=Path),
              default="data/reason/problems.jsonl", show_default=True)
@click.option("--batch-sizes", default="1,8,32", show_default=True)
@click.option("--new-tokens", default=64, show_default=True)
@click.option("--temperature", default=0.8, show_default=True)
@click.option("--top-p", default=0.95, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--paths", default="llamacpp,llamacpp-q4_1,posttrain,hf,hf-bf16,hf-static,ct2-float32,ct2-int8",
              show_default=True)
@click.option("--workload", type=click.Choice(["samples", "prompts"]), default="samples", show_default=True)
@click.option("--scratch", type=click.Path(path_type=Path), default="data/bench/generate", show_default=True,
              help="Where converted CTranslate2 models are kept between runs.")
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/generate.json.")
def main(model_dir, problems_path, batch_sizes, new_tokens, temperature, top_p, threads, seed, paths, workload,
         scratch, save):
    import torch

    torch.set_num_threads(threads)
    sizes = [int(b) for b in batch_sizes.split(",")]
    bw = measure_bandwidth(threads)
    flops = {"float32": measure_matmul(threads), "bfloat16": measure_matmul(threads, dtype="bfloat16")}
    bench = Paths(model_dir, new_tokens, temperature, top_p, seed, threads, scratch)
    model, tok = bench.hf()
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = {"fp32": params * 4, "bf16": params * 2, "int8": params}
    try:
        from posttrain.core.llamacpp import gguf_of

        weight_bytes["gguf"] = gguf_of(str(model_dir)).stat().st_size
    except ValueError:
        pass
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    try:
        from posttrain.core.llamacpp import system_info

        info = system_info()
        cpu += f"; llama-cpp-python {info['llama_cpp']} built with {' '.join(info['cpu_features'])}"
    except ImportError:
        pass
    click.echo(f"machine: {cpu}")
    click.echo(f"machine: {bw:.1f} GB/s read, {flops['float32']:.0f} GFLOP/s fp32 and {flops['bfloat16']:.0f} "
               f"bf16 matmul at {threads} threads; "
               f"model {params / 1e6:.0f}M params, weights " + ", ".join(
                   f"{k} {v / 1e9:.2f} GB" for k, v in weight_bytes.items()) + f"; workload {workload}")

    def roofline(b: int, nbytes: int, rate: float) -> float:
        problems, _ = load_prompts(problems_path, b, workload)
        prompt_tokens = sum(len(x) for x in bench.encode(problems))  # once per distinct prompt
        step = max(nbytes / (bw * 1e9), 2 * params * b / (rate * 1e9))
        return b * new_tokens / (2 * params * prompt_tokens / (rate * 1e9) + new_tokens * step)

    roof = {w: {b: roofline(b, nbytes, flops["float32" if w == "fp32" else "bfloat16"]) for b in sizes}
            for w, nbytes in weight_bytes.items()}
    for w, r in roof.items():
        click.echo(f"roofline tok/s, {w} weights (prefill + decode): "
                   + ", ".join(f"batch {b}: {r[b]:.0f}" for b in sizes))
    reads = {"llamacpp": "bf16", "llamacpp-q4_1": "gguf", "hf-bf16": "bf16", "ct2-int8": "int8"}  # others: fp32

    results: dict[str, dict[int, float]] = {}
    for name in paths.split(","):
        try:
            run = bench.runner(name)
            t = time.perf_counter()
            run(*load_prompts(problems_path, 2, workload))  # warm-up: compile, allocator, caches
            warm = time.perf_counter() - t
            results[name] = {}
            for b in sizes:
                batch = load_prompts(problems_path, b, workload)
                if name == "hf-static":
                    t = time.perf_counter()
                    run(*batch)
                    warm += time.perf_counter() - t
                t = time.perf_counter()
                n = run(*batch)
                results[name][b] = n / (time.perf_counter() - t)
            click.echo(f"{name:12s} warm-up {warm:5.1f} s  " + "  ".join(
                f"b{b}: {results[name][b]:6.1f} tok/s" for b in sizes), err=True)
        except Exception as e:  # one path failing (e.g. no compiler) must not hide the others
            click.echo(f"{name}: failed: {type(e).__name__}: {str(e)[:300]}", err=True)

    base = results.get("posttrain")
    click.echo(f"\n| path | weights | " + " | ".join(f"batch {b} tok/s" for b in sizes)
               + " | x posttrain hf (batch 8) | " + " | ".join(f"/ roofline b{b}" for b in sizes) + " |")
    click.echo("|---" * (3 + 2 * len(sizes)) + "|")
    for name, r in results.items():
        vs = f"{r[8] / base[8]:.2f}x" if base and 8 in r and 8 in base else "-"
        w = reads.get(name, "fp32")
        click.echo(f"| {name} | {w} | " + " | ".join(f"{r[b]:.1f}" for b in sizes) + f" | {vs} | "
                   + " | ".join(f"{r[b] / roof[w][b]:.2f}" for b in sizes) + " |")
    if save:
        from posttrain.core.report import save_bench

        versions = {}
        try:
            import ctranslate2

            versions["ctranslate2"] = ctranslate2.__version__
        except ImportError:
            pass
        save_bench("generate", {
            "threads": threads, "new_tokens": new_tokens, "workload": workload, "machine_detail": cpu,
            "machine": {"read_gb_s": round(bw, 1), "gflops_fp32": round(flops["float32"]),
                        "gflops_bf16": round(flops["bfloat16"])},
            "weights_gb": {k: round(v / 1e9, 2) for k, v in weight_bytes.items()}, "versions": versions,
            "results": {name: {"weights": reads.get(name, "fp32"),
                               "tok_s": {str(b): round(r[b], 1) for b in sizes},
                               "roofline_ratio": {str(b): round(r[b] / roof[reads.get(name, "fp32")][b], 2)
                                                  for b in sizes}}
                        for name, r in results.items()}})


if __name__ == "__main__":
    main()
