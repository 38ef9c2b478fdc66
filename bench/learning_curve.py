"""Learning curves on validation data: each trainer's metric (with its 95% CI) at 3-4 training
sizes, to choose the defaults. Nothing here touches a held-out or test split:

- rec: trained on the first N train rows (one epoch: N / batch_size steps), scored on the
  rec "eval" split (per user, the ratings just before the test ones), LLM AUC with the
  like-rate baseline beside it;
- rm / dpo: the pairs of pref_rm's *training* prefixes only (its held-out prefixes removed),
  split again by prefix into train and validation; N optimizer steps;
- verifier: reason_verifier's training problems only, split again by problem; N optimizer
  steps; AUC on the validation problems' solutions.
- grpo: the reward model's held-out prefixes less pref_grpo's eval prompts (never scored
  here), split again by pref_grpo's own rule into validation and training prompts; N
  optimizer steps; RM reward after - before on the validation prompts.

    python bench/learning_curve.py --trainer rec --sizes 64,256,1024,2048
    python bench/learning_curve.py --trainer rm --sizes 60,240,960
    python bench/learning_curve.py --trainer verifier --sizes 40,80,160
    python bench/learning_curve.py --trainer grpo --sizes 6,12,24

Each point is saved to bench/results/curves/<trainer>.json (and .csv for `dvc plots show`,
declared in dvc.yaml's top-level plots) as soon as it is measured.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "bench" / "results" / "curves"


def rec_point(p, size: int, machine, work: Path, n_val: int) -> dict:
    from train import build

    from posttrain.core.io import write_jsonl
    from posttrain.rec import alpaca, movielens
    from posttrain.rec.evaluate import EvalSettings, evaluate
    from posttrain.rec.lora import LoraSettings, train
    from posttrain.rec.tokenization import TokenizeSettings

    r = p["rec"]
    data = work / "rec-val"
    if not (data / "test_raw.jsonl").exists():  # the eval split, in the raw form rec_evaluate scores
        ratings = movielens.load(r["source"], cache_dir=work / "download")
        splits = alpaca.split_examples(alpaca.build_examples(ratings, r["history_len"], r["rating_threshold"]),
                                       r["val_ratio"], r["test_ratio"], r["seed"])
        data.mkdir(parents=True)
        write_jsonl(data / "test_raw.jsonl", [alpaca.raw_record(e) for e in splits["eval"]])
        shutil.copy(ROOT / "data/rec/train_meta.jsonl", data / "train_meta.jsonl")
    ft = r["finetune"]
    steps = max(1, math.ceil(size / (ft["batch_size"] * ft["grad_accum"])))
    s = build(LoraSettings, ft, seed=r["seed"], max_train_examples=size, max_steps=steps, max_eval_examples=1)
    adapter = work / f"rec-{size}"
    t0 = time.perf_counter()
    res = train(ROOT / "data/models/policy", ROOT / "data/rec/tokenized", adapter, s, machine, live_dir=work / "live")
    t_train = time.perf_counter() - t0
    ev = evaluate(ROOT / "data/models/policy", adapter, data, build(EvalSettings, r["evaluate"], seed=r["seed"],
                                                                   max_test_examples=n_val),
                  build(TokenizeSettings, r), machine)
    m = ev["metrics"]
    return {"size": size, "steps": steps, "train_s": round(t_train, 1),
            "tokens_per_s": res["run"]["trained_tokens_per_s"],
            "metric": "llm_auc", "value": m["llm"]["auc"], "ci_low": m["llm"]["auc_ci_low"],
            "ci_high": m["llm"]["auc_ci_high"], "n": m["llm"]["n"],
            "baseline_auc": m["baseline"]["auc"], "baseline_ci": [m["baseline"]["auc_ci_low"],
                                                                 m["baseline"]["auc_ci_high"]]}


def pref_files(p, work: Path) -> tuple[Path, Path, Path]:
    """pairs_all.jsonl of pref_rm's training prefixes only (its held-out ones removed)."""
    from train import build

    from posttrain.pref.common import PairData, load_split
    from posttrain.pref.pairs import prefix_id

    pairs = work / "pairs_trainsplit.jsonl"
    ids, weights = ROOT / "data/pref/ids.json", ROOT / "data/pref/density_weights.npy"
    if not pairs.exists():
        rm = p["pref"]["rm"]
        data = build(PairData, rm, density_aware=p["pref"]["density_aware"])
        _, _, train, _, _, _ = load_split(ROOT / "data/pref/pairs_all.jsonl", ids, weights, data)
        keep = {t["prefix_id"] for t in train}
        lines = [ln for ln in (ROOT / "data/pref/pairs_all.jsonl").read_text(encoding="utf-8").splitlines()
                 if ln.strip() and prefix_id(json.loads(ln)) in keep]
        pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs, ids, weights


def pref_point(p, trainer: str, size: int, machine, work: Path, val_fraction: float) -> dict:
    from train import build

    from posttrain.pref.common import PairData

    pairs, ids, weights = pref_files(p, work)
    pref, rm = p["pref"], p["pref"]["rm"]
    data = build(PairData, rm, density_aware=pref["density_aware"], max_pairs=0, heldout_fraction=val_fraction)
    t0 = time.perf_counter()
    if trainer == "rm":
        from posttrain.pref.reward import RewardSettings, train_reward_model

        s = build(RewardSettings, rm, backbone=str(ROOT / rm["backbone"]), max_steps=size)
        res = train_reward_model(pairs, ids, weights, work / f"rm-{size}", s, data, machine, live_dir=work / "live")
        h, key = res["metrics"]["heldout"], "accuracy"
    else:
        from posttrain.pref.dpo import DPOSettings, train_dpo

        s = build(DPOSettings, pref["dpo"], max_steps=size)
        res = train_dpo(pairs, ids, weights, ROOT / "data/models/policy", work / f"dpo-{size}", s, data, machine,
                        live_dir=work / "live")
        h, key = res["metrics"]["heldout"], "reward_accuracy"
    return {"size": size, "steps": size, "pairs_drawn": size * s.batch_size, "train_s": round(time.perf_counter() - t0, 1),
            "tokens_per_s": res["metrics"]["train"]["trained_tokens_per_s"], "metric": key, "value": h[key],
            "ci_low": h[f"{key}_ci_low"], "ci_high": h[f"{key}_ci_high"], "n": h["n"],
            "train_pairs": res["metrics"]["pairs"]["train"]}


