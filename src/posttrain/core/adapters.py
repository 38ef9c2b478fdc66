"""Saving peft adapters with bytes that depend only on the adapter.

peft keeps set-valued config fields (`target_modules`, after it resolves them) as
Python sets and writes them to `adapter_config.json` as `list(set)`: string-set order
follows the per-process hash seed (PYTHONHASHSEED), so two identical trainings wrote
different config bytes and DVC saw a changed output. `save_adapter` saves through
peft, then rewrites those fields as sorted lists in peft's own layout
(indent 2, sorted keys). Every adapter save (rec_finetune, pref_dpo, pref_grpo) goes
through it. `lora_config` is the pref trainers' LoRA (all linear layers, or the top ones).
"""

from __future__ import annotations

import json
from pathlib import Path

from posttrain.core.io import atomic_open

CONFIG_NAME = "adapter_config.json"


def save_adapter(model, folder) -> None:
    """`model.save_pretrained(folder)` for a peft model, set-valued config fields sorted."""
    folder = Path(folder)
    model.save_pretrained(str(folder))
    set_fields = {k for cfg in model.peft_config.values() for k, v in cfg.to_dict().items() if isinstance(v, set)}
    if not set_fields:
        return
    # One adapter per folder here (peft writes extra adapters to subfolders).
    path = folder / CONFIG_NAME
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in set_fields & set(cfg):
        if isinstance(cfg[key], list):
            cfg[key] = sorted(cfg[key])
    with atomic_open(path) as fh:
        fh.write(json.dumps(cfg, indent=2, sort_keys=True))  # peft's layout, no trailing newline


def lora_config(r: int, alpha: int, dropout: float, task_type: str, modules_to_save=None,
                top_layers: int = 0, model=None, targets: list[str] | str = "all-linear"):
    """peft LoRA on `targets` (module names, or all linear layers) of the top `top_layers` of
    the decoder layers when top_layers > 0 (backward then stops there, and the frozen layers
    below are computed once, `posttrain.core.trunk`), or None when r == 0 (full fine-tune)."""
    if not r:
        return None
    from peft import LoraConfig

    import torch

    kw = {}
    n_layers = int(getattr(model.config, "num_hidden_layers", 0)) if model is not None else 0
    if top_layers and n_layers and top_layers < n_layers and targets == "all-linear":
        # peft allows layers_to_transform only with explicit module names, not "all-linear".
        targets = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                          if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}"})
    if top_layers and n_layers and top_layers < n_layers:
        kw["layers_to_transform"] = list(range(n_layers - top_layers, n_layers))
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      task_type=task_type, modules_to_save=modules_to_save, **kw)
