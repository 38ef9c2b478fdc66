import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_tokenizer_has_chat_template_and_distinct_pad(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"


def test_tiny_model_generates(tiny_model, tokenizer):
    import torch

    enc = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = tiny_model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3
    assert tiny_model.config.hidden_size == 64 and tiny_model.config.vocab_size == len(tokenizer)


def test_base_models_stage_tiny(tmp_path):
    out = tmp_path / "policy"
    subprocess.run([sys.executable, str(REPO / "stages/base_models.py"), "--policy", "tiny-random",
                    "--out", str(out)], check=True, cwd=REPO)
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_shrink_layers_keeps_first_layers_and_trains_the_top(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from posttrain.core.models import shrink_layers

    def load():
        return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)

    m = load()
    first = m.model.layers[0].self_attn.q_proj.weight.clone()
    shrink_layers(m, num_layers=1, trainable_layers=1)
    assert len(m.model.layers) == 1 and m.config.num_hidden_layers == 1
    assert (m.model.layers[0].self_attn.q_proj.weight == first).all()  # the first layer, not the last
    assert not m.model.embed_tokens.weight.requires_grad
    assert all(p.requires_grad for p in m.model.layers[0].parameters()) and m.score.weight.requires_grad
    assert m.model.norm.weight.requires_grad

    m = shrink_layers(load(), num_layers=0, trainable_layers=0)  # 0 = all, as for num_layers
    assert len(m.model.layers) == 2
    assert all(p.requires_grad for p in m.parameters())
    m = shrink_layers(load(), num_layers=0, trainable_layers=1)  # top one of two
    assert not any(p.requires_grad for p in m.model.layers[0].parameters())
    assert all(p.requires_grad for p in m.model.layers[1].parameters())


def _check_converted(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_converted_smollm2_loads_and_answers(tmp_path):
    """The real conversion: uses data/models/policy from `make repro` if present."""
    folder = REPO / "data/models/policy"
    if not (folder / "model.safetensors").is_file():
        from posttrain.core.models import materialize

        folder = materialize("smollm2-135m-instruct", tmp_path / "policy")
    assert "Paris" in _check_converted(folder)
