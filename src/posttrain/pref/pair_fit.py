"""Fit a preference pair into `max_length` tokens with one prompt for both answers.

trl's DPO truncates prompt + chosen and prompt + rejected separately, so an over-long
pair can reach the loss with its shared prompt cut two different ways (and its
`keep_end` mode is deprecated). Here the pair is cut before trl sees it, at the text
level, measured with the same chat-template tokenization trl applies:
- the answers keep their start, each to the answer budget: what is left after the
  prompt, but at least half of `max_length`;
- the prompt keeps its end (the last user turn is what the answers reply to): the
  oldest content is cut from the left, whole oldest turns dropped once emptied, and
  the conversation still starts on a user turn.
Then trl runs with `max_length=None` and truncates nothing: chosen and rejected share
one prompt by construction.
"""

from __future__ import annotations


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def lengths(tokenizer, messages: list[dict], chosen: str, rejected: str) -> tuple[int, int, int]:
    """(prompt, chosen, rejected) token counts as trl's conversational tokenization makes them:
    the generation prompt, then what each answer turn adds (its end of turn included)."""
    prompt = len(_ids(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False,
                                                                add_generation_prompt=True)))
    sides = []
    for answer in (chosen, rejected):
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        sides.append(len(_ids(tokenizer, full)) - prompt)
    return prompt, sides[0], sides[1]


def _keep_start(tokenizer, text: str, n: int) -> str:
    ids = _ids(tokenizer, text)
    return text if len(ids) <= n else tokenizer.decode(ids[:max(n, 0)])


def _cut_prompt(tokenizer, messages: list[dict], overflow: int) -> list[dict]:
    """One cut of about `overflow` tokens from the oldest content: the oldest turn dropped
    whole when it is no longer than that (with any non-user turns after it, so the
    conversation starts on a user turn), else its content cut from the left. The caller
    re-measures: dropped turns also take their template header with them."""
    msgs = [dict(m) for m in messages]
    ids = _ids(tokenizer, msgs[0]["content"])
    if len(msgs) > 1 and len(ids) <= overflow:
        msgs.pop(0)
        while len(msgs) > 1 and msgs[0]["role"] != "user":
            msgs.pop(0)
        return msgs
    msgs[0]["content"] = tokenizer.decode(ids[min(overflow, max(len(ids) - 1, 0)):])
    return msgs


def fit_pair(tokenizer, messages: list[dict], chosen: str, rejected: str, max_length: int,
             max_extra: int = 8) -> tuple[list[dict], str, str, bool]:
    """(messages, chosen, rejected, cut): the pair within `max_length` tokens (prompt plus
    the longer answer). Re-measured after every cut: decoding and re-tokenizing can move
    a boundary by a token, so the loop cuts again until it fits."""
    p, c, r = lengths(tokenizer, messages, chosen, rejected)
    if p + max(c, r) <= max_length:
        return messages, chosen, rejected, False
    extra = 0  # tokens cut beyond the measured overflow, raised when a cut did not land
    for _ in range(len(messages) + max_extra):
        budget = max(max_length // 2, max_length - p)
        if max(c, r) > budget:
            eot_c, eot_r = c - len(_ids(tokenizer, chosen)), r - len(_ids(tokenizer, rejected))
            chosen = _keep_start(tokenizer, chosen, budget - max(eot_c, 0) - extra)
            rejected = _keep_start(tokenizer, rejected, budget - max(eot_r, 0) - extra)
            p, c, r = lengths(tokenizer, messages, chosen, rejected)
            extra += max(c, r) > budget  # the cut answer re-tokenized longer: cut deeper next round
        elif p + max(c, r) > max_length:
            n = len(messages)
            messages = _cut_prompt(tokenizer, messages, p + max(c, r) - max_length + extra)
            p, c, r = lengths(tokenizer, messages, chosen, rejected)
            if len(messages) == n:
                extra += 1  # a left cut that still does not fit: re-tokenization moved a boundary
        if p + max(c, r) <= max_length:
            return messages, chosen, rejected, True
    raise ValueError(f"could not fit a pair into max_length={max_length} tokens "
                     f"(prompt {p}, answers {c} / {r})")


def fit_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[list[dict], int]:
    """Pairs (dicts with messages / chosen / rejected) each fitted; and how many were cut."""
    out, n_cut = [], 0
    for p in pairs:
        messages, chosen, rejected, cut = fit_pair(tokenizer, p["messages"], p["chosen"], p["rejected"], max_length)
        out.append({**p, "messages": messages, "chosen": chosen, "rejected": rejected} if cut else p)
        n_cut += cut
    return out, n_cut
