"""`posttrain report`: the numbers in README.md and docs/*.md, written from the files that hold them.

Each generated block sits between `<!-- report:NAME -->` and `<!-- /report:NAME -->`; the
report replaces what is between them with BLOCKS[NAME] rendered from the committed files:

    results             metrics/<stage>.json (estimates, 95% CIs, n) and metrics/<stage>_run.json
                        (n_clusters, counts)
    repro-times         bench/results/repro_times.json (bench/repro_times.py)
    bench-density, bench-generate, bench-gen-cache, bench-launch, bench-bootstrap,
    bench-density-weights, bench-train
                        bench/results/<name>.json (the bench scripts save them)
    learning-curves     bench/results/curves/<trainer>.json (bench/learning_curve.py)
    density-sweep       bench/results/density_sweep.json (posttrain sweep collect)

    posttrain report            # rewrite the blocks in place
    posttrain report --check    # exit 1 and print a diff where a block disagrees with the files
"""

from __future__ import annotations

import datetime
import difflib
import json
from decimal import ROUND_HALF_UP, Decimal
import re
import subprocess
import sys
from pathlib import Path

import click

MARK = re.compile(r"(<!-- report:([\w-]+) -->\n)(.*?)(<!-- /report:\2 -->)", re.S)
RESULTS_DIR = "bench/results"


def _json(root: Path, path: str):
    return json.loads((root / path).read_text(encoding="utf-8"))


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


def num(x: float, digits: int, sign: str = "") -> str:
    """x with `digits` decimals, halves rounded up (0.4875 -> 0.488, as a reader rounds)."""
    q = Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return f"{float(q):{sign}.{digits}f}"


def _table(header: list[str], align: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows]


# --- results: one row per (stage, block, metric) ---------------------------------------------

# unit of an item and of a cluster per stage (n and n_clusters in metrics/<stage>_run.json)
UNITS = {"rec_evaluate": ("rows", "users"), "pref_rm": ("pairs", "prefixes"), "pref_dpo": ("pairs", "prefixes"),
         "pref_grpo": ("prompts", "prompts"), "reason_verifier": ("solutions", "problems"),
         "reason_filter": ("samples", "problems")}


def ci_low_above(x, n: int = 0):
    """The CI's lower bound above x (on at least n items, when n is given)."""
    label = f"CI low > {x}" + (f" on n >= {n}" if n else "")
    return label, lambda e, facts: e["ci_low"] > x and e["n"] >= n


def ci_high_below(x):
    return f"CI high < {x}", lambda e, facts: e["ci_high"] < x


def accepted(domain):
    return ">= 1 accepted", lambda e, facts: facts["counts"]["by_domain"][domain]["accepted"] >= 1


def zero():
    return "= 0", lambda e, facts: e["value"] == 0


# (stage, label, block, metric, (decimals, sign of the estimate), target or None = reported)
RESULTS = [
    ("rec_evaluate", "LLM AUC (P(Yes) at the answer token)", "llm", "auc", (3, ""), ci_low_above(0.5, n=400)),
    ("rec_evaluate", "like-rate baseline AUC", "baseline", "auc", (3, ""), None),
    ("rec_evaluate", "LLM - baseline AUC (paired)", "llm_minus_baseline", "auc", (3, "+"), None),
    ("pref_rm", "held-out pairwise accuracy", "heldout", "accuracy", (3, ""), ci_low_above(0.55, n=400)),
    ("pref_rm", "accuracy, rare bucket", "heldout_buckets.rare", "accuracy", (3, ""), None),
    ("pref_rm", "accuracy, common bucket", "heldout_buckets.common", "accuracy", (3, ""), None),
    ("pref_dpo", "held-out implicit-reward accuracy (every held-out pair)", "heldout", "reward_accuracy", (3, ""),
     ci_low_above(0.5)),
    ("pref_dpo", "held-out reward margin", "heldout", "reward_margin", (4, "+"), None),
    ("pref_dpo", "chosen and rejected identical after truncation", "heldout",
     "identical_after_truncation_fraction", (3, ""), zero()),
    ("pref_grpo", "held-out RM reward, after - before (paired)", "eval_reward", "delta", (3, "+"), ci_low_above(0, n=64)),
    ("reason_verifier", "AUC", "heldout", "auc", (3, ""), ci_low_above(0.5)),
    ("reason_verifier", "MSE - train-mean MSE (paired)", "heldout", "mse_minus_baseline", (4, "+"), ci_high_below(0)),
    ("reason_filter", "code pass rate", "by_domain.code", "pass_rate", (3, ""), accepted("code")),
    ("reason_filter", "math pass rate", "by_domain.math", "pass_rate", (3, ""), accepted("math")),
]


