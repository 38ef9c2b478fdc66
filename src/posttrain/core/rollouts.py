"""Rollouts of trl's online trainers (GRPO) in the training precision, each distinct prompt
prefilled once.

trl's GRPO generates `num_generations` completions per prompt as that many identical rows of
one left-padded batch, and prefills every row: at the CPU default (2 prompts x 4 generations,
~140-330 prompt tokens, 32 new tokens) the prefill of the same prompt four times is most of a
rollout. It also generates through the unwrapped model, outside the bf16 autocast that
accelerate puts around the training forward, so rollouts decode in fp32 where training is bf16.

`rollouts(trainer, shared_prefill=..., bf16=...)` gives the trained model, for the duration of
`trainer.train()`, a `generate` that
- with `shared_prefill`, runs the distinct rows' prompt (less its last token) once, with the
  positions generate itself would use (from the attention mask, so left padding is the same),
  copies that KV cache to every row, and hands generate the cache: it then feeds only the last
  prompt token and decodes as before. Same distribution, and token-identical greedy outputs in
  fp32 (`tests/core/test_rollouts.py`);
- with `bf16`, runs under bf16 autocast, as the training forward does;
- with a frozen trunk (`posttrain.core.trunk`), pauses it: decoding needs the frozen layers'
  own KV cache, and the training forward that follows gets the trunk back.

Anything else (no repeated rows, a cache already given, several return sequences) goes to the
model's own generate unchanged. The model is whole again on exit.
"""

from __future__ import annotations

import contextlib


def _shared_prefill_generate(generate, model, stats: dict):
    import torch

    def run(input_ids=None, attention_mask=None, **kwargs):
        cfg = kwargs.get("generation_config")
        plain = (input_ids is None or attention_mask is None or input_ids.dim() != 2 or input_ids.shape[1] < 2
                 or kwargs.get("past_key_values") is not None or kwargs.get("inputs_embeds") is not None
                 or getattr(cfg, "num_return_sequences", 1) not in (None, 1))
        if not plain:
            rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
            distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
            plain = distinct.shape[0] == rows.shape[0]
        stats["rows"] += 0 if input_ids is None else int(input_ids.shape[0])
        if plain:
            stats["prefilled"] += 0 if input_ids is None else int(input_ids.shape[0])
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        width = input_ids.shape[1]
        ids, mask = distinct[:, :width], distinct[:, width:]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate derives from the mask
        with torch.no_grad():
            out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
                        use_cache=True)
        cache = out.past_key_values
        cache.reorder_cache(inverse)  # every row gets its prompt's keys and values
        stats["prefilled"] += int(distinct.shape[0])
        return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)

    return run


@contextlib.contextmanager
def rollouts(trainer, *, shared_prefill: bool, bf16: bool, trunk=None):
    """Within the block, `trainer.model.generate` prefills each distinct prompt row once
    (`shared_prefill`), runs under bf16 autocast (`bf16`) and with `trunk` (a frozen trunk's
    TrunkEmbedding) paused; yields the counts {"rows": generated rows, "prefilled": rows whose
    prompt was run}, or None when there is nothing to do."""
    import torch

    model = trainer.model
    generate = getattr(model, "generate", None)
    if not (shared_prefill or bf16 or trunk is not None) or generate is None:  # a model that never generates (RM)
        yield None
        return
    own = model.__dict__.get("generate")
    stats = {"rows": 0, "prefilled": 0}
    inner = _shared_prefill_generate(generate, model, stats) if shared_prefill else generate
    device = next(model.parameters()).device.type

    def patched(*args, **kwargs):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16), \
                (trunk.paused() if trunk is not None else contextlib.nullcontext()):
            if len(args) == 1:  # generate(input_ids, ...)
                return inner(input_ids=args[0], **kwargs)
            return inner(*args, **kwargs) if not args else generate(*args, **kwargs)

    model.generate = patched
    try:
        yield stats
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own
