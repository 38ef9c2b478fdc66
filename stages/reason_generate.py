"""reason_generate: n sampled step-by-step solutions per problem -> data/reason/samples.jsonl.

    python stages/reason_generate.py --model data/models/policy --problems data/reason/problems.jsonl \
        --cache-dir data/reason/gen_cache --out data/reason/samples.jsonl \
        --metrics metrics/reason_generate.json --n-samples 4 ...

With --cache-dir, only samples not generated before (same model bytes, prompt, sampling
params, seed, sample index, backend and threads) are generated: raising n_samples or adding
problems costs only the new rows.
"""

import time

import click

from posttrain.core.llamacpp import WEIGHTS, system_info
from posttrain.reason.generation import BACKENDS, SamplingConfig, generate, load_engine, open_cache, summarize
from posttrain.core.io import outputs
from posttrain.reason.problems import read_problems
from posttrain.core.cli import finite, run


@click.command()
@click.option("--model", "model_ref", required=True,
              help="Model folder (data/models/policy), asset name or hub id.")
@click.option("--problems", "problems_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Generation cache (a persist: true out in dvc.yaml); omit to sample everything.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--n-samples", "--n_samples", required=True, type=click.IntRange(min=1))
@click.option("--temperature", required=True, type=finite(0))
@click.option("--top-p", "--top_p", required=True, type=finite(0, 1, min_open=True))
@click.option("--max-new-tokens", "--max_new_tokens", required=True, type=click.IntRange(min=1))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--seed", required=True, type=int)
@click.option("--backend", required=True, type=click.Choice(BACKENDS),
              help="Generation engine: hf (transformers), llamacpp (the model's GGUF through llama.cpp), "
                   "vllm (GPU machines).")
@click.option("--llamacpp-weights", "--llamacpp_weights", required=True, type=click.Choice(WEIGHTS),
              help="llamacpp: the GGUF's weights converted to this type before loading (source = as stored).")
@click.option("--threads", required=True, type=click.IntRange(min=0),
              help="Intra-op threads of the engine (0 = the default: torch's, or every core). Thread count "
                   "can change float reduction order, hence samples: it is a tracked param.")
@click.option("--progress/--no-progress", default=True, help="Dev only: tqdm progress bar.")
def main(model_ref, problems_path, cache_dir, out, metrics_path, n_samples, temperature, top_p, max_new_tokens,
         batch_size, seed, backend, llamacpp_weights, threads, progress):
    problems = read_problems(problems_path)  # bad input fails fast, before torch is imported
    cfg = SamplingConfig(n_samples=n_samples, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    try:
        engine = load_engine(model_ref, backend, threads=threads, seed=seed, llamacpp_weights=llamacpp_weights)
    except (ImportError, ValueError) as e:  # no GGUF for llamacpp, vllm not installed: one line
        raise click.UsageError(str(e)) from e
    t0 = time.perf_counter()
    cache = open_cache(cache_dir, model_ref) if cache_dir else None
    samples, stats = generate(engine, problems, cfg, cache=cache, progress=progress)
    secs = time.perf_counter() - t0
    metrics = summarize(samples)
    # Throughput and cache use depend on the machine and on what ran before: metrics, not data.
    metrics["cache"] = {k: stats[k] for k in ("generated", "cache_hits")}
    metrics["engine"] = {"backend": backend, **engine.key()}
    if backend == "llamacpp":  # the build's kernels: which weight types run here, and how fast
        metrics["engine"]["cpu_features"] = system_info()["cpu_features"]
    metrics["completion_tokens_per_s"] = (round(stats["generated_tokens"] / secs, 2)
                                          if stats["generated"] and secs else None)
    with outputs() as o:
        o.write_jsonl(out, samples)
        o.write_json(metrics_path, metrics)
    click.echo(f"reason_generate: {len(samples)} samples, {metrics['completion_tokens']} tokens "
               f"({stats['generated']} generated, {stats['cache_hits']} from the cache) in {secs:.1f}s -> {out}", err=True)


if __name__ == "__main__":
    run(main)
