"""Collators: lists of example dicts -> padded tensors for verifier / generator models.

Four collators share one tokenize-truncate-pad path and differ only in the text
they build and the labels they return:

- ``verification``: (problem, proof, score) ->
  ``"Problem: {problem}\\n\\nProof: {proof}"`` and a float label (the score).
- ``meta_verification``: (problem, proof, analysis, meta_score) ->
  ``"Problem: {problem}\\n\\nProof: {proof}\\n\\nAnalysis: {analysis}"`` and a float label.
- ``generation``: (problem[, solution]) -> ``"Problem: {problem}\\n\\nSolution:"``
  (plus ``" {solution}"`` and EOS when a solution is given) with causal-LM labels:
  a copy of ``input_ids`` with padding (and, with ``mask_prompt``, the prompt) at -100.
- ``inference``: (problem[, proof]) -> the verification text when a proof is
  present, else the generation prompt; no labels; ``texts`` and ``metadata`` (a
  copy of every original field) come back with the tensors so predictions can be
  written next to the sample they belong to.

Options common to all: ``padding='longest'|'max_length'``, ``max_length``,
``truncation`` (with ``truncation_side``), ``padding_side``, and
``chat_template=True`` to render the text as one user turn of the tokenizer's chat
template (generation: the solution becomes the assistant turn).
"""

from __future__ import annotations

import copy
import numbers
from array import array
from typing import Any, Sequence

PADDING_MODES = ("longest", "max_length")
IGNORE_INDEX = -100
CACHE_TOKENS = 16_000_000  # token ids a collator keeps per text it has tokenized


def verification_text(problem: str, proof: str) -> str:
    return f"Problem: {problem}\n\nProof: {proof}"


def meta_verification_text(problem: str, proof: str, analysis: str) -> str:
    return f"{verification_text(problem, proof)}\n\nAnalysis: {analysis}"


def generation_prompt(problem: str) -> str:
    return f"Problem: {problem}\n\nSolution:"


class BaseCollator:
    """Shared tokenize / truncate / pad logic. Subclasses define `required`,
    `build(example) -> (text, target_or_None)` and `finish(...)` (labels / extras)."""

    name = "base"
    required: tuple[str, ...] = ()
    default_padding_side = "right"

    def __init__(self, tokenizer, padding: str = "longest", max_length: int | None = None,
                 truncation: bool = True, truncation_side: str = "right",
                 padding_side: str | None = None, chat_template: bool = False,
                 pad_to_multiple_of: int | None = None):
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if padding == "max_length" and not max_length:
            raise ValueError("padding='max_length' needs max_length")
        if truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
        padding_side = padding_side or self.default_padding_side
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set one (posttrain.core.models.load_tokenizer does)")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.padding = padding
        self.max_length = max_length
        self.truncation = truncation
        self.truncation_side = truncation_side
        self.padding_side = padding_side
        self.chat_template = chat_template
        self.pad_to_multiple_of = pad_to_multiple_of
        # text -> token ids: a training run draws each example several times (epochs, weighted
        # draws) and tokenizing a long proof costs ~2 ms, a twentieth of a verifier step here;
        # 4 bytes a token, up to CACHE_TOKENS tokens (64 MB), then new texts are tokenized each time
        self._ids: dict[str, array] = {}
        self._cached_tokens = 0

    # -- per-example text -------------------------------------------------
    def build(self, example: dict) -> tuple[str, str | None]:
        raise NotImplementedError

    def finish(self, batch: dict, examples: Sequence[dict], prompt_lens: list[int], texts: list[str]) -> dict:
        return batch

    def check(self, i: int, example: Any) -> None:
        if not isinstance(example, dict):
            raise TypeError(f"{type(self).__name__}: example {i} is a {type(example).__name__}, expected a dict")
        for field in self.required:
            if example.get(field) is None:
                raise ValueError(f"{type(self).__name__}: example {i} lacks field {field!r} "
                                 f"(needs {', '.join(self.required)})")

    def add_generation_prompt(self, example: dict) -> bool:
        """Chat mode: open an assistant turn after the user text? Verification texts are
        scored as they are, so no; prompts meant for generation, yes."""
        return False

    def render(self, example: dict) -> tuple[str, str | None]:
        """Plain text, or the chat template around it (text = the user turn)."""
        text, target = self.build(example)
        if not self.chat_template:
            return text, (None if target is None else f" {target}{self.tokenizer.eos_token or ''}")
        messages = [{"role": "user", "content": text}]
        if target is None:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=self.add_generation_prompt(example)), None
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": target}], tokenize=False)
        if not full.startswith(prompt):  # templates that rewrite earlier turns: keep the text whole
            raise ValueError("chat template does not extend the prompt with the assistant turn")
        return prompt, full[len(prompt):]

    def texts(self, examples: Sequence[dict]) -> list[str]:
        """The exact strings the collator tokenizes (prompt + target)."""
        out = []
        for i, ex in enumerate(examples):
            self.check(i, ex)
            prompt, target = self.render(ex)
            out.append(prompt + (target or ""))
        return out

    # -- batch --------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        cached = self._ids.get(text)
        if cached is not None:
            return cached.tolist()
        # Chat-rendered text already carries its special tokens.
        ids = self.tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"]
        if self._cached_tokens + len(ids) <= CACHE_TOKENS:
            self._ids[text] = array("i", ids)
            self._cached_tokens += len(ids)
        return ids

    def _truncate(self, ids: list[int]) -> list[int]:
        limit = self.max_length or self.tokenizer.model_max_length
        if not self.truncation or len(ids) <= limit:
            return ids
        return ids[:limit] if self.truncation_side == "right" else ids[len(ids) - limit:]

    def __call__(self, examples: Sequence[dict]) -> dict:
        if not examples:
            raise ValueError(f"{type(self).__name__}: empty batch")
        seqs, prompt_lens, texts = [], [], []
        for i, ex in enumerate(examples):
            self.check(i, ex)
            prompt, target = self.render(ex)
            ids = self._encode(prompt)
            n_prompt = len(ids)
            if target is not None:
                ids = ids + self.tokenizer(target, add_special_tokens=False)["input_ids"]
            full = len(ids)
            ids = self._truncate(ids)
            # Prompt tokens that survived truncation (left truncation eats the prompt first).
            dropped_left = full - len(ids) if self.truncation_side == "left" else 0
            prompt_lens.append(max(0, min(len(ids), n_prompt - dropped_left)))
            seqs.append(ids)
            texts.append(prompt + (target or ""))
        if self.padding == "max_length" and any(len(s) > self.max_length for s in seqs):
            raise ValueError(f"{type(self).__name__}: sequence longer than max_length={self.max_length} "
                             "with truncation off")
        batch = self.tokenizer.pad(
            {"input_ids": seqs}, padding=self.padding, max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of, padding_side=self.padding_side,
            return_attention_mask=True, return_tensors="pt")
        batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return self.finish(batch, examples, prompt_lens, texts)