def results(root: Path) -> list[str]:
    rows = []
    for stage, label, block, metric, fmt, target in RESULTS:
        metrics, facts = _json(root, f"metrics/{stage}.json"), _json(root, f"metrics/{stage}_run.json")
        b = _get(metrics, block)
        e = {"value": b[metric], "ci_low": b[f"{metric}_ci_low"], "ci_high": b[f"{metric}_ci_high"], "n": b["n"]}
        digits, sign = fmt
        value = f"{num(e['value'], digits, sign)} [{num(e['ci_low'], digits)}, {num(e['ci_high'], digits)}]"
        item, cluster = UNITS[stage]
        k = _get(facts["n_clusters"], block)
        n = f"{e['n']} {item}" + (f", {k} {cluster}" if k != e["n"] else "")
        if stage == "pref_rm" and block == "heldout":
            label += " (density-aware)" if facts["density_aware"] else " (uniform)"
        goal = "reported" if target is None else (
            f"{target[0]}: " + ("met" if target[1](e, facts) else "**not met**"))
        rows.append([stage, label, value, n, goal])
    return _table(["stage", "metric", "value [95% CI]", "n", "target (issue 28)"], ["---"] * 5, rows)


# --- the paired density-aware vs uniform comparison --------------------------------------------

# --- bench outputs ---------------------------------------------------------------------------

def _provenance(d: dict, name: str) -> str:
    cpu = d.get("cpu") or "not recorded"
    line = f"From `{RESULTS_DIR}/{name}.json` (`{d['command']}`, {d.get('date', 'undated')}, CPU: {cpu})."
    return line + (f" Source: {d['source']}" if "source" in d else "")


