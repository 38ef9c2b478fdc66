"""posttrain plan: exact parameter counts from meta-device models, estimates, device warnings."""

from pathlib import Path

import yaml
from click.testing import CliRunner

from posttrain.core import plan

REPO = Path(__file__).resolve().parents[2]


def tiny_params(tiny_model_dir) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"]["policy"] = str(tiny_model_dir)
    params["pref"]["rm"]["backbone"] = str(tiny_model_dir)
    params["reason"]["model"] = str(tiny_model_dir)
    return params


def test_counts_match_the_stages_real_models(tiny_model_dir):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from posttrain.core.models import shrink_layers
    from posttrain.core.adapters import lora_config

    params = tiny_params(tiny_model_dir)
    params["pref"]["dpo"]["lora_layers"] = 1
    rows = {r["stage"]: r for r in plan.plan(params)}
    assert set(rows) == {"rec_finetune", "pref_rm", "pref_dpo", "pref_grpo", "reason_verifier"}
    dpo = params["pref"]["dpo"]
    real = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    real = get_peft_model(real, lora_config(dpo["lora_r"], dpo["lora_alpha"], 0.0, "CAUSAL_LM", top_layers=1,
                                            model=real))
    trainable, total = real.get_nb_trainable_parameters()
    r = rows["pref_dpo"]
    assert (r["params"], r["trainable"]) == (total, trainable)
    assert (r["layers"], r["backward_layers"]) == (2, 1)  # LoRA on the top 1 of 2: backward through 1
    assert r["tokens_per_step"] == 2 * dpo["batch_size"] * dpo["max_length"] * dpo["grad_accum"]
    # the verifier's shrunk backbone: the same count as shrinking the real model
    from transformers import AutoModelForSequenceClassification

    v = params["reason"]["verifier"]
    cls = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    cls = shrink_layers(cls, num_layers=v["num_layers"], trainable_layers=v["trainable_layers"])
    assert rows["reason_verifier"]["trainable"] == sum(p.numel() for p in cls.parameters() if p.requires_grad)
    for row in rows.values():
        est = row["estimate"]
        assert est["total"] > est["weights"] > 0 and row["peak_gib"] == est["total_gib"]
    # longer sequences cost more activation memory
    params["pref"]["dpo"]["max_length"] *= 4
    longer = {r["stage"]: r for r in plan.plan(params)}["pref_dpo"]["estimate"]
    assert longer["activations"] == 4 * r["estimate"]["activations"]


def test_command_prints_every_stage_and_warns_past_the_device(tiny_model_dir, tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tiny_model_dir)))
    res = CliRunner().invoke(plan.command, ["--params", str(path)])
    assert res.exit_code == 0, res.output
    for stage in ("rec_finetune", "pref_rm", "pref_dpo", "pref_grpo", "reason_verifier"):
        assert f"| {stage} |" in res.output
    assert "warning" not in res.output
    monkeypatch.setattr(plan, "device_memory", lambda: ("a tiny device", 1024))
    res = CliRunner().invoke(plan.command, ["--params", str(path), "-S", "pref.dpo.batch_size=64"])
    assert res.exit_code == 0 and "warning: pref_dpo needs" in res.output and "a tiny device" in res.output
    assert "| 128 x 192 |" in res.output  # the -S override: 64 pairs = 128 sequences


def test_a_model_without_a_config_is_reported_not_fatal(tiny_model_dir, tmp_path):
    params = tiny_params(tiny_model_dir)
    params["reason"]["model"] = str(tmp_path / "missing")
    rows = {r["stage"]: r for r in plan.plan(params)}
    assert "error" in rows["reason_verifier"] and "estimate" in rows["pref_dpo"]
