"""Alpaca records -> chat messages for a tokenizer's chat template.

An Alpaca record is {instruction, input, output, system, history}: `system` becomes
the system message (omitted when empty, so the template's default applies),
`history` is a list of earlier [user, assistant] turns, the user turn is the
instruction followed by the input, and `output` is the assistant answer.
"""

from __future__ import annotations


def user_content(record: dict) -> str:
    instruction, inp = record.get("instruction", "") or "", record.get("input", "") or ""
    return f"{instruction}\n\n{inp}" if instruction and inp else instruction or inp


def to_generation_messages(record: dict) -> list[dict]:
    """Messages up to and including the user turn (the prompt to answer)."""
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    for turn in record.get("history") or []:
        user, assistant = turn
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": user_content(record)})
    return messages


def to_chat_messages(record: dict) -> list[dict]:
    """The whole conversation: the generation messages plus the assistant answer."""
    return to_generation_messages(record) + [{"role": "assistant", "content": record["output"]}]
