"""`posttrain plan`: each training stage's estimated peak memory and tokens per step,
for the current params, before anything runs.

The model is built from its config on the meta device (no weights read, no memory
used), shaped as the stage shapes it (kept layers, LoRA on the same modules through
the same helpers), so the parameter and trainable counts are exact; the memory is then
`posttrain.core.memory.estimate_batch_memory` at the stage's sequences per step and
its length bound (cutoff_len / max_length: the worst case, not the typical row), in
fp32 as the stages load weights (bf16 autocast on a GPU roughly halves activations).
Compute per step is 2 N T for the forward pass plus 4 N T scaled by the share of
layers the backward pass runs through (N parameters, T tokens); DPO's reference
forward and GRPO's generation come on top.
The estimate is warned about when it exceeds the visible device: the free memory of
CUDA device 0, else the machine's available RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from posttrain.core.memory import estimate_batch_memory


def _model_ref(params: dict, ref: str) -> str:
    """data/models/policy is what base_models makes of models.policy: the folder when it
    was made from that source, else the source itself (the folder may be stale)."""
    if ref != "data/models/policy":
        return ref
    meta = Path(ref) / "posttrain_source.json"
    if meta.is_file() and (Path(ref) / "config.json").is_file():
        from posttrain.core.io import read_json

        if read_json(meta).get("source") == params["models"]["policy"]:
            return ref
    return params["models"]["policy"]


def _config(ref: str):
    from transformers import AutoConfig

    from posttrain.core import assets

    src = assets.resolve(ref)
    if isinstance(src, Path) and src.suffix == ".gguf":
        from posttrain.core.models import load_source  # the GGUF's own config; weights not kept

        model, _ = load_source(ref)
        return model.config
    return AutoConfig.from_pretrained(str(src))


def _meta_model(config, kind: str):
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = copy.deepcopy(config)  # shrinking a model edits its config
    with torch.device("meta"):
        if kind == "causal":
            return AutoModelForCausalLM.from_config(config)
        config.num_labels = 1  # a scalar head, as pref_rm and reason_verifier build it
        return AutoModelForSequenceClassification.from_config(config)


def _counts(model) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def _layers(model) -> tuple[int, int]:
    """(decoder layers kept, layers the backward pass runs through): activations are saved
    only from the lowest layer with a trainable parameter up."""
    import torch

    stack = next((m for n, m in model.named_modules()
                  if n.rsplit(".", 1)[-1] == "layers" and isinstance(m, torch.nn.ModuleList)), None)
    if stack is None:
        return 0, 0
    trainable = [i for i, layer in enumerate(stack) if any(p.requires_grad for p in layer.parameters())]
    return len(stack), (len(stack) - trainable[0]) if trainable else 0


def _lora(model, r: int, alpha: int, task: str, top_layers: int = 0, targets=None):
    """The stage's LoRA on the meta model: pref's helper (all linear, top layers), or
    rec's explicit target modules."""
    from peft import LoraConfig, get_peft_model

    from posttrain.core.adapters import lora_config

    cfg = (LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, task_type=task) if targets is not None
           else lora_config(r, alpha, 0.0, task, top_layers=top_layers, model=model))
    return get_peft_model(model, cfg)


def _shrunk(model, num_layers: int, trainable_layers: int):
    from posttrain.core.models import shrink_layers

    return shrink_layers(model, num_layers=num_layers, trainable_layers=trainable_layers)


def stage_shapes(params: dict) -> list[dict]:
    """Per training stage: model ref, head kind, sequences per step and process, length
    bound, grad accumulation, processes, weight dtype, and how its model is shaped."""
    rec, pref, reason = params["rec"], params["pref"], params["reason"]
    ft, rm, dpo, grpo, ver = rec["finetune"], pref["rm"], pref["dpo"], pref["grpo"], reason["verifier"]
    targets = ft["target_modules"]
    targets = targets if targets == "all-linear" else [t.strip() for t in str(targets).split(",")]
    return [
        {"stage": "rec_finetune", "model": "data/models/policy", "kind": "causal", "seqs": ft["batch_size"],
         "seq_len": rec["cutoff_len"], "grad_accum": ft["grad_accum"], "processes": ft["num_processes"],
         "dtype": "nf4" if ft["quantization"] == "4bit" else "float32",
         "shape": lambda m: _lora(m, ft["lora_r"], ft["lora_alpha"], "CAUSAL_LM", targets=targets)},
        {"stage": "pref_rm", "model": rm["backbone"], "kind": "reward", "seqs": 2 * rm["batch_size"],
         "seq_len": rm["max_length"], "grad_accum": rm["grad_accum"], "processes": rm["num_processes"],
         "dtype": "float32",
         "shape": lambda m: (_lora(_shrunk(m, rm["num_layers"], -1), rm["lora_r"], rm["lora_alpha"], "SEQ_CLS")
                             if rm["lora_r"] else _shrunk(m, rm["num_layers"], rm["trainable_layers"]))},
        {"stage": "pref_dpo", "model": "data/models/policy", "kind": "causal", "seqs": 2 * dpo["batch_size"],
         "seq_len": dpo["max_length"], "grad_accum": dpo["grad_accum"], "processes": dpo["num_processes"],
         "dtype": "float32",
         "shape": lambda m: _lora(m, dpo["lora_r"], dpo["lora_alpha"], "CAUSAL_LM", top_layers=dpo["lora_layers"])},
        {"stage": "pref_grpo", "model": "data/models/policy", "kind": "causal", "seqs": grpo["batch_size"],
         "seq_len": grpo["max_length"], "grad_accum": 1, "processes": grpo["num_processes"], "dtype": "float32",
         "shape": lambda m: _lora(m, grpo["lora_r"], grpo["lora_alpha"], "CAUSAL_LM", top_layers=grpo["lora_layers"])},
        {"stage": "reason_verifier", "model": reason["model"], "kind": "reward", "seqs": ver["batch_size"],
         "seq_len": ver["max_length"], "grad_accum": 1, "processes": ver["num_processes"], "dtype": "float32",
         "shape": lambda m: _shrunk(m, ver["num_layers"], ver["trainable_layers"])},
    ]


