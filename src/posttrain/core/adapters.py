"""Saving peft adapters with bytes that depend only on the adapter.

peft keeps set-valued config fields (`target_modules`, after it resolves them) as
Python sets and writes them to `adapter_config.json` as `list(set)`: string-set order
follows the per-process hash seed (PYTHONHASHSEED), so two identical trainings wrote
different config bytes and DVC saw a changed output. `save_adapter` saves through
peft, then rewrites those fields as sorted lists in peft's own layout
(indent 2, sorted keys). Every adapter save (rec_finetune, pref_dpo, pref_grpo) goes
through it.
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
