"""Yes/No scoring: P(Yes) vs P(No) at the first answer token -> AUC, accuracy (with CIs), ROC points.

The model reads the generation prompt (the user turn plus the template's assistant
header); the score is softmax over just the two logits of the first token of
"Yes" and of "No" as the template renders them as answers, so it is a probability
of Yes given the choice is Yes or No.
"""

from __future__ import annotations

import math

import numpy as np

from posttrain.core import stats
from posttrain.core.batching import padded_by_length
from posttrain.rec.tokenization import IGNORE_INDEX, tokenize_records


def answer_token_id(tokenizer, answer: str) -> int:
    """First trained token of `answer` rendered as an assistant reply by the chat template."""
    probe = {"instruction": "?", "input": "", "output": answer, "system": "", "history": []}
    cols, _ = tokenize_records(tokenizer, [probe], cutoff_len=10**6)
    return next(t for t in cols["labels"][0] if t != IGNORE_INDEX)


def score_prompts(model, tokenizer, prompts: list[list[int]], yes_id: int, no_id: int, *,
                  batch_size: int, desc: str = "score") -> np.ndarray:
    """P(Yes | Yes or No) per prompt, batched by length and returned in input order."""
    import torch
    from tqdm import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros(len(prompts), dtype=np.float64)
    batches = padded_by_length(prompts, batch_size, pad)
    with torch.inference_mode():
        for idx, ids, mask in tqdm(batches, total=math.ceil(len(prompts) / batch_size), desc=desc,
                                   unit="batch", mininterval=5):
            # Only the last real position's Yes/No logits are needed: run the decoder, then
            # the LM head on one hidden state per row and two vocab rows (not seq x vocab).
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            last = hidden[torch.arange(len(idx)), mask.sum(1) - 1]
            head = model.get_output_embeddings()
            w = head.weight[[yes_id, no_id]]
            two = (last @ w.T + (head.bias[[yes_id, no_id]] if head.bias is not None else 0)).float()
            p_yes = torch.softmax(two, dim=1)[:, 0].numpy()
            out[idx] = p_yes
    return out


def binary_metrics(labels, scores, users=None, *, seed: int, threshold: float = 0.5) -> dict:
    """AUC, accuracy and mean score (P(Yes): is the model calibrated to the like rate?) with n
    and their user-clustered bootstrap CIs (`posttrain.core.stats`)."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    correct = ((s >= threshold).astype(int) == y).astype(int)
    return stats.report({"auc": ("auc", [y, s]), "accuracy": ("proportion", [correct]), "mean_score": ("mean", [s])},
                        users, seed=seed)


def split_counts(labels, users) -> dict:
    """What the test set holds (rows, users, liked rows): sizes, not estimates, so they sit
    beside the eval blocks rather than in them."""
    return {"rows": len(labels), "users": len(set(users)), "positives": int(np.sum(labels))}


def paired_metrics(labels, new, old, users=None, *, seed: int, threshold: float = 0.5) -> dict:
    """AUC and accuracy of `new` minus those of `old` on the same rows, with paired CIs."""
    y = np.asarray(labels, dtype=int)
    hit = [((np.asarray(x, dtype=float) >= threshold).astype(int) == y).astype(int) for x in (new, old)]
    return stats.report({"auc": ("auc", [y, new], [y, old]), "accuracy": ("mean", [hit[0]], [hit[1]])},
                        users, seed=seed)


def prediction_rows(rows: list[dict], llm, baseline, threshold: float = 0.5) -> list[dict]:
    """One record per test row (id = user:item), sorted by id: the input of `posttrain compare`."""
    out = []
    for r, p, b in zip(rows, llm, baseline):
        y = int(r["label"])
        out.append({"id": f"{r['user_id']}:{r['item_id']}", "user": str(r["user_id"]), "label": y,
                    "llm": round(float(p), 6), "baseline": round(float(b), 6),
                    "llm_correct": int((p >= threshold) == y), "baseline_correct": int((b >= threshold) == y)})
    return sorted(out, key=lambda r: r["id"])


def roc_points(labels, scores) -> list[dict]:
    from sklearn.metrics import roc_curve

    y = np.asarray(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        return []
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=float))
    return [{"fpr": round(float(f), 6), "tpr": round(float(t), 6)} for f, t in zip(fpr, tpr)]