def device_memory() -> tuple[str, int]:
    """(name, bytes) of what a stage would get: CUDA device 0's free memory, else available RAM."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(0)
        return f"cuda:0 {torch.cuda.get_device_name(0)} (free)", int(free)
    return "cpu RAM (available)", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def plan(params: dict) -> list[dict]:
    rows, configs = [], {}
    for s in stage_shapes(params):
        ref = _model_ref(params, s["model"])
        if ref not in configs:
            try:
                configs[ref] = _config(ref)
            except (OSError, ValueError) as e:  # a hub id offline, a missing folder
                configs[ref] = e
        config = configs[ref]
        if isinstance(config, Exception):
            rows.append({"stage": s["stage"], "model": ref, "error": f"no config: {str(config).splitlines()[0][:120]}"})
            continue
        model = s["shape"](_meta_model(config, s["kind"]))
        n_params, n_trainable = _counts(model)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers, backward = _layers(model)
        est = estimate_batch_memory(
            n_params=n_params, batch_size=s["seqs"], seq_len=s["seq_len"], hidden_size=text.hidden_size,
            num_layers=max(backward, 1), dtype=s["dtype"], n_trainable=n_trainable,
            vocab_size=text.vocab_size if s["kind"] == "causal" else None)
        rows.append({"stage": s["stage"], "model": ref, "params": n_params, "trainable": n_trainable,
                     "layers": layers, "backward_layers": backward, "seqs_per_step": s["seqs"], "seq_len": s["seq_len"],
                     "tokens_per_step": s["seqs"] * s["seq_len"] * s["grad_accum"] * s["processes"],
                     "processes": s["processes"], "peak_gib": est["total_gib"], "estimate": est,
                     # forward 2 N T over every layer, backward 4 N T over the layers it runs through
                     "tflop_per_step": (2 + 4 * backward / max(layers, 1)) * n_params
                     * s["seqs"] * s["seq_len"] * s["grad_accum"] / 1e12})
    return rows


@click.command("plan")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--profile", "profiles", multiple=True,
              help="Apply profiles/<name>.yaml (or a path) over the params first, as `posttrain-profile apply` does.")
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a param, as `dvc exp run -S` does (YAML value), e.g. -S pref.dpo.batch_size=2 "
                   "or -S models.policy=path/to/a/config/folder.")
def command(params_path, profiles, overrides):
    """Estimated peak memory and tokens per step of each training stage, for these params."""
    import yaml

    from posttrain.core.profiles import deep_merge, load_profile, load_yaml

    params = load_yaml(params_path)
    for name in profiles:
        params = deep_merge(params, load_profile(name, Path(params_path).parent))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="-S")
        node = params
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    device, available = device_memory()
    rows = plan(params)
    click.echo(f"device: {device}, {available / 2**30:.1f} GiB")
    click.echo("| stage | model | params | trainable | layers (backward) | seqs/step x len | tokens/step "
               "| est. peak GiB / process | TFLOP / step / process |")
    click.echo("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            click.echo(f"| {r['stage']} | {r['model']} | {r['error']} | | | | | | |")
            continue
        click.echo(f"| {r['stage']} | {r['model']} | {r['params'] / 1e6:.1f}M | {r['trainable'] / 1e6:.2f}M | "
                   f"{r['layers']} ({r['backward_layers']}) | {r['seqs_per_step']} x {r['seq_len']} | {r['tokens_per_step']:,} | "
                   f"{r['peak_gib']:.2f} | {r['tflop_per_step']:.2f} |")
    for r in rows:
        if "estimate" in r and r["estimate"]["total"] > available:
            click.echo(f"warning: {r['stage']} needs ~{r['peak_gib']:.1f} GiB per process, more than the "
                       f"{available / 2**30:.1f} GiB of {device}: lower its batch_size or length, or use a "
                       f"bigger device", err=True)