def _s(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def repro_times(root: Path, top: int = 10) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/repro_times.json")
    prev = d.get("previous") or {}
    total = d["total_s"]
    ranked = sorted(d["stages_s"].items(), key=lambda kv: -kv[1])
    shown, rest = ranked[:top], ranked[top:]
    other_n = len(rest) + d.get("other_stages", {}).get("count", 0)
    other_s = sum(s for _, s in rest) + d.get("other_stages", {}).get("s", 0)
    prev_other = prev.get("other_stages", {}).get("s")

    def before(stage):
        if stage in prev.get("stages_s", {}):
            return f"{prev['stages_s'][stage]:,.0f}"
        return "skipped" if stage in prev.get("skipped", []) else ""

    rows = [[name + (f" ({d['notes'][name]})" if name in d.get("notes", {}) else ""), f"{s:,.0f}",
             f"{s / total:.0%}", before(name)] for name, s in shown]
    if other_n:
        rows.append([f"the other {other_n} stages", f"{other_s:,.0f}", f"{other_s / total:.0%}",
                     "" if prev_other is None else f"{prev_other:,.0f}"])
    rows.append(["**total**", f"**{total:,.0f} ({total / 60:.1f} min)**", "",
                 f"{prev['total_s']:,.0f} ({prev['total_s'] / 60:.1f} min)" if prev else ""])
    out = _table(["stage", "seconds", "share of `dvc repro`", f"before ({prev.get('date', '-')})"],
                 ["---", "---:", "---:", "---:"], rows)
    if "setup_s" in d:
        out += ["", f"`make repro` in all: {d['setup_s'] + total:,.0f} s ({(d['setup_s'] + total) / 60:.1f} min), "
                    f"of which `make setup` {d['setup_s']:,.0f} s and `dvc repro` {total:,.0f} s."]
    return out + ["", _provenance(d, "repro_times")]


def bench_density(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/density.json")
    by = {(r["method"], r["n"]): r for r in d["results"]}

    def secs(r):
        return "" if r is None else f"{_s(r['seconds'])} s" + ("*" if "queries" in r else "")

    rows = []
    for n in sorted({r["n"] for r in d["results"]}):
        f, sk, p = by.get(("faiss", n)), by.get(("sklearn", n)), by.get(("pynndescent", n))
        rss = " / ".join("-" if r is None else f"{r['peak_mb']:,.0f}" for r in (f, sk, p)) + " MB"
        rows.append([f"{n:,}", secs(f), secs(sk), f"{secs(p)} (+{p['compile_s']:.0f} s)" if p else "",
                     f"{p['recall']:.3f}" if p else "", rss])
    out = _table(["n", "faiss exact (ours)", "sklearn brute", "pynndescent fit (+ numba compile)",
                  f"pynndescent recall@{d['k']}", "peak RSS faiss / sklearn / pynndescent"],
                 ["---:"] * 5 + ["---"], rows)
    return out + ["", f"`*` = {d['queries']:,} sampled queries searched against all n, time scaled by "
                      f"n / {d['queries']:,}. " + _provenance(d, "density")]


GEN_LABELS = {"llamacpp": "**llamacpp** (`reason.backend: llamacpp`, the default)",
              "llamacpp-q4_1": "llamacpp, the GGUF's Q4_1 as stored",
              "posttrain": "posttrain hf (`reason.backend: hf`)",
              "hf": "transformers `generate`, one padded batch", "hf-bf16": "transformers, bf16 weights",
              "hf-static": "transformers, static cache + torch.compile"}


def bench_generate(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/generate.json")
    res = d["results"]
    sizes = list(next(iter(res.values()))["tok_s"])
    base = res.get("posttrain", {}).get("tok_s", {}).get("8")
    ct2 = d.get("versions", {}).get("ctranslate2", "")
    rows = []
    for name, r in res.items():
        label = GEN_LABELS.get(name) or f"CTranslate2 {ct2}".strip()
        vs = f"{r['tok_s']['8'] / base:.2f}x" if base and "8" in r["tok_s"] else "-"
        rows.append([label, r["weights"].replace("gguf", "Q4_1"), *(f"{r['tok_s'][b]:.1f}" for b in sizes),
                     f"**{vs}**" if name == "llamacpp" else vs,
                     ", ".join(f"{r['roofline_ratio'][b]:.2f}" for b in sizes)])
    out = _table(["path", "weights", *(f"batch {b} tok/s" for b in sizes), "x posttrain hf at 8",
                  "/ roofline at " + ", ".join(sizes)], ["---", "---"] + ["---:"] * (len(sizes) + 1) + ["---"], rows)
    m, w = d["machine"], d["weights_gb"]
    out += ["", f"Machine: {m['read_gb_s']:.1f} GB/s read, {m['gflops_fp32']:.0f} GFLOP/s fp32 / "
                f"{m['gflops_bf16']:.0f} GFLOP/s bf16 matmul at {d['threads']} threads; weights read per decode step: "
                + ", ".join(f"{k.replace('gguf', 'the Q4_1 file')} {v:.2f} GB" for k, v in w.items())
                + f"; {d['new_tokens']} new tokens. " + _provenance(d, "generate")]
    return out


def bench_gen_cache(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/gen_cache.json")
    rows, prev = [], None
    labels = {"+1 sample": "+1 sample per problem"}
    for s in d["steps"]:
        label = labels.get(s["name"], s["name"])
        if prev is not None and s["rows"] != prev:
            label += f" ({s['rows'] / prev - 1:+.0%} rows)"
        frac = f"{s['of_full']:.0%}" if s["of_full"] >= 0.1 or s["of_full"] == 0 else f"{s['of_full']:.1%}"
        rows.append([label, s["rows"], s["generated"], s["cache_hits"], f"{s['seconds']:.1f}", frac])
        prev = s["rows"]
    out = _table(["run", "rows", "generated", "from the cache", "seconds", "of full"], ["---"] + ["---:"] * 5, rows)
    same = {True: "equal", False: "**differ from**"}[d["cached_rows_equal_fresh"]]
    return out + ["", f"Cached rows {same} a fresh run's. " + _provenance(d, "gen_cache")]


def bench_launch(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/launch.json")
    rows = [[r["num_processes"], r["steps"], r["global_batch"], f"{r['speedup']:.2f}x"] for r in d["runs"]]
    out = _table(["processes", "steps", "global batch", "speed vs 1 process"], ["---:"] * 4, rows)
    return out + ["", _provenance(d, "launch")]


def bench_bootstrap(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/bootstrap.json")
    rows = [[r["case"], f"{r['resamples']:,}", f"{r['seconds']:.3f}", f"{r['ci_low_sd']:.4f}"] for r in d["results"]]
    out = _table(["CI of", "resamples", "seconds per CI", "sd of its lower bound over bootstrap seeds"],
                 ["---", "---:", "---:", "---:"], rows)
    return out + ["", _provenance(d, "bootstrap")]


def bench_density_weights(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/density_weights.json")
    rows = [[r["power"], "none" if r["cap_quantile"] == 1 else r["cap_quantile"], f"{r['rare_vs_common']:,.1f}x",
             f"{r['max_min']:,.0f}", f"{r['ess_fraction']:.1%}", "**yes**" if r["meets_contract"] else ""]
            for r in d["results"]]
    out = _table(["power", "cap_quantile", "rare / common draws (top vs bottom quarter)", "max / min weight",
                  "Kish ESS / prompts", "50-100x at ESS >= 30%"], ["---:"] * 5 + ["---"], rows)
    moved = [r for r in d["results"] if not r["same_buckets"]]
    return out + ["", f"{d['prompts']:,} prompts, k={d['k']}, eps={d['eps']}; embeddings {d['embeddings']}. "
                      + ("No setting moves a prompt between pref_rm's rarity buckets. " if not moved else
                         f"{len(moved)} settings move prompts between pref_rm's rarity buckets. ")
                  + _provenance(d, "density_weights")]


def _reuse(a: dict) -> str:
    """Share of the trunk's sequences served from its cache."""
    n = a.get("trunk_reused", 0) + a.get("trunk_computed", 0)
    return f"{a.get('trunk_reused', 0) / n:.0%}" if n else "-"


def bench_train(root: Path) -> list[str]:
    d = _json(root, f"{RESULTS_DIR}/train.json")
    names = {"rec": "rec_finetune (LoRA SFT)", "rm": "pref_rm (reward model)", "dpo": "pref_dpo (DPO, LoRA)",
             "grpo": "pref_grpo (GRPO, LoRA)", "verifier": "reason_verifier (regression)"}
    rows = []
    for name, r in d["results"].items():
        b, a = r["before"], r["after"]
        rows.append([names.get(name, name), f"{b['tokens_per_s']:,.0f}", f"{a['tokens_per_s']:,.0f}",
                     f"**{a['tokens_per_s'] / b['tokens_per_s']:.2f}x**", f"{a['examples_per_s']:.2f}",
                     f"{a['flops_per_token'] / 1e9:.2f}", a["trunk_layers"], _reuse(a),
                     f"{b.get('steps', d['steps'])} / {a.get('steps', d['steps'])}", f"{b['of_fp32_peak']:.0%}",
                     f"{a['of_bf16_peak']:.0%}"])
    out = _table(["trainer", "before tok/s", "after tok/s", "after / before", "after ex/s", "GFLOP / token",
                  "cached trunk layers", "after: trunk reused", "steps before / after", "before: of fp32 peak",
                  "after: of bf16 peak"],
                 ["---"] + ["---:"] * 10, rows)
    if d["steps"] == "default":
        steady = any(r["before"].get("steady_tokens_per_s") for r in d["results"].values())
        timing = (f"After: each stage's whole default schedule (params.yaml's max_steps), setup and first step "
                  f"included, so sequences drawn again skip the cached trunk as in the stage; before (nothing "
                  f"cached, the same cost every step): the first {d['before_steps']} steps of that schedule"
                  + (", timed from the end of the first (steady state, without setup and warm-up)" if steady else "")
                  + ". ")
    else:
        timing = f"{d['steps']} optimizer steps each (a slice: it understates what the cache gives a full run). "
    m = d["machine"]
    return out + ["", f"Before: fp32, the full forward every step, trl's LM head over every position, rollouts "
                      f"prefilling every row in fp32, rec's LoRA on all 30 layers, pref_rm's random batches, glibc's malloc "
                      f"as it comes. After: "
                      f"precision {d['auto_precision']} (auto, rollouts included), the frozen trunk (shared prefixes run "
                      f"once, in the trainable layers too), the labelled-positions head (and the RM's and verifier's top "
                      f"layer at the pooled token), frozen weights cast to bf16 once, each rollout prompt prefilled once, length-grouped RM batches (pairs truncated together), "
                      f"freed memory kept for the next step (`train.reuse_freed_memory`), params.yaml's placements. "
                      f"Each run in a process of its own. "
                      f"Trunk reused: the share of trunk sequences served from its cache ('-': GRPO's left-padded "
                      f"batches run the trunk directly, once per forward). GFLOP / token and the peak fractions "
                      f"count model FLOPs: cached trunk layers and the head at unlabelled positions count as "
                      f"computed, so work skipped shows up as a fraction above what the matmuls alone reach. "
                      + timing + f"{d['threads']} threads; matmul peak "
                      f"{m['gflops_fp32']} GFLOP/s fp32, {m['gflops_bf16']} bf16 (flags: "
                      f"{' '.join(d['flags']) or 'none'}). " + _provenance(d, "train")]


def bench_train_pairs(root: Path) -> list[str]:
    """bench/results/train_pairs.json (`bench/train.py --pairs N`): the ratio over repeated pairs."""
    d = _json(root, f"{RESULTS_DIR}/train_pairs.json")
    rows = [[name, r["n"], f"**{r['ratio']:.2f}x** [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]",
             ", ".join(f"{x['after'] / x['before']:.2f}" for x in r["pairs"]),
             f"{min(x['before'] for x in r['pairs']):,.0f}-{max(x['before'] for x in r['pairs']):,.0f}",
             f"{min(x['after'] for x in r['pairs']):,.0f}-{max(x['after'] for x in r['pairs']):,.0f}"]
            for name, r in d["results"].items()]
    return _table(["trainer", "pairs", "after / before, geometric mean [95% CI]", "each pair's ratio",
                   "before tok/s", "after tok/s"], ["---", "---:", "---", "---", "---:", "---:"], rows) + [
        "", f"Pairs back to back, each run in a process of its own, as in the table above (before: "
            f"{d['before_steps']} steps, steady state; after: the whole default schedule); the CI is a t-interval "
            f"over the pairs' log ratios. {d['threads']} threads (flags: {' '.join(d['flags']) or 'none'}). "
        + _provenance(d, "train_pairs")]


def learning_curves(root: Path) -> list[str]:
    """bench/results/curves/<trainer>[-<label>].json (bench/learning_curve.py): one row per point."""
    labels = {"rec": ("rec_finetune", "rows (one epoch)", "LLM AUC, eval split"),
              "rm": ("pref_rm", "steps", "pairwise accuracy, validation prefixes"),
              "dpo": ("pref_dpo", "steps", "implicit-reward accuracy, validation prefixes"),
              "verifier": ("reason_verifier", "steps", "AUC, validation problems"),
              "grpo": ("pref_grpo", "steps", "RM reward after - before, validation prompts")}
    rows, cmds = [], []
    for path in sorted((root / RESULTS_DIR / "curves").glob("*.json")):
        d = json.loads(path.read_text(encoding="utf-8"))
        stage, size, metric = labels[d["trainer"]]
        setting = ", ".join(d.get("overrides") or []) or "params.yaml"
        for pt in d["points"]:
            if "baseline_auc" in pt:
                extra = f"baseline {pt['baseline_auc']:.3f} [{pt['baseline_ci'][0]:.3f}, {pt['baseline_ci'][1]:.3f}]"
            elif "mse_minus_baseline" in pt:
                lo, hi = pt["mse_minus_baseline_ci"]
                extra = f"MSE - train-mean MSE {pt['mse_minus_baseline']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            elif "before" in pt:
                extra = f"reward {pt['before']:.3f} -> {pt['after']:.3f}"
            else:
                extra = f"{pt.get('train_pairs', '')} training pairs"
            rows.append([stage, setting, f"{pt['size']:,} {size}", metric,
                         f"{pt['value']:.3f} [{pt['ci_low']:.3f}, {pt['ci_high']:.3f}]", pt["n"],
                         f"{pt['train_s']:.0f}", extra])
        cmds.append(f"`{d['command']}` ({d['date']}, CPU: {d.get('cpu') or 'not recorded'})")
    out = _table(["stage", "setting", "training size", "metric (validation)", "value [95% CI]", "n", "train s",
                  "beside it"], ["---", "---", "---:", "---", "---", "---:", "---:", "---"], rows)
    return out + ["", "From `bench/results/curves/*.json`: " + "; ".join(cmds) + "."]


def density_sweep(root: Path) -> list[str]:
    """bench/results/density_sweep.json (`posttrain sweep collect`), as the sweep's own tables."""
    from posttrain.core.sweep import to_markdown

    d = _json(root, f"{RESULTS_DIR}/density_sweep.json")
    return to_markdown(d).rstrip("\n").split("\n")


BLOCKS = {"results": results, "repro-times": repro_times,
          "bench-density": bench_density, "bench-generate": bench_generate, "bench-gen-cache": bench_gen_cache,
          "bench-launch": bench_launch, "bench-bootstrap": bench_bootstrap,
          "bench-density-weights": bench_density_weights, "bench-train": bench_train,
          "bench-train-pairs": bench_train_pairs,
          "learning-curves": learning_curves, "density-sweep": density_sweep}


def render(text: str, root: Path, where: str = "") -> str:
    def block(m):
        if m.group(2) not in BLOCKS:
            raise click.ClickException(f"{where}: unknown block report:{m.group(2)} (known: {', '.join(BLOCKS)})")
        return m.group(1) + "\n".join(BLOCKS[m.group(2)](root)) + "\n" + m.group(4)

    return MARK.sub(block, text)


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check(root: Path) -> str:
    """A unified diff of every document whose blocks disagree with the files ('' if none)."""
    out = []
    for p in documents(root):
        old = p.read_text(encoding="utf-8")
        new = render(old, root, str(p.relative_to(root)))
        name = str(p.relative_to(root))
        out += difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, f"{name} (posttrain report)")
    return "".join(out)


# --- what the bench scripts call to save their results --------------------------------------

def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def save_bench(name: str, data: dict, root: Path | None = None) -> Path:
    """bench/results/<name>.json: the figures plus the command, date, commit and CPU model."""
    root = root or Path(__file__).resolve().parents[3]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    meta = {"command": " ".join(["python", *sys.argv]), "cpu": cpu_model(),
            "date": datetime.date.today().isoformat(), "commit": commit.stdout.strip() or None}
    path = root / RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, **data}, indent=2) + "\n", encoding="utf-8")
    click.echo(f"saved {path.relative_to(root)}", err=True)
    return path


@click.command("report")
@click.option("--check", "check_only", is_flag=True,
              help="Change nothing; exit 1 with a diff if a block is stale.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="The project's root.")
def command(check_only, root):
    """Rewrite the generated blocks of README.md and docs/*.md from metrics/ and bench/results/."""
    if check_only:
        diff = check(root)
        if diff:
            click.echo(diff, nl=False)
            raise SystemExit("posttrain report: README/docs disagree with the files; run `posttrain report`")
        click.echo("posttrain report: every block agrees with the files")
        return
    for p in documents(root):
        old = p.read_text(encoding="utf-8")
        new = render(old, root, str(p))
        if new != old:
            p.write_text(new, encoding="utf-8")
            click.echo(f"rewrote {p.relative_to(root)}")


if __name__ == "__main__":
    from posttrain.core.cli import run

    run(command, prog="posttrain report")
