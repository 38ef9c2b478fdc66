"""Sequence-length report for tokenized SFT data: stats, cutoff table, histogram, examples.

The report is what one checks before picking `cutoff_len`: how long the rendered
examples are before truncation, how many a given cutoff would truncate, how
many tokens are masked, and how a few examples look with their masks.
"""

from __future__ import annotations

import numpy as np

from posttrain.rec.tokenization import IGNORE_INDEX, Stats, TokenizeSettings, tokenize_dataset

CUTOFFS = (256, 384, 512, 768, 896, 1024, 1536, 2048, 4096)


def _r(x: float) -> float:
    return round(float(x), 6)


def length_report(stats: Stats, labels_masked: int, labels_total: int, cutoff_len: int) -> dict:
    """min/max/mean/p50/p90/p95/p99 of lengths before truncation, truncated count and fraction,
    masked-token fraction, answer-could-not-fit count."""
    n = len(stats.full_len)
    full = np.asarray(stats.full_len, dtype=np.int64)
    out = {"n": n, "cutoff_len": cutoff_len,
           "truncated": int(sum(stats.truncated)),
           "truncated_fraction": _r(sum(stats.truncated) / n) if n else 0.0,
           "answer_truncated": stats.answer_truncated,
           "history_lines_dropped": stats.history_lines_dropped,
           "history_exhausted": stats.history_exhausted,
           "masked_fraction": _r(labels_masked / labels_total) if labels_total else 0.0,
           "tokens": int(labels_total)}
    if n:
        out.update({"min": int(full.min()), "max": int(full.max()), "mean": _r(full.mean())})
        for q in (50, 90, 95, 99):
            out[f"p{q}"] = _r(np.percentile(full, q))
        out["mean_after_truncation"] = _r(np.mean(stats.length))
    return out


def mask_counts(dataset) -> tuple[int, int]:
    """(masked label tokens, all label tokens) over a datasets.Dataset, via Arrow (no Python loop)."""
    import pyarrow.compute as pc

    flat = pc.list_flatten(dataset.data.column("labels"))
    total = len(flat)
    masked = int(pc.sum(pc.equal(flat, IGNORE_INDEX)).as_py() or 0)
    return masked, total


def cutoff_table(full_lengths, cutoffs=CUTOFFS, *, extra: int | None) -> list[dict]:
    """Fraction (and count) of examples longer than each candidate cutoff."""
    lens = np.asarray(full_lengths, dtype=np.int64)
    cs = sorted(set(cutoffs) | ({extra} if extra else set()))
    n = len(lens)
    return [{"cutoff": int(c), "truncated": int((lens > c).sum()),
             "truncated_fraction": _r((lens > c).mean()) if n else 0.0} for c in cs]


def histogram(full_lengths, bin_width: int = 32) -> list[dict]:
    """Counts per length bin (bin start), for a DVC bar plot."""
    lens = np.asarray(full_lengths, dtype=np.int64)
    if not len(lens):
        return []
    bins = lens // bin_width * bin_width
    values, counts = np.unique(bins, return_counts=True)
    return [{"length": int(v), "count": int(c)} for v, c in zip(values, counts)]


def render_example(tokenizer, input_ids, labels) -> str:
    """The guide's check: the decoded input, then the labels with masked runs shown as [-100 xN],
    then the decoded trained tokens alone."""
    parts, run = [], 0
    for tok, lab in zip(input_ids, labels):
        if lab == IGNORE_INDEX:
            run += 1
            continue
        if run:
            parts.append(f"[-100 x{run}]")
            run = 0
        parts.append(tokenizer.decode([lab]))
    if run:
        parts.append(f"[-100 x{run}]")
    trained = [lab for lab in labels if lab != IGNORE_INDEX]
    return "\n".join([
        f"--- {len(input_ids)} tokens, {len(input_ids) - len(trained)} masked, {len(trained)} trained",
        "INPUT:", tokenizer.decode(list(input_ids)),
        "LABELS:", "".join(parts),
        "TRAINED TEXT: " + repr(tokenizer.decode(trained)),
    ])


def tokenize_with_report(tokenizer, records: dict[str, list[dict]], s: TokenizeSettings) -> tuple[dict, dict, list]:
    """rec_tokenize's work: each split tokenized and label-masked -> (datasets by split, the
    length report as metrics, every example's untruncated length)."""
    splits, metrics, lengths = {}, {"cutoff_len": s.cutoff_len, "truncation": s.truncation}, []
    for name, rows in records.items():
        ds, stats = tokenize_dataset(tokenizer, rows, cutoff_len=s.cutoff_len, strategy=s.truncation, desc=name)
        splits[name] = ds
        metrics[name] = length_report(stats, *mask_counts(ds), s.cutoff_len)
        lengths += stats.full_len
    metrics["cutoff_table"] = cutoff_table(lengths, extra=s.cutoff_len)
    metrics["answer_truncated"] = sum(metrics[name]["answer_truncated"] for name in records)
    return splits, metrics, lengths


def save_splits(splits: dict, path) -> None:
    """The tokenized splits as one datasets folder. An explicit shard count: datasets writes no
    shard for an empty split (then cannot load it back); ~500 MB per shard otherwise."""
    import datasets

    shards = {k: 1 + ds.data.nbytes // 500_000_000 for k, ds in splits.items()}
    datasets.DatasetDict(splits).save_to_disk(str(path), num_shards=shards)
