"""WeightedDistributedSampler: weighted frequencies, and correctness under DDP
(two CPU processes, torch.distributed with gloo)."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from scipy.stats import chisquare

from posttrain.pref.weighted_sampler import WeightedDistributedSampler, draw_spread, weighted_trainer_class

WEIGHTS = [0.5, 0.1, 0.1, 0.05, 0.05, 0.2, 0.0, 1.0, 0.3, 0.2, 0.4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_weighted_frequencies_match_weights():
    w = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 0.5])
    s = WeightedDistributedSampler(w, num_samples=60_000, num_replicas=1, rank=0, seed=3)
    counts = np.bincount(list(s), minlength=len(w))
    expected = w / w.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    # ... and clearly not uniform.
    assert chisquare(counts).pvalue < 1e-12
    assert counts[4] / counts[0] == pytest.approx(16.0, rel=0.1)


def test_uniform_weights_draw_uniformly():
    s = WeightedDistributedSampler(np.ones(10), num_samples=50_000, num_replicas=1, rank=0, seed=1)
    counts = np.bincount(list(s), minlength=10)
    assert chisquare(counts).pvalue > 1e-3


def test_zero_weight_never_drawn_and_bad_weights_rejected():
    s = WeightedDistributedSampler([0.0, 1.0, 0.0], num_samples=1000, num_replicas=1, rank=0)
    assert set(s) == {1}
    for bad in ([], [1.0, float("nan")], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError):
            WeightedDistributedSampler(bad, num_replicas=1, rank=0)


def test_ranks_partition_one_draw_in_process():
    one = WeightedDistributedSampler(WEIGHTS, num_samples=25, num_replicas=1, rank=0, seed=7)
    shards = [list(WeightedDistributedSampler(WEIGHTS, num_samples=25, num_replicas=3, rank=r, seed=7))
              for r in range(3)]
    assert [len(x) for x in shards] == [9, 9, 9]  # 25 rounded up to a multiple of 3
    interleaved = [shards[i % 3][i // 3] for i in range(27)]
    full = WeightedDistributedSampler(WEIGHTS, num_samples=27, num_replicas=1, rank=0, seed=7)
    assert interleaved == list(full)
    assert list(one) == full.global_draw()[:25]


def test_epochs_differ_but_are_reproducible():
    s = WeightedDistributedSampler(WEIGHTS, num_samples=200, num_replicas=1, rank=0, seed=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert e0 != e1 and list(s) == e0


def test_draw_spread():
    counts = np.array([4, 4, 1, 1, 0])
    rare = np.array([True, True, False, False, False])
    common = np.array([False, False, True, True, False])
    out = draw_spread(counts, rare, common)
    assert out["rare_vs_common_draw_ratio"] == 4.0 and out["draws"] == 10 and out["unique_drawn"] == 4
    # No common items (a tiny held-out split): null, not NaN, so the metrics JSON can be written.
    none = draw_spread(counts, rare, np.zeros(5, dtype=bool))
    assert none["draws_per_common_item"] is None and none["rare_vs_common_draw_ratio"] is None
    assert none["draws_per_rare_item"] == 4.0
    # and no rare items (all weights equal: every item "middle") is null, never NaN (not JSON)
    empty = draw_spread(counts, np.zeros(5, bool), common)
    assert empty["draws_per_rare_item"] is None and empty["rare_vs_common_draw_ratio"] is None
    assert empty["draws_per_common_item"] == 1.0


# ------------------------------------------------------------------ DDP: 2 processes, gloo

def _ddp_sampler_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = {}
        for epoch in (0, 1):
            # num_replicas / rank come from the process group, as in a real launch.
            s = WeightedDistributedSampler(WEIGHTS, num_samples=31, seed=11)
            s.set_epoch(epoch)
            mine = list(s)
            gathered = [None] * world
            dist.all_gather_object(gathered, {"rank": s.rank, "replicas": s.num_replicas, "idx": mine})
            result[epoch] = gathered
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sampler_under_ddp_two_processes(tmp_path):
    world = 2
    mp.spawn(_ddp_sampler_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for epoch in (0, 1):
        gathered = results[0][epoch]
        assert results[1][epoch] == gathered  # both ranks saw the same gathered view
        assert [g["rank"] for g in gathered] == [0, 1] and {g["replicas"] for g in gathered} == {2}
        shards = [g["idx"] for g in gathered]
        assert len(shards[0]) == len(shards[1]) == 16  # 31 rounded up to 32, split evenly
        single = WeightedDistributedSampler(WEIGHTS, num_samples=32, num_replicas=1, rank=0, seed=11)
        single.set_epoch(epoch)
        draw = list(single)
        # Disjoint positions of one draw: rank r owns positions r, r+2, ...; together exactly the draw.
        assert shards[0] == draw[0::2] and shards[1] == draw[1::2]
        assert sorted(shards[0] + shards[1]) == sorted(draw)
    assert results[0][0][0]["idx"] != results[0][1][0]["idx"]  # new epoch, new draw


class _Echo(torch.nn.Module):
    """A model whose loss is irrelevant: we only read what the DataLoader hands each rank."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx=None, labels=None):
        return {"loss": (self.w * idx.float()).sum()}


