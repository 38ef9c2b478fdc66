"""Rollouts (posttrain.core.rollouts): each distinct prompt prefilled once gives the same
generations as prefilling every row, and rollouts run in the training precision."""

from __future__ import annotations

import types

import torch

from posttrain.core.adapters import lora_config
from posttrain.core.models import build_tiny_causal_lm
from posttrain.core.rollouts import rollouts


def policy(tokenizer):
    from peft import get_peft_model

    base = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=64, layers=3)
    model = get_peft_model(base, lora_config(8, 16, 0.0, "CAUSAL_LM", top_layers=1, model=base))
    with torch.no_grad():  # a non-trivial adapter: the prefill must go through it
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return model.eval()


def grpo_batch(tokenizer):
    """Left-padded rows as trl's GRPO builds them: prompts repeated (here interleaved, and one
    prompt alone), different lengths."""
    prompts = ["Human: how do I bake bread?\n\nAssistant:", "Human: name a prime number above ten, please.\n\nAssistant:",
               "Human: hi\n\nAssistant:"]
    texts = [prompts[i] for i in (0, 1, 0, 1, 0, 1, 2)]
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path, padding_side="left")
    return tokenizer(texts, return_tensors="pt", padding=True)


def prompt_tokens_run(model):
    """Counts the prompt rows and tokens the decoder runs on (calls with more than one position)."""
    seen = {"rows": 0, "tokens": 0}
    dec = model.get_base_model().model

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            seen["rows"] += ids.shape[0]
            seen["tokens"] += ids.numel()
        return None

    return seen, dec.register_forward_pre_hook(hook, with_kwargs=True)


def test_shared_prefill_gives_the_same_greedy_tokens_and_prefills_each_prompt_once(tokenizer):
    model = policy(tokenizer)
    enc = grpo_batch(tokenizer)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(**enc, **kw)
        seen, hook = prompt_tokens_run(model)
        with rollouts(types.SimpleNamespace(model=model), shared_prefill=True, bf16=False) as stats:
            shared = model.generate(**enc, **kw)
        hook.remove()
    assert torch.equal(plain, shared)
    assert stats == {"rows": 7, "prefilled": 3}
    assert seen["rows"] == 3  # one prefill of the 3 distinct prompts, then one token per row
    assert "generate" not in model.__dict__  # the model is whole again


def test_distinct_rows_and_explicit_caches_pass_through(tokenizer):
    model = policy(tokenizer)
    enc = grpo_batch(tokenizer)
    enc = {k: v[[0, 1, 6]] for k, v in enc.items()}
    with torch.no_grad(), rollouts(types.SimpleNamespace(model=model), shared_prefill=True, bf16=False) as stats:
        model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert stats == {"rows": 3, "prefilled": 3}


def test_rollouts_run_in_bf16_autocast_when_training_does(tokenizer):
    model = policy(tokenizer)
    enc = grpo_batch(tokenizer)
    seen = []
    hook = model.get_base_model().model.register_forward_pre_hook(
        lambda m, a: seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")))
    with torch.no_grad():
        with rollouts(types.SimpleNamespace(model=model), shared_prefill=False, bf16=True) as stats:
            model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    hook.remove()
    assert seen[:2] == [torch.bfloat16] * 2 and seen[2:] == [False] * 2
    assert stats == {"rows": 0, "prefilled": 0}  # counted only where prompts are shared
