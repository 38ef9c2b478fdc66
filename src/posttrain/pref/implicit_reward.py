"""DPO's implicit reward of an answer: beta * (log pi(y|x) - log pi_ref(y|x)), batched.

Held-out evaluation of a DPO policy scores every pair: chosen and rejected, under the
policy and under the reference (the same peft model with its adapter disabled). trl's
`evaluate` would also compute the loss and every logit of the vocabulary at every
position; here each sequence is one no-grad forward through the decoder and the LM head
runs only on the answer's positions, which is what the reward needs. The decoder layers
below the first one holding LoRA weights (the CPU default trains the top 4 of 30) compute
the same hidden states with and without the adapter, so the reference pass starts from the
policy pass's input to that layer, with the same mask and position embeddings: the same
numbers as a second full pass (tests/pref/test_implicit_reward.py), for 4 layers instead of 30.

Sequences are the chat template's rendering of prefix + answer (the answer's tokens
include the template's end of turn). `train_dpo` passes pairs already fitted to
`max_length` (`posttrain.pref.pair_fit`), as in training; `truncated` only guards
callers that pass raw pairs (`keep_end`: the answer survives, the prompt's start goes).
"""

from __future__ import annotations

import math

import numpy as np

from posttrain.core.batching import padded_by_length


def answer_ids(tokenizer, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the template's generation prompt, then what the answer adds."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently once an answer follows")
    ids = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    return ids(prompt), ids(full[len(prompt):])


def truncated(prompt: list[int], answer: list[int], max_length: int) -> tuple[list[int], int]:
    """keep_end: the last `max_length` tokens, and how many of them are the answer's (>= 1
    token of context is kept so the first scored token has a prediction)."""
    seq = (prompt + answer)[-max_length:] if max_length else prompt + answer
    return seq, min(len(answer), len(seq) - 1)


def _answer_logps(head, hidden, ids, mask, idx, n_answer, out: np.ndarray) -> None:
    """out[i] = sum of log p(token) over the last n_answer[i] tokens of each row of the batch:
    the LM head once, on the answer positions of the whole batch."""
    import torch

    lengths = mask.sum(1)
    rows = [(j, i, n_answer[i], int(lengths[j])) for j, i in enumerate(idx) if n_answer[i] > 0]
    if not rows:
        return
    h = torch.cat([hidden[j, L - n - 1:L - 1] for j, _, n, L in rows])  # position t predicts token t + 1
    target = torch.cat([ids[j, L - n:L] for j, _, n, L in rows])
    logp = torch.log_softmax(head(h).float(), dim=-1).gather(1, target.unsqueeze(1))[:, 0]
    for (_, i, _, _), part in zip(rows, logp.split([n for _, _, n, _ in rows])):
        out[i] = float(part.sum())


def first_adapted_layer(decoder) -> int:
    """Index of the first decoder layer holding LoRA weights (the number of layers if none)."""
    for i, layer in enumerate(decoder.layers):
        if any(hasattr(m, "lora_A") for m in layer.modules()):
            return i
    return len(decoder.layers)


def sequence_logps(model, seqs: list[list[int]], n_answer: list[int], *, pad_id: int,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(policy, reference): sums of log p(token) over each sequence's last `n_answer` tokens,
    the reference being `model` with its peft adapter disabled (see the module docstring)."""
    import torch

    policy, ref = np.zeros(len(seqs), dtype=np.float64), np.zeros(len(seqs), dtype=np.float64)
    base = model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    layers = getattr(decoder, "layers", None)
    k = first_adapted_layer(decoder) if layers is not None and hasattr(decoder, "norm") else 0
    entry: dict = {}

    def grab(module, args, kwargs):
        entry["args"], entry["kwargs"] = args, kwargs

    with torch.inference_mode():
        for idx, ids, mask in padded_by_length(seqs, batch_size, pad_id):
            hook = layers[k].register_forward_pre_hook(grab, with_kwargs=True) if 0 < k < len(layers) else None
            try:
                hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            finally:
                if hook is not None:
                    hook.remove()
            _answer_logps(head, hidden, ids, mask, idx, n_answer, policy)
            with model.disable_adapter():  # the reference: the same weights without the LoRA update
                if hook is None:  # adapter from the first layer on (or none): a full second pass
                    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                else:
                    h, rest = entry["args"][0], entry["args"][1:]
                    for layer in layers[k:]:
                        h = layer(h, *rest, **entry["kwargs"])
                        h = h[0] if isinstance(h, tuple) else h
                    hidden = decoder.norm(h)
            _answer_logps(head, hidden, ids, mask, idx, n_answer, ref)
    return policy, ref


def implicit_rewards(model, tokenizer, pairs: list[dict], *, beta: float, max_length: int,
                     batch_size: int) -> dict:
    """{"chosen", "rejected"}: implicit rewards per pair (arrays aligned with `pairs`) and
    "identical": 1 where the pair's chosen and rejected sequences became equal (aligned too)."""
    seqs, n_ans = [], []
    identical = []
    for p in pairs:
        sides = []
        for answer in (p["chosen"], p["rejected"]):
            seq, n = truncated(*answer_ids(tokenizer, p["messages"], answer), max_length)
            seqs.append(seq)
            n_ans.append(n)
            sides.append(seq)
        identical.append(int(sides[0] == sides[1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    policy, ref = sequence_logps(model, seqs, n_ans, pad_id=pad, batch_size=batch_size)
    r = beta * (policy - ref)
    return {"chosen": r[0::2], "rejected": r[1::2], "identical": np.array(identical, dtype=np.int64),
            "batches": math.ceil(len(seqs) / batch_size)}
