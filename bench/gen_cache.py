"""Incremental generation: rerun cost after adding rows, as a fraction of a full run.

    python bench/gen_cache.py [--backend llamacpp|hf] [--problems-count 10] [--n-samples 4]
                              [--new-tokens 64] [--batch-size 4] [--threads 2]

Problems: the first of data/reason/problems.jsonl (`dvc repro reason_collect`), model:
data/models/policy. Each timing is the library call reason_generate makes
(`posttrain.reason.generation.generate` with its cache), in one process, the model
loaded once beforehand, against a fresh cache directory:
  full          P problems x S samples, empty cache
  +1 problem    P + 1 problems x S samples (+1/P rows)
  +1 sample     P + 1 problems x S + 1 samples (+1/S rows; llamacpp generates the new
                sample's whole group of --batch-size rows, see posttrain.core.llamacpp)
  no change     the same again
and checks that every cached row equals a fresh run's. Saves bench/results/gen_cache.json
(`posttrain report` writes the docs table from it).
"""

import json
import tempfile
import time
from pathlib import Path

import click


@click.command()
@click.option("--model", "model_dir", default="data/models/policy", show_default=True)
@click.option("--problems", "problems_path", type=click.Path(path_type=Path),
              default="data/reason/problems.jsonl", show_default=True)
@click.option("--problems-count", default=10, show_default=True)
@click.option("--n-samples", default=4, show_default=True)
@click.option("--new-tokens", default=64, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--backend", type=click.Choice(["llamacpp", "hf"]), default="llamacpp", show_default=True)
@click.option("--save/--no-save", default=True, show_default=True, help="Save bench/results/gen_cache.json.")
def main(model_dir, problems_path, problems_count, n_samples, new_tokens, batch_size, threads, backend, save):
    import torch

    from posttrain.reason.generation import SamplingConfig, generate, load_engine, open_cache

    torch.set_num_threads(threads)
    problems = [json.loads(x) for x in problems_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(problems) < problems_count + 1:
        raise click.ClickException(f"{problems_path}: need {problems_count + 1} problems, found {len(problems)}")
    engine = load_engine(model_dir, backend, threads=threads, seed=0, llamacpp_weights="bf16")

    def cfg(n):
        return SamplingConfig(n_samples=n, temperature=0.8, top_p=0.95, max_new_tokens=new_tokens,
                              batch_size=batch_size, seed=0)

    with tempfile.TemporaryDirectory() as d:
        cache = open_cache(d, model_dir)
        steps = [("full", problems_count, n_samples), ("+1 problem", problems_count + 1, n_samples),
                 ("+1 sample", problems_count + 1, n_samples + 1), ("no change", problems_count + 1, n_samples + 1)]
        times, last, saved = {}, None, []
        for name, p, n in steps:
            t = time.perf_counter()
            last, stats = generate(engine, problems[:p], cfg(n), cache=cache, progress=False)
            times[name] = time.perf_counter() - t
            saved.append({"name": name, "rows": stats["rows"], "generated": stats["generated"],
                          "cache_hits": stats["cache_hits"], "seconds": round(times[name], 1),
                          "of_full": round(times[name] / times["full"], 3)})
            click.echo(f"{name:11s} {p:3d} x {n} rows {stats['rows']:4d}: generated {stats['generated']:4d}, "
                       f"from cache {stats['cache_hits']:4d}, {times[name]:7.1f} s "
                       f"({times[name] / times['full']:.1%} of full)")
    fresh, _ = generate(engine, problems[:problems_count + 1], cfg(n_samples + 1), progress=False)
    click.echo(f"cached rows equal a fresh run's: {fresh == last}")
    if save:
        from posttrain.core.report import save_bench

        save_bench("gen_cache", {"backend": backend, "problems_count": problems_count, "n_samples": n_samples,
                                 "batch_size": batch_size, "new_tokens": new_tokens, "threads": threads,
                                 "steps": saved, "cached_rows_equal_fresh": fresh == last})


if __name__ == "__main__":
    main()
