"""Length-grouped batching: fewer pad tokens without giving up shuffling.

Indices are shuffled, cut into mega-batches of `batch_size * mega_batch_mult`,
each mega-batch is sorted by length (longest first) and cut into batches, and the
batch order is shuffled again. Batches hold similar lengths (little padding),
while which examples meet in a mega-batch, and the order of batches, stay random.
The batch holding the longest sequence goes first so an out-of-memory shows up at
step one, not hours in.

Use as `DataLoader(ds, batch_sampler=LengthGroupedBatchSampler(lengths, 8, seed=0),
collate_fn=collator)`; call `set_epoch(e)` for a fresh, still seed-determined order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class LengthGroupedBatchSampler:
    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch_mult: int = 50,
                 seed: int = 0, drop_last: bool = False, shuffle: bool = True,
                 longest_first: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mega_batch_mult < 1:
            raise ValueError(f"mega_batch_mult must be >= 1, got {mega_batch_mult}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError("lengths must be a flat sequence of ints")
        self.batch_size = batch_size
        self.mega_batch_mult = mega_batch_mult
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.longest_first = longest_first
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        mega = self.batch_size * self.mega_batch_mult
        out: list[list[int]] = []
        for start in range(0, n, mega):
            chunk = order[start:start + mega]
            # Stable sort on -length: ties keep their shuffled order.
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out.extend(chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            # Mega-batches are whole multiples of batch_size, so only the very last
            # batch (before the shuffle) can be short.
            out.pop()
        if self.shuffle and out:
            perm = rng.permutation(len(out)).tolist()
            out = [out[i] for i in perm]
        if self.longest_first and out:
            longest = max(range(len(out)), key=lambda i: (int(self.lengths[out[i]].max()), -i))
            out.insert(0, out.pop(longest))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain shuffled batches (the baseline the grouped sampler is compared with)."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> dict:
    """Pad tokens / all tokens when each batch is padded to its longest member."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for b in batches:
        ls = lengths[list(b)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return {"real_tokens": real, "padded_tokens": padded, "pad_tokens": padded - real,
            "waste": (padded - real) / padded if padded else 0.0}


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
