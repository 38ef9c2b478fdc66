"""Training throughput of every trainer at the default params: before (fp32, the full forward
at every step, trl's LM head over every position, rollouts prefilling every row, the old
placements, pref_rm's random batches, glibc's malloc as it comes) and after
(`train.precision: auto`, the frozen trunk, the labelled-positions head, the defaults in
params.yaml), side by side in one run on one machine.

    python bench/train.py [--trainers rec,rm,dpo,grpo,verifier] [--steps N] [--before-steps 24] [--no-save]
    python bench/train.py --trainers verifier --pairs 5     # the ratio's spread: bench/results/train_pairs.json

Each trainer runs through its own library function (the stage's code path) on the stage's
real inputs, each run in a process of its own (as each stage is). "After" runs the stage's whole default schedule (params.yaml's `max_steps`):
what the cache saves depends on it, since a sequence drawn again (a later epoch, a repeated
weighted draw) skips the frozen layers; its rate is over the whole `trainer.train()`, setup
and first-step warm-up included. "Before" caches nothing, so its cost per step is the same
all along the schedule: it runs the schedule's first `--before-steps` steps and is timed from
the end of the first one (`steady_tokens_per_s`): a 12-step run would otherwise charge its
~0.5 s of setup and warm-up to 12 steps where the stage spreads it over hundreds (the
verifier's 12-step rate was 9% below its steady one). Both choices err against "after".
`--steps N` runs N steps of both instead (a quick look; it understates what the cache gives
a full run). The stage's real inputs (`dvc repro rec_tokenize pref_density
pref_prefixes reason_filter` first); the figures are `core.training.fit`'s: trained tokens
(non-pad tokens of the forwards that build a graph) per second of `trainer.train()`.

FLOPs per trained token are the model's matmul FLOPs for the trainable placement (attention
scores and elementwise work left out; small at these lengths): forward 2P over the kept
layers and the head; backward 2P for the activation gradients from the head down to the
first trainable layer, plus 2P for the weights that train in full (LoRA's are negligible);
DPO adds its reference forward. Cached trunk layers, and the LM head at positions without a
label, count as computed (the model-FLOPs convention), so "of bf16 peak" is a model-FLOPs
utilization against the matmul rate measured here (an n x n matmul, best of 5, at the
machine's threads): work the cache and the labelled head skip can lift it past what the
matmuls themselves reach.

One before/after pair is one measurement, and on a shared 2-core box a run's rate moves 10-15%
from run to run. `--pairs N` runs N before/after pairs back to back and gives each trainer's
ratio as the geometric mean of the pairs' ratios with a 95% t-interval over their logs
(`ratio_interval`), saved to `bench/results/train_pairs.json` (the README's table keeps the
one-pair `train.json`).

Held-out evaluation is cut to a few items (it is not timed) so the bench stays short.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

TRAINERS = ("rec", "rm", "dpo", "grpo", "verifier")


def params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def build(cls, group: dict, **over):
    """A settings dataclass from a params group (its own fields only) and overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in group.items() if k in names}, **over})


def layer_params(cfg) -> int:
    """Matmul weights of one decoder layer (q, k, v, o and the gated MLP)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * getattr(cfg, "head_dim", None) if getattr(cfg, "head_dim", None) \
        else h * cfg.num_key_value_heads // cfg.num_attention_heads
    return 2 * h * h + 2 * h * kv + 3 * h * inter


def flops_per_token(cfg, *, kept: int, trainable: int, head: int, full_weights: bool, reference: bool) -> float:
    """Model matmul FLOPs per trained token (see the module docstring)."""
    p_layer, p_head = layer_params(cfg), head * cfg.hidden_size
    fwd = 2 * (kept * p_layer + p_head)
    bwd = 2 * (trainable * p_layer + p_head) + (2 * (trainable * p_layer + p_head) if full_weights else 0)
    return fwd + bwd + (fwd if reference else 0)


def group_of(name: str, p: dict) -> dict:
    """Trainer `name`'s params group in params.yaml."""
    return {"rec": p["rec"]["finetune"], "rm": p["pref"]["rm"], "dpo": p["pref"]["dpo"], "grpo": p["pref"]["grpo"],
            "verifier": p["reason"]["verifier"]}[name]


