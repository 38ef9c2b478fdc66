"""Weighted sampling that stays correct under distributed data parallel.

`torch.utils.data.WeightedRandomSampler` knows nothing about ranks, and
`DistributedSampler` knows nothing about weights. `WeightedDistributedSampler`
does both the way `DistributedSampler` does shuffling: every rank makes the
*same* weighted draw (shared seed + epoch), then takes a disjoint strided share
of it. Together the ranks see exactly one weighted draw, once.

`WeightedSamplerMixin` plugs it into any transformers/trl `Trainer`
(`RewardTrainer`, `DPOTrainer`, ...) through `_get_train_sampler`, reading the
weights from a column of the (unfiltered-by-columns) train dataset so they stay
aligned with rows even when the trainer drops over-long examples.

With `train_sampling_strategy="group_by_length"` (transformers' flag, and its
`length_column_name`), each epoch's draw is also length-grouped the way transformers'
`LengthGroupedSampler` groups a shuffle: cut into megabatches of 50 global batches, each
sorted by length and cut into batches whose order is shuffled. The draw's items are the
same; only which ones share a batch changes, so a batch pads to a similar length (pref_rm's
HH pairs: 36% of a random batch is padding, 7% of a grouped one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

WEIGHT_COLUMN = "weight"


class WeightedDistributedSampler(Sampler[int]):
    """One weighted draw (with replacement) per epoch, split disjointly across ranks.

    `num_samples` is the size of the global draw per epoch (default: len(weights)),
    rounded up to a multiple of `num_replicas` so every rank gets the same count.
    Rank r yields `draw[r::num_replicas]`.
    """

    def __init__(self, weights: Sequence[float], num_samples: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0,
                 lengths: Sequence[int] | None = None, batch_size: int = 1, megabatch: int = 50):
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or len(w) == 0:
            raise ValueError("weights must be a non-empty 1-D sequence")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative, with a positive sum")
        if num_replicas is None or rank is None:
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (
                torch.distributed.get_world_size() if dist_on else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist_on else 0)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        if lengths is not None and len(lengths) != len(w):
            raise ValueError(f"{len(lengths)} lengths for {len(w)} weights")
        self.weights = w
        self.lengths = None if lengths is None else [int(n) for n in lengths]
        self.batch_size, self.megabatch = int(batch_size), int(megabatch)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.epoch = 0
        n = int(num_samples) if num_samples is not None else len(w)
        self.total_size = math.ceil(n / self.num_replicas) * self.num_replicas
        self.num_samples = self.total_size // self.num_replicas
        # Indices this rank actually handed out (all epochs): lets callers report
        # the spread of weights really used, not just the intended one.
        self.yielded: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_draw(self, epoch: int | None = None) -> list[int]:
        """The full draw of one epoch: identical on every rank (same seed and epoch)."""
        g = torch.Generator()
        g.manual_seed(self.seed + (self.epoch if epoch is None else int(epoch)))
        return torch.multinomial(self.weights, self.total_size, replacement=True, generator=g).tolist()

    def grouped(self, draw: list[int]) -> list[int]:
        """`draw` reordered into length-grouped global batches (see the module docstring);
        a global batch is `batch_size` items per rank, so each rank's batch is one of them."""
        step = self.batch_size * self.num_replicas
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch + 7919)  # the batch order: apart from the draw's stream
        out: list[int] = []
        for start in range(0, len(draw), step * self.megabatch):
            chunk = sorted(draw[start:start + step * self.megabatch], key=lambda i: -self.lengths[i])
            batches = [chunk[j:j + step] for j in range(0, len(chunk), step)]
            tail = [batches.pop()] if len(batches[-1]) < step else []  # a short batch stays last
            out += [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]
            out += [i for b in tail for i in b]
        return out

    def __iter__(self) -> Iterator[int]:
        draw = self.global_draw()
        if self.lengths is not None:
            draw = self.grouped(draw)
        for i in draw[self.rank:self.total_size:self.num_replicas]:
            self.yielded.append(i)
            yield i

    def __len__(self) -> int:
        return self.num_samples


