"""Every pref trainer learns: on a handful of pairs, a tiny model's training changes what it
should. Each assertion fails when the optimizer step is a no-op (checked by hand with lr=0).
"""

import json

import numpy as np
import pytest

from test_train import DPO, GRPO, RM, _paths, dpo_train, grpo_train, rm_train, write_pref_fixture


def curve(live_dir, key):
    rows = (live_dir / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()[1:]
    return np.array([float(r.split("\t")[1]) for r in rows])


@pytest.fixture(scope="module")
def few_pairs(tmp_path_factory):
    # 4 prompts x 2 pairs, always the same chosen/rejected style: learnable in a few steps.
    return write_pref_fixture(tmp_path_factory.mktemp("few"), n_common=3, n_rare=3, pairs_per_prefix=2)


@pytest.fixture(scope="module")
def learned_rm(few_pairs, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm_learn")
    res = rm_train(*_paths(few_pairs), tiny_model_dir, root / "rm", **{
        **RM, "density_aware": False, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 24,
        "batch_size": 4, "lr": 3e-3, "num_layers": 2, "trainable_layers": 1, "seed": 0},
        live_dir=root / "dvclive")
    return root, res


def test_reward_model_loss_falls_and_heldout_ranks_chosen_first(learned_rm):
    root, res = learned_rm
    loss = curve(root / "dvclive", "loss")
    assert loss[0] == pytest.approx(np.log(2), abs=0.1)  # Bradley-Terry starts near ln 2
    assert loss[-4:].mean() < 0.5 * loss[0], loss  # and at least halves
    # Held-out prompts are unseen, the answer style is shared: the RM generalizes to it.
    assert res["metrics"]["heldout"]["accuracy"] == 1.0


def test_dpo_reward_accuracy_rises_and_loss_falls_below_ln2(few_pairs, tiny_model_dir, tmp_path):

    dpo_train(*_paths(few_pairs), tiny_model_dir, tmp_path / "dpo", **{
        **DPO, "density_aware": False, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 16,
        "batch_size": 4, "lr": 5e-3, "beta": 0.5, "lora_r": 8, "lora_alpha": 16, "lora_layers": 0, "seed": 0},
        live_dir=tmp_path / "dvclive")
    loss = curve(tmp_path / "dvclive", "loss")
    acc = curve(tmp_path / "dvclive", "rewards/accuracies")
    assert loss[0] == pytest.approx(np.log(2), abs=1e-3)  # the adapter starts as the reference
    assert loss[-4:].mean() < 0.5, loss
    assert acc[-4:].mean() > 0.5, acc


def test_grpo_changes_the_greedy_output_on_a_training_prompt(few_pairs, tiny_model_dir, learned_rm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.core.io import read_json
    from posttrain.pref.grpo import generate, load_prefixes, split_prompts

    root, _ = learned_rm
    kw = {**GRPO, "eval_prompts": 1, "max_prompts": 0, "max_steps": 6, "batch_size": 4, "num_generations": 4,
          "max_completion_length": 8, "max_length": 64, "lr": 2e-2, "lora_r": 8, "lora_alpha": 16,
          "lora_layers": 0, "seed": 0}
    res = grpo_train(few_pairs / "prefixes_all.jsonl", tiny_model_dir, root / "rm", tmp_path / "grpo", **kw,
                     live_dir=tmp_path / "dvclive")
    assert res["metrics"]["train"]["steps"] == 6
    split = read_json(root / "rm" / "split.json")
    train_ids, _ = split_prompts(split["heldout_prefix_ids"], kw["eval_prompts"], kw["max_prompts"], split["seed"])
    prompt = [load_prefixes(few_pairs / "prefixes_all.jsonl")[train_ids[0]]]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    before = generate(base, tok, prompt, 8, batch_size=1)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      str(tmp_path / "grpo")).eval()
    after = generate(tuned, tok, prompt, 8, batch_size=1)
    assert after != before, (before, after)
    cfg = json.loads((tmp_path / "grpo" / "adapter_config.json").read_text())
    assert cfg["r"] == 8
