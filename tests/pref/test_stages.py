"""pref_download -> pref_prefixes -> pref_embed -> pref_density end to end on tiny inputs:
the shared data contracts, byte-identical reruns, incremental embedding."""

import json
from pathlib import Path

import numpy as np
import pytest
from stage_runner import param_args, run, stage

REPO = Path(__file__).resolve().parents[2]


def hh(first, answers, follow=None):
    body = f"\n\nHuman: {first}"
    if follow:
        body += f"\n\nAssistant: Sure.\n\nHuman: {follow}"
    return {"chosen": body + f"\n\nAssistant: {answers[0]}", "rejected": body + f"\n\nAssistant: {answers[1]}"}


ROWS = [hh("How do I bake sourdough bread?", ("Use a starter.", "Buy it.")),
        hh("How do I bake sourdough bread?", ("Feed the starter daily.", "No idea."), follow="More?"),
        hh("What is a good bread recipe?", ("Flour, water, salt, yeast.", "Sand.")),
        hh("How many moons does Mars have?", ("Two: Phobos and Deimos.", "Seven.")),
        hh("Explain photosynthesis briefly.", ("Plants turn light into sugar.", "Magic.")),
        {"prompt": "Write a haiku about rain.", "chosen": "Soft rain on tin roofs", "rejected": "Rain."}]


def pipeline(d: Path, src: Path, k=2):
    run("pref_download", ["--out", d / "pairs_all.jsonl", "--metrics", d / "m_download.json",
                          "--per-prompt", 2, "--seed", 0, f"--path:{src}", 0])
    run("pref_prefixes", ["--pairs", d / "pairs_all.jsonl", "--prefixes", d / "prefixes_all.jsonl",
                          "--id-map", d / "prefix_id_map.tsv", "--metrics", d / "m_prefixes.json"])
    run("pref_embed", ["--prefixes", d / "prefixes_all.jsonl", "--embedder", "all-minilm-l6-v2",
                       "--text", "first_user", "--batch-size", 4, "--cache-dir", d / "embed_cache", "--embeddings", d / "embeddings.npy",
                       "--ids", d / "ids.json", "--info", d / "embeddings_info.json",
                       "--metrics", d / "m_embed.json"])
    run("pref_density", ["--embeddings", d / "embeddings.npy", "--ids", d / "ids.json",
                         "--info", d / "embeddings_info.json", "--prefixes", d / "prefixes_all.jsonl",
                         "--k", k, "--eps", 0.01, "--method", "auto", "--auto-threshold", 20000, "--power", 1, "--cap-quantile", 1, "--seed", 0,
                         "--weights", d / "density_weights.npy", "--metadata", d / "embeddings_metadata.json",
                         "--projection", d / "projection.json", "--metrics", d / "m_density.json",
                         "--hist", d / "hist.json"])


DATA_OUTS = ["pairs_all.jsonl", "prefixes_all.jsonl", "prefix_id_map.tsv", "embeddings.npy", "ids.json",
             "embeddings_info.json", "density_weights.npy", "embeddings_metadata.json", "projection.json"]


