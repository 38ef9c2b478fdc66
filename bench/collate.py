"""Padding waste of random vs length-grouped batches, side by side in one run.

    python bench/collate.py                       # data/rec/tokenized (train) if present
    python bench/collate.py --data data/rec/tokenized --batch-size 8
    python bench/collate.py --data lengths.jsonl  # one int (or {"length"|"input_ids": ...}) per line
    python bench/collate.py --source movielens    # fallback texts, tokenized with SmolLM2
    python bench/collate.py --source champ

waste = pad tokens / all tokens when each batch is padded to its longest member
(`padding='longest'`). Random = shuffled batches; grouped = the order of transformers'
`LengthGroupedSampler` (what the Trainer uses with `train_sampling_strategy=
"group_by_length"`, as the verifier does: sorted within shuffled mega-batches), cut into
batches.
Without rec data, the fallback builds rec-style prompts from ml-latest-small
(../shared/data beside the repo: last 10 rated movies -> "will the user like X?")
rendered with the SmolLM2 chat template, or uses CHAMP problems + solutions.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import numpy as np


REPO = Path(__file__).resolve().parents[1]
REC_TOKENIZED = REPO / "data" / "rec" / "tokenized"
# ../shared/data beside the repo (or beside a worktree's parent folder).
ML_SMALL = next((d / "shared" / "data" / "ml-latest-small" for d in REPO.parents
                 if (d / "shared" / "data" / "ml-latest-small").is_dir()),
                REPO.parent / "shared" / "data" / "ml-latest-small")


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Plain shuffled batches: the baseline."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def grouped_batches(lengths, batch_size: int, mega_batch_mult: int | None, seed: int) -> list[list[int]]:
    """The Trainer's length-grouped order (a seeded draw), cut into batches as its loader does."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(list(lengths), batch_size, mega_batch_mult,
                                       generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padding_waste(lengths, batches) -> dict:
    """Pad tokens / all tokens when each batch is padded to its longest member."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for b in batches:
        ls = lengths[list(b)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return {"real_tokens": real, "padded_tokens": padded, "pad_tokens": padded - real,
            "waste": (padded - real) / padded if padded else 0.0}


def lengths_from_path(path: Path, split: str) -> list[int]:
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise click.UsageError(f"{path}: no split {split!r} (has {', '.join(ds)})")
            ds = ds[split]
        if "input_ids" not in ds.column_names:
            raise click.UsageError(f"{path}: no input_ids column (has {', '.join(ds.column_names)})")
        return [len(x) for x in ds["input_ids"]]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        obj = json.loads(text)
        items = obj.get("lengths", obj.get(split)) if isinstance(obj, dict) else obj
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [_length(x, path, i) for i, x in enumerate(items, 1)]


def _length(x, path, i) -> int:
    if isinstance(x, int):
        return x
    if isinstance(x, dict):
        for key in ("length", "n_tokens", "len"):
            if isinstance(x.get(key), int):
                return x[key]
        if isinstance(x.get("input_ids"), list):
            return len(x["input_ids"])
    raise click.UsageError(f"{path}: item {i} is neither a length nor a record with length/input_ids")


def _tokenizer():
    from posttrain.core.models import load_tokenizer

    policy = REPO / "data" / "models" / "policy"
    return load_tokenizer(str(policy) if policy.is_dir() else "smollm2-135m-instruct")


def movielens_lengths(root: Path, history_len: int, limit: int, seed: int) -> list[int]:
    """Rec-style prompts from ml-latest-small, rendered with the chat template and tokenized."""
    if not (root / "ratings.csv").exists():
        raise click.UsageError(f"{root}/ratings.csv not found; pass --data or --source champ")
    with open(root / "movies.csv", encoding="utf-8", newline="") as fh:
        titles = {r["movieId"]: r["title"] for r in csv.DictReader(fh)}
    by_user: dict[str, list[tuple[int, str, str]]] = {}
    with open(root / "ratings.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            by_user.setdefault(r["userId"], []).append((int(r["timestamp"]), r["movieId"], r["rating"]))
    examples = []
    for user in sorted(by_user, key=int):
        hist = sorted(by_user[user])
        for i in range(history_len, len(hist)):
            examples.append((hist[i - history_len:i], hist[i]))
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(examples), size=min(limit, len(examples)), replace=False).tolist())
    tok = _tokenizer()
    texts = []
    for j in pick:
        past, (_, movie, rating) = examples[j]
        lines = "\n".join(f"- {titles.get(m, m)}: {r}/5" for _, m, r in past)
        messages = [
            {"role": "user", "content": "Given the user's recent ratings, will they like the next movie? "
                                        f"Answer Yes or No.\n\nRecent ratings:\n{lines}\n\n"
                                        f"Next movie: {titles.get(movie, movie)}"},
            {"role": "assistant", "content": "Yes" if float(rating) >= 4 else "No"},
        ]
        texts.append(tok.apply_chat_template(messages, tokenize=False))
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def champ_lengths(limit: int) -> list[int]:
    from posttrain.core.assets import asset_path
    from posttrain.reason.collators import verification_text
    from posttrain.reason.verifier import champ_examples

    recs = champ_examples(asset_path("champ"))
    tok = _tokenizer()
    texts = [verification_text(r["problem"], r["proof"]) for r in recs][:limit]
    return [len(ids) for ids in tok(texts)["input_ids"]]


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="datasets folder (save_to_disk) or JSON/JSONL of token lengths.")
@click.option("--split", default="train", show_default=True)
@click.option("--source", type=click.Choice(["auto", "movielens", "champ"]), default="auto", show_default=True,
              help="Without --data: auto = data/rec/tokenized if present, else movielens texts.")
@click.option("--movielens", "ml_root", type=click.Path(path_type=Path), default=ML_SMALL, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--mega-batch-mult", type=int, default=0, show_default=True,
              help="Mega-batch = this many batches (0: transformers' own choice, min(n / 4 batches, 50)).")
@click.option("--limit", type=int, default=5000, show_default=True, help="Examples for fallback sources.")
@click.option("--cutoff", type=int, default=0, help="Truncate lengths at this many tokens (0: none).")
@click.option("--seed", type=int, default=0, show_default=True)
def main(data, split, source, ml_root, batch_size, mega_batch_mult, limit, cutoff, seed):
    if data is not None:
        name, lengths = f"{data} [{split}]", lengths_from_path(data, split)
    elif source == "auto" and REC_TOKENIZED.is_dir():
        name, lengths = f"data/rec/tokenized [{split}]", lengths_from_path(REC_TOKENIZED, split)
    elif source in ("auto", "movielens"):
        print("bench: no rec tokenized data; tokenizing rec-style ml-latest-small prompts", file=sys.stderr)
        name, lengths = "ml-latest-small rec prompts (SmolLM2 chat template)", \
            movielens_lengths(ml_root, 10, limit, seed)
    else:
        name, lengths = "CHAMP problem+proof texts (SmolLM2)", champ_lengths(limit)
    if cutoff:
        lengths = [min(n, cutoff) for n in lengths]
    if not lengths:
        raise click.UsageError("no examples")
    ls = np.asarray(lengths)
    rnd = padding_waste(lengths, random_batches(len(lengths), batch_size, seed=seed))
    grp = padding_waste(lengths, grouped_batches(lengths, batch_size, mega_batch_mult or None, seed))
    ratio = grp["waste"] / rnd["waste"] if rnd["waste"] else float("nan")
    print(f"data: {name}: {len(lengths)} examples, tokens min/p50/max "
          f"{ls.min()}/{int(np.median(ls))}/{ls.max()}; batch_size {batch_size}, "
          f"mega_batch_mult {mega_batch_mult or 'transformers default'}")
    print(f"{'batching':<16}{'pad tokens':>12}{'all tokens':>12}{'waste':>9}")
    for label, w in (("random", rnd), ("length-grouped", grp)):
        print(f"{label:<16}{w['pad_tokens']:>12}{w['padded_tokens']:>12}{w['waste']:>9.2%}")
    verdict = "meets" if ratio <= 1 / 3 else "misses"
    print(f"grouped / random waste = {ratio:.3f} ({verdict} the <= 1/3 target)")


if __name__ == "__main__":
    main()