class WeightedSamplerMixin:
    """Mix into a transformers `Trainer` subclass: train batches come from a
    `WeightedDistributedSampler` over the train dataset's `weight` column.

    transformers 5 builds the train DataLoader in `_get_dataloader(sampler_fn=
    self._get_train_sampler)` and then `accelerator.prepare` wraps it in a
    `BatchSamplerShard` that splits batches across ranks. Our sampler is already
    rank-aware, so (as transformers does for its own rank-aware
    `BatchRebalanceSampler`) the wrapper is made a passthrough; otherwise each rank
    would keep only 1/world of its already-disjoint share.
    """

    weight_column = WEIGHT_COLUMN
    train_sampler: WeightedDistributedSampler | None = None

    def _get_train_sampler(self, train_dataset=None):
        full = self.train_dataset  # still has the weight column (removed only for the loader)
        if full is None or self.weight_column not in getattr(full, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        if train_dataset is not None and len(train_dataset) != len(full):
            raise ValueError("train dataset and its weight column differ in length")
        args = self.args
        seed = args.data_seed if args.data_seed is not None else args.seed
        lengths = None
        if getattr(args, "train_sampling_strategy", None) == "group_by_length":
            col = args.length_column_name
            if col not in full.column_names:
                raise ValueError(f"train_sampling_strategy=group_by_length: the train dataset has no {col!r} column")
            lengths = full[col]
        self.train_sampler = WeightedDistributedSampler(
            full[self.weight_column], num_replicas=max(1, args.world_size),
            rank=args.process_index if args.world_size > 1 else 0, seed=seed,
            lengths=lengths, batch_size=args.per_device_train_batch_size)
        return self.train_sampler

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        shard = getattr(loader, "batch_sampler", None)
        inner = getattr(shard, "batch_sampler", None)
        if (self.train_sampler is not None and inner is not None
                and getattr(inner, "sampler", None) is self.train_sampler
                and hasattr(shard, "num_processes")):
            shard.num_processes = 1
            shard.process_index = 0
        return loader

    def drawn_indices(self) -> list[int]:
        """Indices this rank trained on. The sampler also hands out accelerate's one-batch
        look-ahead, so keep only what `global_step` optimizer steps consumed."""
        if self.train_sampler is None:
            return []
        a = self.args
        return self.train_sampler.yielded[:self.state.global_step * a.per_device_train_batch_size
                                          * a.gradient_accumulation_steps]


_CLASSES: dict[type, type] = {}


def weighted_trainer_class(base: type) -> type:
    """`base` (e.g. trl.RewardTrainer) with `WeightedSamplerMixin` in front, cached."""
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Weighted{base.__name__}", (WeightedSamplerMixin, base), {})
    return _CLASSES[base]


def draw_spread(draw_counts: np.ndarray, rare: np.ndarray, common: np.ndarray) -> dict:
    """How much more often rare items were drawn than common ones, per item.

    `draw_counts[i]` = times item i was drawn; `rare`/`common` boolean masks.
    """
    counts = np.asarray(draw_counts, dtype=np.float64)
    out = {"draws": int(counts.sum()), "unique_drawn": int((counts > 0).sum()),
           "items": int(len(counts))}
    # An empty bucket gives null, never NaN: NaN is not JSON (write_json refuses it).
    r = float(counts[rare].mean()) if rare.any() else None
    c = float(counts[common].mean()) if common.any() else None
    out["draws_per_rare_item"] = r
    out["draws_per_common_item"] = c
    out["rare_vs_common_draw_ratio"] = r / c if r is not None and c else None
    return out


def pair_sampling_weights(pairs: Sequence[dict], density_aware: bool) -> list[float]:
    """Per-pair draw weights whose per-prompt total is the prompt's density weight.

    The density weight belongs to a prompt (prefix): a prompt with 3 pairs must not be
    drawn 3x as often as one with a single pair, so its weight is shared among its pairs.
    Uniform (`density_aware=False`) gives every pair weight 1."""
    if not density_aware:
        return [1.0] * len(pairs)
    from collections import Counter

    n = Counter(p["prefix_id"] for p in pairs)
    return [p["density"] / n[p["prefix_id"]] for p in pairs]