def test_pipeline_contracts_rerun_and_increment(tmp_path):
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    d = tmp_path / "pref"
    pipeline(d, src)

    pairs = [json.loads(line) for line in (d / "pairs_all.jsonl").read_text().splitlines()]
    assert len(pairs) == 6
    assert all(set(p) == {"id", "prefix", "chosen", "rejected", "src"} for p in pairs)
    assert all(p["prefix"]["messages"][-1]["role"] == "user" for p in pairs)
    prefixes = [json.loads(line) for line in (d / "prefixes_all.jsonl").read_text().splitlines()]
    assert len(prefixes) == 5  # the two sourdough pairs share a first user message
    assert all(set(p) == {"prefix_id", "prefix", "text", "src", "n_pairs"} for p in prefixes)
    ids = json.loads((d / "ids.json").read_text())
    assert ids == [p["prefix_id"] for p in prefixes]
    tsv = (d / "prefix_id_map.tsv").read_text().splitlines()
    assert tsv[0] == "pair_id\tprefix_id" and len(tsv) == 7
    emb = np.load(d / "embeddings.npy")
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    w = np.load(d / "density_weights.npy")
    assert w.shape == (5,) and w.dtype == np.float64 and abs(w.sum() - 1) < 1e-12
    # the two bread prompts are each other's neighbours: they weigh less than the others
    bread = [i for i, p in enumerate(prefixes) if "bread" in p["text"]]
    assert max(w[bread]) < min(np.delete(w, bread))
    meta = json.loads((d / "embeddings_metadata.json").read_text())
    assert meta["embedding"]["embedder"] == "all-minilm-l6-v2" and meta["density"]["k_effective"] == 2
    assert meta["weights"]["max_min_ratio"] >= 1
    proj = json.loads((d / "projection.json").read_text())
    assert [r["id"] for r in proj] == ids
    dl = json.loads((d / "m_download.json").read_text())
    assert dl["sources"][f"path:{src}"]["rows"] == 6 and dl["pairs"] == 6
    assert json.loads((d / "m_embed.json").read_text())["embedded"] == 5

    before = {f: (d / f).read_bytes() for f in DATA_OUTS}
    pipeline(d, src)  # rerun: byte-identical, nothing re-embedded
    assert {f: (d / f).read_bytes() for f in DATA_OUTS} == before
    assert json.loads((d / "m_embed.json").read_text())["embedded"] == 0

    with src.open("a") as fh:  # append a pair with a new prompt: only it is embedded
        fh.write(json.dumps(hh("Name a prime number.", ("7", "8"))) + "\n")
    pipeline(d, src)
    assert json.loads((d / "m_embed.json").read_text())["embedded"] == 1
    emb2 = np.load(d / "embeddings.npy")
    assert emb2.shape == (6, 384) and np.array_equal(emb2[:5], emb)


def test_download_source_arguments(tmp_path):
    from click.testing import CliRunner

    main = stage("pref_download")
    for bad in (["--champ"], ["--champ", "many"], []):
        res = CliRunner().invoke(main, ["--out", tmp_path / "p.jsonl", "--metrics", tmp_path / "m.json", *bad])
        assert res.exit_code == 2, res.output


def test_download_champ_tiny(tmp_path):
    run("pref_download", ["--out", tmp_path / "p.jsonl", "--metrics", tmp_path / "m.json",
                          "--per-prompt", 2, "--seed", 0, "--champ", 5])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["pairs"] == 5 and m["sources"]["champ"]["capped"]
    first = (tmp_path / "p.jsonl").read_bytes()
    run("pref_download", ["--out", tmp_path / "p.jsonl", "--metrics", tmp_path / "m.json",
                          "--per-prompt", 2, "--seed", 0, "--champ", 5])
    assert (tmp_path / "p.jsonl").read_bytes() == first


@pytest.mark.parametrize("k", [1, 50])
def test_density_stage_k_bounds(tmp_path, k):
    d = tmp_path
    np.save(d / "e.npy", np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32))
    (d / "ids.json").write_text(json.dumps(["a", "b", "c", "d"]))
    (d / "info.json").write_text("{}")
    (d / "p.jsonl").write_text("".join(json.dumps({"prefix_id": i, "text": i}) + "\n" for i in "abcd"))
    run("pref_density", ["--embeddings", d / "e.npy", "--ids", d / "ids.json", "--info", d / "info.json",
                         "--prefixes", d / "p.jsonl", "--k", k, "--eps", 0.01, *param_args("pref.density"),
                         "--seed", 0, "--weights", d / "w.npy",
                         "--metadata", d / "meta.json", "--projection", d / "proj.json",
                         "--metrics", d / "m.json", "--hist", d / "h.json"])
    m = json.loads((d / "m.json").read_text())
    assert m["k_effective"] == min(k, 3) and abs(np.load(d / "w.npy").sum() - 1) < 1e-12