def _float_label(cls_name: str, i: int, field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{cls_name}: example {i} field {field!r} must be a number, got {value!r}")
    return float(value)


class VerificationCollator(BaseCollator):
    """(problem, proof, score) -> "Problem: ...\\n\\nProof: ..." + float `labels` [B]."""

    name = "verification"
    required = ("problem", "proof", "score")
    label_field = "score"

    def build(self, ex):
        return verification_text(ex["problem"], ex["proof"]), None

    def finish(self, batch, examples, prompt_lens, texts):
        import torch

        batch["labels"] = torch.tensor(
            [_float_label(type(self).__name__, i, self.label_field, ex[self.label_field])
             for i, ex in enumerate(examples)], dtype=torch.float32)
        return batch


class MetaVerificationCollator(VerificationCollator):
    """(problem, proof, analysis, meta_score) -> "...\\n\\nAnalysis: ..." + float `labels` [B]."""

    name = "meta_verification"
    required = ("problem", "proof", "analysis", "meta_score")
    label_field = "meta_score"

    def build(self, ex):
        return meta_verification_text(ex["problem"], ex["proof"], ex["analysis"]), None


class GenerationCollator(BaseCollator):
    """problem[, solution] -> "Problem: ...\\n\\nSolution:"[ + " solution<eos>"] with causal-LM
    `labels` (padding at -100; with `mask_prompt=True` the prompt too).

    Pads on the left by default so prompt-only batches go straight into `generate`.
    """

    name = "generation"
    required = ("problem",)
    default_padding_side = "left"

    def __init__(self, tokenizer, mask_prompt: bool = False, solution_field: str = "solution", **kw):
        super().__init__(tokenizer, **kw)
        self.mask_prompt = mask_prompt
        self.solution_field = solution_field

    def build(self, ex):
        return generation_prompt(ex["problem"]), ex.get(self.solution_field)

    def add_generation_prompt(self, example):
        return True

    def finish(self, batch, examples, prompt_lens, texts):
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        if self.mask_prompt:
            for row, n_prompt in enumerate(prompt_lens):
                real = batch["attention_mask"][row].nonzero().flatten()
                labels[row, real[:n_prompt]] = IGNORE_INDEX
        batch["labels"] = labels
        return batch


class InferenceCollator(BaseCollator):
    """problem[, proof] -> tensors + `texts` + `metadata` (deep copy of each input dict).

    With a proof the text is the verification format (for scoring with a verifier),
    without one the generation prompt. Pads on the left (works for `generate` and
    for sequence-classification heads, which pool the last non-pad token).
    """

    name = "inference"
    required = ("problem",)
    default_padding_side = "left"

    def build(self, ex):
        if ex.get("proof") is not None:
            return verification_text(ex["problem"], ex["proof"]), None
        return generation_prompt(ex["problem"]), None

    def add_generation_prompt(self, example):
        return example.get("proof") is None

    def finish(self, batch, examples, prompt_lens, texts):
        batch["texts"] = texts
        batch["metadata"] = [copy.deepcopy(dict(ex)) for ex in examples]
        return batch


COLLATORS: dict[str, type[BaseCollator]] = {
    c.name: c for c in (VerificationCollator, MetaVerificationCollator, GenerationCollator, InferenceCollator)
}


def get_collator(name: str, **kwargs) -> BaseCollator:
    """Build a collator by name: verification, meta_verification, generation, inference."""
    try:
        cls = COLLATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown collator {name!r}; known collators: {', '.join(sorted(COLLATORS))}") from None
    return cls(**kwargs)
