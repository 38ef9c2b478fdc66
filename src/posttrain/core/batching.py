"""Length-sorted inference batches of token-id lists.

Training batches are the Trainer's business (`train_sampling_strategy="group_by_length"`,
see posttrain.reason.verifier); this is the plain inference counterpart for code that
scores token ids itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def padded_by_length(seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int):
    """Inference batches of token-id lists: yields (indices, input_ids, attention_mask).

    Sequences go in order of length (stable), so each batch holds similar lengths, and
    are right-padded (a causal model's real positions are unaffected). Callers put each
    batch's outputs back at `indices`."""
    import torch

    order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in range(0, len(seqs), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        yield idx, ids, mask