def run_trainer(name: str, p: dict, machine, steps: int, before: bool, work: Path, rm_dir: Path | None):
    """(facts of fit, FLOPs per token) of one short run of trainer `name`."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(ROOT / "data/models/policy"))
    live, out = work / f"{name}-live", work / f"{name}-out"
    pref, rm = p["pref"], p["pref"]["rm"]
    inputs = [ROOT / "data/pref/pairs_all.jsonl", ROOT / "data/pref/ids.json", ROOT / "data/pref/density_weights.npy"]
    if name == "rec":
        from posttrain.rec.lora import LoraSettings, train

        s = build(LoraSettings, group_of(name, p), seed=p["rec"]["seed"], max_steps=steps, max_eval_examples=1,
                  **({"lora_layers": 0} if before else {}))
        res = train(ROOT / "data/models/policy", ROOT / "data/rec/tokenized", out, s, machine, live_dir=live)
        k = s.lora_layers or cfg.num_hidden_layers
        return res["run"], flops_per_token(cfg, kept=cfg.num_hidden_layers, trainable=k,
                                               head=cfg.vocab_size, full_weights=False, reference=False)
    if name in ("rm", "dpo"):
        from posttrain.pref.common import PairData

        # a sliver held out: the held-out scoring is not what this measures
        data = build(PairData, rm, density_aware=pref["density_aware"], heldout_fraction=0.02)
        if name == "rm":
            from posttrain.pref.reward import RewardSettings, train_reward_model

            s = build(RewardSettings, rm, backbone=str(ROOT / rm["backbone"]), max_steps=steps,
                      **({"group_by_length": False} if before else {}))
            res = train_reward_model(*inputs, out, s, data, machine, live_dir=live)
            kept = s.num_layers or cfg.num_hidden_layers
            return res["metrics"]["train"], flops_per_token(cfg, kept=kept, trainable=s.trainable_layers or kept,
                                                            head=1, full_weights=not s.lora_r, reference=False)
        from posttrain.pref.dpo import DPOSettings, train_dpo

        s = build(DPOSettings, group_of(name, p), max_steps=steps)
        res = train_dpo(*inputs, ROOT / "data/models/policy", out, s, data, machine, live_dir=live)
        return res["metrics"]["train"], flops_per_token(cfg, kept=cfg.num_hidden_layers,
                                                        trainable=s.lora_layers or cfg.num_hidden_layers,
                                                        head=cfg.vocab_size, full_weights=False, reference=True)
    if name == "grpo":
        from posttrain.pref.grpo import GRPOSettings, train_grpo

        s = build(GRPOSettings, group_of(name, p), max_steps=steps, eval_prompts=2)
        res = train_grpo(ROOT / "data/pref/prefixes_all.jsonl", ROOT / "data/models/policy", rm_dir, out, s, machine,
                         live_dir=live)
        return res["metrics"]["train"], flops_per_token(cfg, kept=cfg.num_hidden_layers,
                                                        trainable=s.lora_layers or cfg.num_hidden_layers,
                                                        head=cfg.vocab_size, full_weights=False,
                                                        reference=s.beta > 0)
    if name == "verifier":
        from posttrain.reason.verifier import VerifierSettings, verifier_run

        v = group_of(name, p)
        s = build(VerifierSettings, v, max_steps=steps, heldout_frac=0.05)
        res = verifier_run(ROOT / "data/models/policy", ROOT / "data/reason/graded.jsonl",
                           ROOT / "data/reason/problems.jsonl", s, machine, live_dir=live)
        kept = s.num_layers or cfg.num_hidden_layers
        return res["metrics"]["train"], flops_per_token(cfg, kept=kept, trainable=s.trainable_layers or kept,
                                                        head=1, full_weights=True, reference=False)
    raise click.BadParameter(f"unknown trainer {name!r}; one of {', '.join(TRAINERS)}")


def ratio_interval(ratios: list[float]) -> dict:
    """Geometric mean of paired after/before ratios and its 95% t-interval over their logs
    (independent repeats; a rate's noise is multiplicative)."""
    import math
    import statistics

    from scipy.stats import t as student_t

    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    half = (student_t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
            if len(logs) > 1 else math.nan)
    return {"ratio": round(math.exp(mean), 3), "ratio_ci_low": round(math.exp(mean - half), 3),
            "ratio_ci_high": round(math.exp(mean + half), 3), "n": len(logs)}


def run_isolated(*args):
    """`run_trainer` in a fresh process: `train.reuse_freed_memory` tunes the C allocator for the
    whole process and for good (`posttrain.core.heap`), and no run should inherit the heap an
    earlier one left."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_trainer, args)


@click.command()
@click.option("--trainers", default=",".join(TRAINERS), show_default=True)
@click.option("--steps", type=int, default=None, help="optimizer steps of both runs (default: after = the "
              "stage's max_steps, before = --before-steps)")
@click.option("--before-steps", default=24, show_default=True, help="steps of the uncached fp32 run")
@click.option("--pairs", default=1, show_default=True, help="before/after pairs per trainer, back to back "
              "(>1: the ratio's geometric mean and 95% CI, saved to train_pairs.json)")
@click.option("--save/--no-save", default=True, help="write bench/results/train.json (train_pairs.json with --pairs)")
def main(trainers, steps, before_steps, pairs, save):
    import os

    import torch

    from generate import measure_matmul
    from posttrain.core.report import cpu_model
    from posttrain.core.training import TrainSettings, cpu_flags, resolve_precision

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    peak = {"fp32": measure_matmul(threads), "bf16": measure_matmul(threads, dtype="bfloat16")}
    auto = resolve_precision("auto")
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"})
    click.echo(f"machine: {cpu_model()}; {threads} threads; flags {' '.join(flags) or '-'}; "
               f"matmul {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} bf16; auto precision = {auto}")
    names = trainers.split(",")
    if "grpo" in names and ("rm" not in names or names.index("rm") > names.index("grpo")):
        raise click.BadParameter("grpo is rewarded by the reward model: list rm before it", param_hint="--trainers")
    p = params()
    variants = {"before": TrainSettings(precision="fp32", frozen_trunk=False, labelled_head=False, shared_prefill=False,
                                         shared_prefix=False, frozen_cast=False,
                                         reuse_freed_memory=False),
                "after": build(TrainSettings, p["train"])}
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows, repeats = {}, {}
    rm_dir = None
    try:
        for name, pair in ((n, k) for n in names for k in range(pairs)):
            rows.setdefault(name, {})
            repeats.setdefault(name, []).append({})
            for label, machine in variants.items():
                t0 = time.perf_counter()
                full = int(group_of(name, p)["max_steps"])
                n = steps or (min(before_steps, full) if label == "before" else full)
                facts, fpt = run_isolated(name, p, machine, n, label == "before", work / label, rm_dir)
                # before: steady state (from the end of its first step); after: its whole run
                rate = (facts.get("steady_tokens_per_s") or facts["trained_tokens_per_s"]) if label == "before" \
                    else facts["trained_tokens_per_s"]
                repeats[name][-1][label] = rate
                if pair:
                    click.echo(f"{name:9s} {label:6s} {rate:8.1f} tok/s (pair {pair + 1})", err=True)
                    continue
                rows[name][label] = {"tokens_per_s": rate, "whole_run_tokens_per_s": facts["trained_tokens_per_s"],
                                     "steady_tokens_per_s": facts.get("steady_tokens_per_s"),
                                     "examples_per_s": round(facts["trained_sequences"] * rate
                                                             / max(facts["trained_tokens"], 1), 2),
                                     "precision": facts["precision"], "trunk_layers": facts["frozen_trunk_layers"],
                                     "flops_per_token": fpt, "steps": n, "trunk_reused": facts.get("frozen_trunk_reused", 0),
                                     "trunk_computed": facts.get("frozen_trunk_computed", 0),
                                     "trunk_shared_tokens": facts.get("frozen_trunk_shared_prefix_tokens", 0),
                                     "trainable_shared_tokens": facts.get("shared_prefix_tokens_spared", 0),
                                     "wall_s": round(time.perf_counter() - t0, 1)}
                r = rows[name][label]
                rate = r["tokens_per_s"] * fpt / 1e9
                r["of_fp32_peak"], r["of_bf16_peak"] = round(rate / peak["fp32"], 3), round(rate / peak["bf16"], 3)
                click.echo(f"{name:9s} {label:6s} {r['tokens_per_s']:8.1f} tok/s {r['examples_per_s']:6.2f} ex/s "
                           f"{fpt / 1e9:5.2f} GFLOP/tok {r['precision']} trunk {r['trunk_layers']:2d} "
                           f"{n} steps, trunk reused {r['trunk_reused']} / computed {r['trunk_computed']} ({r['wall_s']} s)", err=True)
            if name == "rm":
                rm_dir = work / "after" / "rm-out"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    click.echo("\n| trainer | before tok/s (fp32, full forward, trl head) | after tok/s | after / before | GFLOP/token "
               "| after: of fp32 peak | after: of bf16 peak |")
    click.echo("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        b, a = r["before"], r["after"]
        click.echo(f"| {name} | {b['tokens_per_s']:.0f} | {a['tokens_per_s']:.0f} | "
                   f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {a['flops_per_token'] / 1e9:.2f} | "
                   f"{a['of_fp32_peak']:.2f} | {a['of_bf16_peak']:.2f} |")
    if pairs > 1:
        summary = {name: {**ratio_interval([r["after"] / r["before"] for r in runs]), "pairs": runs}
                   for name, runs in repeats.items()}
        for name, r in summary.items():
            click.echo(f"{name}: after / before {r['ratio']:.2f}x [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}] "
                       f"over {r['n']} pairs (" + ", ".join(f"{x['after'] / x['before']:.2f}" for x in r["pairs"]) + ")")
        if save:
            from posttrain.core.report import save_bench

            save_bench("train_pairs", {"steps": steps or "default", "before_steps": before_steps, "threads": threads,
                                       "flags": flags, "results": summary})
        return
    if save:
        from posttrain.core.report import save_bench

        save_bench("train", {"steps": steps or "default", "before_steps": before_steps, "threads": threads, "flags": flags,
                             "machine": {"gflops_fp32": round(peak["fp32"]), "gflops_bf16": round(peak["bf16"])},
                             "auto_precision": auto, "results": rows})


if __name__ == "__main__":
    main()