def _ddp_trainer_worker(rank, world, port, out_dir):
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    n = len(WEIGHTS)
    ds = Dataset.from_dict({"idx": list(range(n)), "weight": WEIGHTS})
    args = TrainingArguments(output_dir=os.path.join(out_dir, "trainer"), use_cpu=True,
                             per_device_train_batch_size=2, report_to="none", seed=5,
                             ddp_backend="gloo", remove_unused_columns=True)
    trainer = weighted_trainer_class(Trainer)(model=_Echo(), args=args, train_dataset=ds)
    loader = trainer.get_train_dataloader()
    seen = [int(i) for batch in loader for i in batch["idx"]]
    torch.save({"seen": seen, "world": args.world_size, "rank": args.process_index},
               os.path.join(out_dir, f"trainer{rank}.pt"))
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow  # ~1-2 min here: two processes each import transformers + accelerate
def test_trainer_hook_under_ddp_two_processes(tmp_path):
    """Through transformers' Trainer + accelerate: each rank gets its disjoint half of
    one weighted draw (no double sharding by accelerate's BatchSamplerShard)."""
    world = 2
    mp.spawn(_ddp_trainer_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    res = [torch.load(tmp_path / f"trainer{r}.pt") for r in range(world)]
    assert [r["world"] for r in res] == [2, 2] and [r["rank"] for r in res] == [0, 1]
    single = WeightedDistributedSampler(WEIGHTS, num_samples=12, num_replicas=1, rank=0, seed=5)
    draw = single.global_draw(0)  # 11 rounded up to 12
    assert len(draw) == 12
    assert res[0]["seen"] == draw[0::2] and res[1]["seen"] == draw[1::2]
    assert 6 not in res[0]["seen"] + res[1]["seen"]  # weight 0 never drawn


def test_trainer_hook_falls_back_without_weight_column(tmp_path):
    from datasets import Dataset
    from torch.utils.data import RandomSampler
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    t = weighted_trainer_class(Trainer)(model=_Echo(), args=args,
                                        train_dataset=Dataset.from_dict({"idx": [0, 1, 2]}))
    assert isinstance(t._get_train_sampler(), RandomSampler)


def test_a_prompts_total_mass_is_its_weight_whatever_its_pair_count():
    from posttrain.pref.weighted_sampler import pair_sampling_weights

    pairs = [{"prefix_id": "a", "density": 0.6}] * 3 + [{"prefix_id": "b", "density": 0.4}]
    w = pair_sampling_weights(pairs, density_aware=True)
    assert w[:3] == pytest.approx([0.2] * 3) and w[3] == pytest.approx(0.4)
    assert sum(w[:3]) == pytest.approx(0.6)  # not 3 x 0.6
    assert pair_sampling_weights(pairs, density_aware=False) == [1.0] * 4


def padded(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_length_grouped_draw_keeps_the_draw_and_cuts_padding():
    rng = np.random.default_rng(0)
    w = rng.uniform(0.1, 1.0, 300)
    lengths = rng.integers(20, 256, 300).tolist()
    plain = WeightedDistributedSampler(w, num_samples=1000, num_replicas=1, rank=0, seed=5)
    grouped = WeightedDistributedSampler(w, num_samples=1000, num_replicas=1, rank=0, seed=5, lengths=lengths,
                                         batch_size=8, megabatch=10)
    a, b = list(plain), list(grouped)
    assert sorted(a) == sorted(b) and a != b  # the same weighted draw, in other batches
    for i in range(0, 1000, 80):  # each megabatch (10 batches of 8) holds its own items: a truncated run is a random subset
        assert sorted(a[i:i + 80]) == sorted(b[i:i + 80])
    cut = lambda xs: [xs[j:j + 8] for j in range(0, 1000, 8)]  # noqa: E731
    real = sum(lengths[i] for i in a)
    assert real / padded(cut(b), lengths) > 0.9 > 0.75 > real / padded(cut(a), lengths)
    # batch order is shuffled, not longest first: the first batches are not the longest
    firsts = [max(lengths[i] for i in bt) for bt in cut(b)[:100]]
    assert firsts != sorted(firsts, reverse=True)
    assert list(grouped) == b  # reproducible
    grouped.set_epoch(1)
    assert list(grouped) != b


def test_length_grouped_ranks_each_take_a_share_of_one_global_batch():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 100, 50).tolist()
    kw = dict(num_samples=97, seed=2, lengths=lengths, batch_size=4, megabatch=3)
    shards = [list(WeightedDistributedSampler(np.ones(50), num_replicas=2, rank=r, **kw)) for r in range(2)]
    full = WeightedDistributedSampler(np.ones(50), num_replicas=2, rank=0, **kw).grouped(
        WeightedDistributedSampler(np.ones(50), num_replicas=2, rank=0, **kw).global_draw())
    assert len(full) == 98 and [len(s) for s in shards] == [49, 49]
    for k in range(0, 48, 4):  # rank batches k..k+4 of both ranks = global batch k/4
        assert sorted(shards[0][k:k + 4] + shards[1][k:k + 4]) == sorted(full[2 * k:2 * k + 8])
    with pytest.raises(ValueError, match="lengths"):
        WeightedDistributedSampler(np.ones(50), num_replicas=1, rank=0, lengths=[1, 2])