def verifier_point(p, size: int, machine, work: Path, val_fraction: float) -> dict:
    from train import build

    from posttrain.reason.verifier import VerifierSettings, verifier_run

    s = build(VerifierSettings, p["reason"]["verifier"], max_steps=size)
    t0 = time.perf_counter()
    res = verifier_run(ROOT / "data/models/policy", ROOT / "data/reason/graded.jsonl",
                       ROOT / "data/reason/problems.jsonl", s, machine, live_dir=work / "live", validation=val_fraction)
    h = res["metrics"]["heldout"]
    return {"size": size, "steps": size, "train_s": round(time.perf_counter() - t0, 1),
            "tokens_per_s": res["metrics"]["train"].get("trained_tokens_per_s"), "metric": "auc", "value": h["auc"],
            "ci_low": h["auc_ci_low"], "ci_high": h["auc_ci_high"], "n": h["n"],
            "mse_minus_baseline": h.get("mse_minus_baseline"),
            "mse_minus_baseline_ci": [h.get("mse_minus_baseline_ci_low"), h.get("mse_minus_baseline_ci_high")]}


def grpo_point(p, size: int, machine, work: Path) -> dict:
    from train import build

    from posttrain.core.io import read_json, write_json
    from posttrain.pref.grpo import GRPOSettings, split_prompts, train_grpo

    g = p["pref"]["grpo"]
    rm = work / "rm-validation"
    if not rm.exists():  # the trained RM, its split less pref_grpo's eval prompts
        shutil.copytree(ROOT / "data/pref/rm", rm)
        split = read_json(rm / "split.json")
        held = split["heldout_prefix_ids"]
        _, eval_ids = split_prompts(held, g["eval_prompts"], g["max_prompts"], split["seed"])
        write_json(rm / "split.json", {**split, "heldout_prefix_ids": sorted(set(held) - set(eval_ids))})
    s = build(GRPOSettings, g, max_steps=size)
    t0 = time.perf_counter()
    res = train_grpo(ROOT / "data/pref/prefixes_all.jsonl", ROOT / "data/models/policy", rm, work / f"grpo-{size}",
                     s, machine, live_dir=work / "live", gen_cache_dir=work / "gen-cache")
    r = res["metrics"]["eval_reward"]
    return {"size": size, "steps": size, "train_s": round(time.perf_counter() - t0, 1),
            "tokens_per_s": res["metrics"]["train"]["trained_tokens_per_s"], "metric": "reward_delta",
            "value": r["delta"], "ci_low": r["delta_ci_low"], "ci_high": r["delta_ci_high"], "n": r["n"],
            "before": r["before"], "after": r["after"]}


@click.command()
@click.option("--trainer", type=click.Choice(["rec", "rm", "dpo", "verifier", "grpo"]), required=True)
@click.option("--sizes", required=True, help="rec: training rows; rm/dpo/verifier/grpo: optimizer steps")
@click.option("--n-val", default=400, show_default=True, help="rec: validation rows scored")
@click.option("--val-fraction", default=0.25, show_default=True, help="rm/dpo: training prefixes (verifier: problems) held for validation")
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="params.yaml value for this curve only, e.g. -S rec.finetune.lora_layers=8 (a YAML value)")
@click.option("--label", default="", help="curve variant: points go to curves/<trainer>-<label>.json")
def main(trainer, sizes, n_val, val_fraction, overrides, label):
    from train import build, params

    from posttrain.core.report import cpu_model
    from posttrain.core.training import TrainSettings

    import yaml

    p = params()
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = p
        for k in parents:
            node = node[k]
        if leaf not in node:
            raise click.BadParameter(f"{key} is not in params.yaml", param_hint="-S")
        node[leaf] = yaml.safe_load(value)
    name = f"{trainer}-{label}" if label else trainer
    machine = build(TrainSettings, p["train"])
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"points": []}
    points = {pt["size"]: pt for pt in old["points"]}
    work = Path(tempfile.mkdtemp(prefix="curve_"))
    try:
        for size in (int(x) for x in sizes.split(",")):
            if trainer == "rec":
                pt = rec_point(p, size, machine, work, n_val)
            elif trainer == "verifier":
                pt = verifier_point(p, size, machine, work, val_fraction)
            elif trainer == "grpo":
                pt = grpo_point(p, size, machine, work)
            else:
                pt = pref_point(p, trainer, size, machine, work, val_fraction)
            points[size] = pt
            click.echo(json.dumps(pt), err=True)
            rows = [points[k] for k in sorted(points)]
            path.write_text(json.dumps({"trainer": trainer, "overrides": list(overrides), "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                                        "command": " ".join(["python", *sys.argv]), "points": rows}, indent=2)
                            + "\n", encoding="utf-8")
            with (OUT / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["size", rows[0]["metric"], "ci_low", "ci_high", "n"])
                w.writerows([r["size"], r["value"], r["ci_low"], r["ci_high"], r["n"]] for r in rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
