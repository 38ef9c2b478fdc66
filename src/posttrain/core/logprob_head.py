"""The LM head of trl's trainers, scored on the labelled positions only.

trl's SFT, DPO and GRPO trainers patch the model with a fused LM head
(`trl.trainer.utils.add_fused_lm_head`) and call it with `fused_lm_head=True`. Where Triton
runs (CUDA, XPU) it projects only the positions that carry a label; everywhere else (our CPU)
it projects every position, prompt and padding included, in Python-looped vocabulary tiles, and
its backward multiplies in fp32 (bf16-in, fp32-out matmul is CUDA-only). rec's answer is 1-2
tokens after a ~200-token prompt, a DPO completion a third of its pair: most of that work is for
positions whose log-prob is zeroed right after.

`labelled_head(model)` swaps in a forward that returns the same `FusedCausalLMOutput`, computed
on the labelled positions only: one projection in the autocast dtype (bf16 where
`train.precision` is), an fp32 log-softmax, and autograd's backward. The per-token extras trl
logs (entropy, mean logits, top-1, log sum p^2) come from the same log-softmax, so every
dvclive curve stays. The full logits of the selected positions are materialized: (labelled
tokens) x vocab x 4 bytes, ~0.3 GB for DPO's 8 x 192 tokens at 49k vocab.

Exact up to float rounding (`tests/core/test_logprob_head.py`); `bench/train.py` measures it.
"""

from __future__ import annotations

import contextlib
import functools
import types

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _closure(fn) -> dict:
    """The values trl's patched forward closed over (its temperature and fp32-head flag)."""
    code, cells = fn.__code__, fn.__closure__ or ()
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells)}


def _trl_forward(model):
    """trl's fused forward on `model`, or None (not patched, or a config this head does not cover)."""
    fwd = model.__dict__.get("forward")
    fn = getattr(fwd, "__func__", None)
    if fn is None or fn.__code__.co_name != "_fused_forward":
        return None
    cfg = model.config.get_text_config()
    scaled = any(getattr(cfg, k, None) not in (None, 1.0) for k in (
        "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    return None if scaled else fwd  # softcapped / scaled logits: trl's head handles them


def _labelled_forward(trl_forward, temperature: float, fp32_head: bool, entropy_grad: bool):
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        if not fused_lm_head or kwargs.get("output_router_logits"):  # generation, plain calls, MoE aux loss
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        labels = labels.to(head.weight.device)
        mask = labels != -100
        picked = hidden.to(head.weight.device)[mask]
        with torch.autocast(picked.device.type, enabled=False) if fp32_head else contextlib.nullcontext():
            logits = head(picked.float() if fp32_head else picked)
        z = logits.float() / temperature
        logp = torch.log_softmax(z, dim=-1)
        target = labels[mask]
        picked_lp = logp.gather(-1, target[:, None]).squeeze(-1)

        def spread(x):  # back to (batch, positions), zero where there is no label
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        with torch.enable_grad() if entropy_grad else torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
        with torch.no_grad():
            log_sum_sq = torch.logsumexp(2 * logp, dim=-1)
            mean_logits = z.mean(-1)
            top = z.max(-1).values
            # the label is top-1 when it holds the maximum and no earlier token ties it (trl's rule)
            first_max = (z == top[:, None]).int().argmax(-1)
            is_top1 = first_max == target
        log_probs = spread(picked_lp)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(
            loss=loss, log_probs=log_probs, entropy=spread(entropy), log_sum_sq_probs=spread(log_sum_sq),
            mean_logits=spread(mean_logits), is_top1=mask.new_zeros(mask.shape).masked_scatter(mask, is_top1),
            label_mask=mask)

    return forward


def _patched_models(trainer) -> list:
    from peft import PeftModel

    out = []
    for m in (trainer.model, getattr(trainer, "ref_model", None)):
        if m is None:
            continue
        m = trainer.accelerator.unwrap_model(m) if hasattr(trainer, "accelerator") else m
        out.append(m.get_base_model() if isinstance(m, PeftModel) else m)
    return out


@contextlib.contextmanager
def labelled_head(trainer, enabled: bool = True):
    """Inside: the trainer's model (and reference) score only labelled positions; trl's fused
    head is back afterwards. A no-op for models trl did not patch (reward models)."""
    swapped = []
    if enabled:
        for m in _patched_models(trainer):
            fwd = _trl_forward(m)
            if fwd is None:
                continue
            trl_vars = _closure(fwd.__func__)
            entropy_grad = bool(getattr(trainer, "_entropy_bonus_enabled", False))
            ours = _labelled_forward(fwd, float(trl_vars.get("temperature", 1.0)),
                                     bool(trl_vars.get("cast_lm_head_to_fp32", False)), entropy_grad)
            m.forward = types.MethodType(functools.wraps(type(m).forward)(ours), m)
            swapped.append((m, fwd))
    try:
        yield len(swapped)
    finally:
        for m, fwd in swapped:
            m.forward = fwd
