"""pref training: reward model (uniform / density-aware), DPO, GRPO on tiny models.

Fixtures are small files in the pref data contract formats (pairs_all.jsonl,
prefixes_all.jsonl, prefix_id_map.tsv, ids.json, density_weights.npy), written
here because the producing stages live on another branch.
"""

import hashlib
import json

import numpy as np
import pytest

from posttrain.core.training import TrainSettings
from posttrain.pref import common, reward
from posttrain.core.io import DataError, read_json


def _pid(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:16]


def write_pref_fixture(root, n_common=12, n_rare=6, pairs_per_prefix=2):
    """A clustered toy set: many near-duplicate 'common' prompts (low density weight)
    and a few distinct 'rare' ones (high weight); two sources; a multi-turn prefix."""
    root.mkdir(parents=True, exist_ok=True)
    prefixes, pairs = [], []
    texts = [(f"What is {i} plus {i}?", "common", 1.0) for i in range(n_common)]
    texts += [(f"Describe rare topic number {i} in one line.", "rare", 6.0) for i in range(n_rare)]
    for k, (text, kind, raw_w) in enumerate(texts):
        src = "champ" if kind == "common" else "hh-rlhf"
        msgs = [{"role": "user", "content": text}]
        if k == 0:  # multi-turn prefix: the id still comes from the *first* user message
            msgs = msgs + [{"role": "assistant", "content": "Let me think."},
                           {"role": "user", "content": "Please answer."}]
        for j in range(pairs_per_prefix):
            pairs.append({"id": f"p{k}-{j}", "prefix": {"messages": msgs}, "src": src,
                          "chosen": f"A good, correct answer number {j}.",
                          "rejected": f"no {j}"})
        prefixes.append({"prefix_id": _pid(text), "prefix": {"messages": msgs}, "text": text,
                         "src": src, "n_pairs": pairs_per_prefix, "_w": raw_w})
    with open(root / "pairs_all.jsonl", "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    with open(root / "prefixes_all.jsonl", "w") as f:
        for p in prefixes:
            f.write(json.dumps({k: v for k, v in p.items() if k != "_w"}) + "\n")
    with open(root / "prefix_id_map.tsv", "w") as f:
        f.write("pair_id\tprefix_id\n")
        for p in pairs:
            f.write(f"{p['id']}\t{_pid(p['prefix']['messages'][0]['content'])}\n")
    (root / "ids.json").write_text(json.dumps([p["prefix_id"] for p in prefixes]))
    w = np.array([p["_w"] for p in prefixes], dtype=np.float64)
    np.save(root / "density_weights.npy", w / w.sum())
    return root


@pytest.fixture(scope="module")
def pref_dir(tmp_path_factory):
    return write_pref_fixture(tmp_path_factory.mktemp("pref"))


def _paths(d):
    return d / "pairs_all.jsonl", d / "ids.json", d / "density_weights.npy"


# ------------------------------------------------------------------ data helpers

def test_prefix_id_is_md5_of_first_user_message(pref_dir):
    pairs = common.load_pairs(pref_dir / "pairs_all.jsonl")
    tsv = dict(line.split("\t") for line in (pref_dir / "prefix_id_map.tsv").read_text().split("\n")[1:] if line)
    assert all(p["prefix_id"] == tsv[p["id"]] for p in pairs)
    multi = [p for p in pairs if len(p["messages"]) == 3][0]
    assert multi["prefix_id"] == _pid("What is 0 plus 0?")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("frac", [0.1, 0.3, 0.5])
def test_heldout_split_never_shares_a_prefix(pref_dir, seed, frac):
    pairs = common.load_pairs(pref_dir / "pairs_all.jsonl")
    train, held = common.split_by_prefix(pairs, frac, seed)
    assert train and held
    assert not {p["prefix_id"] for p in train} & {p["prefix_id"] for p in held}
    assert len(train) + len(held) == len(pairs)
    n_prefixes = len({p["prefix_id"] for p in pairs})
    assert len({p["prefix_id"] for p in held}) == int(np.ceil(frac * n_prefixes))
    assert common.split_by_prefix(pairs, frac, seed) == (train, held)  # deterministic


def test_bad_pairs_raise_with_line_and_field(tmp_path):
    good = {"id": "a", "prefix": {"messages": [{"role": "user", "content": "hi"}]},
            "chosen": "x", "rejected": "y", "src": "s"}
    bad = dict(good, prefix={"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "yo"}]})
    f = tmp_path / "pairs_all.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as e:
        common.load_pairs(f)
    assert "line 2" in str(e.value) or e.value.line == 2
    assert "prefix.messages" in str(e.value)


def test_stale_weights_raise(pref_dir, tmp_path):
    pairs = common.load_pairs(pref_dir / "pairs_all.jsonl")
    weights = common.load_prefix_weights(pref_dir / "ids.json", pref_dir / "density_weights.npy")
    weights.pop(pairs[0]["prefix_id"])
    with pytest.raises(DataError, match="no weight"):
        common.attach_weights(pairs, weights)
    (tmp_path / "ids.json").write_text(json.dumps(["a"]))
    with pytest.raises(DataError, match="weights vs"):
        common.load_prefix_weights(tmp_path / "ids.json", pref_dir / "density_weights.npy")


def test_rarity_buckets_follow_weights(pref_dir):
    w = common.load_prefix_weights(pref_dir / "ids.json", pref_dir / "density_weights.npy")
    th = common.rarity_thresholds(w.values(), 0.25)
    assert common.bucket_of(max(w.values()), th) == "rare"
    assert common.bucket_of(min(w.values()), th) == "common"


def test_render_keeps_answer_when_truncated(tokenizer):
    msgs = [{"role": "user", "content": "word " * 300}]
    ids, truncated = common.render_ids(tokenizer, msgs, "THE ANSWER", 64)
    assert truncated and len(ids) == 64
    assert "THE ANSWER" in tokenizer.decode(ids)


def test_pair_truncated_together_keeps_a_shared_prefix(tokenizer):
    msgs = [{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}]
    short, long = "Yes.", "No, " + "because " * 20 + "LONG END"
    c, r, truncated = reward.render_pair_ids(tokenizer, msgs, short, long, 64)
    alone = [common.render_ids(tokenizer, msgs, a, 64)[0] for a in (short, long)]
    assert truncated and len(r) == 64 and r == alone[1]  # the longer one as render_ids cuts it
    assert len(c) < 64 and c != alone[0]  # the shorter one lost the same leading tokens
    assert c[:10] == r[:10] and tokenizer.decode(c).endswith(tokenizer.decode(alone[0][-3:]))
    # an answer longer than max_length on its own: each keeps its end
    c, r, truncated = reward.render_pair_ids(tokenizer, msgs, short, "x " * 200 + "END", 64)
    assert truncated and (c, r) == (common.render_ids(tokenizer, msgs, short, 64)[0],
                                     common.render_ids(tokenizer, msgs, "x " * 200 + "END", 64)[0])
    # nothing over: untouched
    assert reward.render_pair_ids(tokenizer, msgs[:0] + [{"role": "user", "content": "hi"}], short, long, 512)[2] is False


# ------------------------------------------------------------------ stages on tiny models

def live_steps(live_dir, key):
    """Steps of one dvclive curve (plots/metrics/<key>.tsv: `step<TAB>key` rows, no timestamp)."""
    rows = (live_dir / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()
    assert rows[0] == f"step\t{key.rsplit('/', 1)[-1]}"
    return [int(r.split("\t")[0]) for r in rows[1:]]


# The library takes every training setting explicitly (defaults live in params.yaml);
# these are the values the tests do not vary.
RM = dict(max_pairs=0, heldout_fraction=0.2, max_length=512, max_steps=40, batch_size=4, eval_batch_size=4, grad_accum=1, group_by_length=True,
          lr=5e-5, lora_r=0, lora_alpha=32, num_layers=0, trainable_layers=0, bucket_quantile=0.25, seed=0,
          train_seed=0)
DPO = dict(max_pairs=0, heldout_fraction=0.2, split_seed=0, max_length=512, max_steps=30, batch_size=2,
           eval_batch_size=4, grad_accum=1, lr=5e-5, beta=0.1, lora_r=8, lora_alpha=16, lora_dropout=0.0, lora_layers=0,
           bucket_quantile=0.25, seed=0)
GRPO = dict(eval_prompts=16, max_prompts=64, max_steps=8, batch_size=8, num_generations=4,
            max_completion_length=48, max_length=512, lr=1e-5, temperature=1.0, beta=0.0, lora_r=8,
            lora_alpha=16, lora_layers=0, seed=0, use_vllm=False, eval_batch_size=2)

# fp32 keeps these tests' figures the same on CPUs with and without bf16; the frozen trunk is on
# as in the default params (tests/core/test_training.py holds the bf16 and trunk equivalences).
MACHINE = TrainSettings(precision="fp32", frozen_trunk=True, labelled_head=True, shared_prefill=True,
                        shared_prefix=True, frozen_cast=True, reuse_freed_memory=True)


def rm_train(pairs, ids, weights, backbone, out, *, live_dir, **kw):
    """train_reward_model from the flat param dicts below (RM): its settings and PairData."""
    from posttrain.pref.common import PairData

    data = PairData(**{k: kw.pop(k) for k in ("density_aware", "max_pairs", "heldout_fraction",
                                                "bucket_quantile")}, seed=kw.pop("seed"))
    return reward.train_reward_model(pairs, ids, weights, out, reward.RewardSettings(backbone=str(backbone), **kw),
                                     data, MACHINE, live_dir=live_dir)


def dpo_train(pairs, ids, weights, policy, out, *, live_dir, **kw):
    from posttrain.pref.common import PairData
    from posttrain.pref.dpo import DPOSettings, train_dpo

    data = PairData(**{k: kw.pop(k) for k in ("density_aware", "max_pairs", "heldout_fraction",
                                                "bucket_quantile")}, seed=kw.pop("split_seed"))
    return train_dpo(pairs, ids, weights, policy, out, DPOSettings(**kw), data, MACHINE, live_dir=live_dir)


def grpo_train(prefixes, policy, rm_dir, out, *, live_dir, gen_cache_dir=None, **kw):
    from posttrain.pref.grpo import GRPOSettings, train_grpo

    return train_grpo(prefixes, policy, rm_dir, out, GRPOSettings(**kw), MACHINE, live_dir=live_dir,
                      gen_cache_dir=gen_cache_dir)


@pytest.fixture(scope="module")
def trained_rm(pref_dir, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm"
    res = rm_train(*_paths(pref_dir), tiny_model_dir, out, **{
        **RM, "density_aware": True, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 6,
        "batch_size": 4, "lr": 1e-3, "num_layers": 1, "trainable_layers": 1, "seed": 0},
        live_dir=out.parent / "dvclive")
    return out, res


def test_reward_model_smoke(trained_rm):
    out, res = trained_rm
    m = res["metrics"]
    assert (out / "config.json").is_file() and (out / "split.json").is_file()
    assert m["train"]["steps"] == 6
    assert m["pairs"]["train"] + m["pairs"]["heldout"] == m["pairs"]["used"]
    h = m["heldout"]
    assert h["n"] == m["pairs"]["heldout"] and 0.0 <= h["accuracy"] <= 1.0
    assert sum(v["n"] for v in m["heldout_per_source"].values()) == h["n"]
    assert sum(v["n"] for v in m["heldout_buckets"].values()) == h["n"]
    # Per-pair predictions are what the metrics (and `posttrain compare`) are computed from.
    pred = res["predictions"]
    assert len(pred) == h["n"] and [r["id"] for r in pred] == sorted(r["id"] for r in pred)
    assert h["accuracy"] == pytest.approx(np.mean([r["correct"] for r in pred]), abs=1e-6)
    assert h["n_clusters"] == len({r["prefix_id"] for r in pred}) == m["pairs"]["heldout_prefixes"]
    for b in ("rare", "common"):
        assert m["heldout_buckets"][b]["n"] == sum(r["bucket"] == b for r in pred)
    # The sampler handed out exactly steps * batch indices.
    assert read_json(out / "sampling.json")["draws"] == 6 * 4
    assert read_json(out / "sampling.json")["expected_rare_vs_common_ratio"] == pytest.approx(6.0)
    p = read_json(out / "sampling.json")["prompts"]  # per prompt: all its pairs' draws together
    assert p["draws"] == 6 * 4 and p["items"] == m["pairs"]["train_prefixes"]
    assert live_steps(out.parent / "dvclive", "loss") == [1, 2, 3, 4, 5, 6]
    split = read_json(out / "split.json")
    assert not set(split["heldout_prefix_ids"]) & set(split["train_prefix_ids"])
    model, tok = common.load_reward_model(out)
    assert model.config.num_labels == 1 and model.config.num_hidden_layers == 1


def test_uniform_reward_model_draws_uniformly(pref_dir, tiny_model_dir, tmp_path):
    res = rm_train(*_paths(pref_dir), tiny_model_dir, tmp_path / "rm", **{
        **RM, "density_aware": False, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 2,
        "batch_size": 4, "seed": 0},
        live_dir=tmp_path / "dvclive")
    s = res["sampling"]
    assert s["expected_rare_vs_common_ratio"] == pytest.approx(1.0)
    assert s["weight_max_over_min"] == pytest.approx(1.0)
    assert res["metrics"]["density_aware"] is False


def test_train_seed_moves_the_model_not_the_heldout_set(pref_dir, tiny_model_dir, tmp_path):
    """pref.rm.train_seed reseeds training only: the held-out pairs, their buckets and the
    split that GRPO reads stay put, and the trained model changes."""
    runs = [rm_train(*_paths(pref_dir), tiny_model_dir, tmp_path / f"rm{t}", **{
        **RM, "density_aware": True, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 2, "batch_size": 4,
        "lr": 1e-3, "num_layers": 1, "trainable_layers": 1, "seed": 0, "train_seed": t},
        live_dir=tmp_path / f"live{t}") for t in (0, 1)]
    held = [[(r["id"], r["bucket"]) for r in res["predictions"]] for res in runs]
    assert held[0] == held[1] and held[0]
    splits = [read_json(tmp_path / f"rm{t}" / "split.json") for t in (0, 1)]
    assert splits[0] == splits[1] and splits[0]["seed"] == 0
    scores = [[r["chosen_score"] for r in res["predictions"]] for res in runs]
    assert scores[0] != scores[1]


def test_grpo_eval_prompts_follow_the_split_seed_not_the_training_seed(pref_dir, tiny_model_dir, trained_rm,
                                                                         tmp_path):
    rm_dir, _ = trained_rm
    kw = {**GRPO, "eval_prompts": 2, "max_steps": 1, "batch_size": 4, "num_generations": 4,
          "max_completion_length": 4, "max_length": 64, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8}
    evals = [[p["id"] for p in grpo_train(pref_dir / "prefixes_all.jsonl", tiny_model_dir, rm_dir, tmp_path / f"g{t}",
                                          **{**kw, "seed": t}, live_dir=tmp_path / f"live{t}")["predictions"]]
             for t in (0, 3)]
    assert evals[0] == evals[1] and len(evals[0]) == 2


def test_dpo_smoke(pref_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "dpo_adapter"
    res = dpo_train(*_paths(pref_dir), tiny_model_dir, out, **{
        **DPO, "density_aware": True, "heldout_fraction": 0.3, "max_length": 64, "max_steps": 3,
        "batch_size": 2, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8, "lora_layers": 1, "seed": 0},
        live_dir=tmp_path / "dvclive")
    m = res["metrics"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["layers_to_transform"] == [1]  # top 1 of the 2 tiny layers
    assert m["train"]["steps"] == 3 and m["train"]["draws"] == 3 * 2
    assert m["train"]["labelled_positions_head"] is True  # trl's fused head swapped for the compact one
    h = m["heldout"]
    assert h["n"] == m["pairs"]["heldout"] > 0
    assert 0.0 <= h["reward_accuracy"] <= 1.0 and np.isfinite(h["reward_margin"])
    hb = m["heldout_buckets"]
    assert hb["rare"]["n"] + hb["common"]["n"] <= h["n"]
    assert sum(hb[b]["n"] for b in ("rare", "middle", "common")) == h["n"]
    assert m["pairs"]["heldout_identical_after_truncation"] == 0 and h["identical_after_truncation_fraction"] == 0
    # at max_length 64 the fixture pairs are cut (pair_fit), and train_dpo checked that trl
    # tokenized every training pair within max_length
    assert 0 < m["pairs"]["longer_than_max_length"] <= m["pairs"]["used"]
    assert live_steps(tmp_path / "dvclive", "loss") == [1, 2, 3]
    # Every held-out pair has its implicit rewards (the metrics are computed from these rows).
    pred = res["predictions"]
    assert len(pred) == h["n"] and h["n_clusters"] == len({r["prefix_id"] for r in pred})
    assert h["reward_accuracy"] == pytest.approx(np.mean([r["correct"] for r in pred]), abs=1e-6)
    assert h["reward_margin"] == pytest.approx(np.mean([r["margin"] for r in pred]), abs=1e-5)


def test_grpo_smoke(pref_dir, tiny_model_dir, trained_rm, tmp_path):
    rm_dir, _ = trained_rm
    out = tmp_path / "grpo_adapter"
    res = grpo_train(pref_dir / "prefixes_all.jsonl", tiny_model_dir, rm_dir, out, **{
        **GRPO, "eval_prompts": 2, "max_steps": 2, "batch_size": 4, "num_generations": 4,
        "max_completion_length": 8, "max_length": 64, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8, "seed": 0},
        live_dir=tmp_path / "dvclive")
    m = res["metrics"]
    assert (out / "adapter_config.json").is_file()
    held = read_json(rm_dir / "split.json")["heldout_prefix_ids"]
    assert m["prompts"]["train"] + m["prompts"]["eval"] == len(held)
    assert m["train"]["steps"] == 2 and m["train"]["labelled_positions_head"] is True
    # 1 prompt x 4 generations per step: one prefill per prompt (core.rollouts)
    assert m["train"]["rollout_rows"] == 8 and m["train"]["rollout_prompts_prefilled"] == 2
    assert live_steps(tmp_path / "dvclive", "reward") == [1, 2]
    assert all(np.isfinite(m["eval_reward"][k]) for k in ("before", "after", "delta"))
    r = m["eval_reward"]
    assert r["n"] == r["n_clusters"] == 2 and r["delta"] == pytest.approx(r["after"] - r["before"], abs=1e-5)
    pred = res["predictions"]
    assert [p["id"] for p in pred] == sorted(p["id"] for p in pred) and len(pred) == 2
    assert r["delta"] == pytest.approx(np.mean([p["reward_after"] - p["reward_before"] for p in pred]), abs=1e-5)
    rows = [json.loads(x) for x in (out / "eval_completions.jsonl").read_text().splitlines()]
    assert {r["prefix_id"] for r in rows} <= set(held) and len(rows) == 2


def test_grpo_before_eval_comes_from_the_generation_cache(pref_dir, tiny_model_dir, trained_rm, tmp_path, caplog):
    """The base policy's greedy eval completions are cached: a rerun (e.g. after the reward
    model changed) regenerates none of them, and gets the same "before" rewards."""
    import logging

    from posttrain.core.generation import GenerationCache
    from posttrain.core.fingerprint import model_key

    rm_dir, _ = trained_rm
    kw = {**GRPO, "eval_prompts": 3, "max_steps": 1, "batch_size": 4, "num_generations": 4,
          "max_completion_length": 6, "max_length": 64, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8, "seed": 0}
    cache = tmp_path / "gen_cache"
    runs = []
    for i in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="posttrain.pref.grpo"):
            res = grpo_train(pref_dir / "prefixes_all.jsonl", tiny_model_dir, rm_dir, tmp_path / f"g{i}", **kw,
                             live_dir=tmp_path / f"live{i}", gen_cache_dir=cache)
        runs.append((res, [r.getMessage() for r in caplog.records if "greedy eval" in r.getMessage()]))
    assert len(GenerationCache(cache, model_key(str(tiny_model_dir)))) == 3
    assert runs[0][1][0] == "greedy eval: 3 completions, 0 from the cache"
    assert runs[1][1][0] == "greedy eval: 3 completions, 3 from the cache"
    before = [[p["reward_before"] for p in r["predictions"]] for r, _ in runs]
    assert before[0] == before[1]


def test_grpo_use_vllm_without_vllm_is_a_clear_error(tmp_path):
    import importlib.util

    from posttrain.pref.grpo import require_vllm

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match="pip install vllm"):
        require_vllm()


def test_grpo_prompt_split_is_disjoint():
    from posttrain.pref.grpo import split_prompts

    ids = [f"{i:016x}" for i in range(10)]
    train, ev = split_prompts(ids, 3, 0, seed=1)
    assert len(ev) == 3 and len(train) == 7 and not set(train) & set(ev)
    assert split_prompts(ids, 100, 2, seed=1)[0].__len__() == 2  # eval capped at half, train capped


def test_reward_function_scores_prompt_plus_completion(trained_rm):
    from posttrain.pref.grpo import RewardModelScore

    model, tok = common.load_reward_model(trained_rm[0])
    fn = RewardModelScore(model, tok, max_length=64, batch_size=2, t=MACHINE)
    prompts = [[{"role": "user", "content": "hi"}]] * 2
    r = fn(prompts, [[{"role": "assistant", "content": "A good, correct answer."}],
                     [{"role": "assistant", "content": "no"}]])
    assert len(r) == 2 and all(np.isfinite(r)) and r[0] != r[1]
