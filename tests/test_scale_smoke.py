"""The full profile's code paths, at tiny size: `profiles/scale-smoke.yaml` in a copy of the project.

scale-smoke is full with only the sizes shrunk, so what runs here is what a GPU user runs:
a Qwen3-architecture policy with Qwen3's chat template (think block), QLoRA on a 4-bit base,
all-linear LoRA targets, full fine-tunes of the RM and verifier, the hub preference and
problem sets through the hub loaders, and ml-1m through the GroupLens download path. The hub
reads a local mirror in each dataset's published layout (POSTTRAIN_HUB_DIR); ml-1m comes
from a synthetic ml-1m.zip served on localhost.

`make test` runs the head of each pipeline (base model, rec through QLoRA fine-tuning,
pref_download, reason_collect); `make test-all` runs every stage.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import random
import threading
import zipfile

import pytest
import yaml

from dvc_project import Project

HEAD = ("rec_finetune", "pref_download", "reason_collect")


def ml1m_zip(users: int = 12, per_user: int = 20, movies: int = 40, seed: int = 0) -> bytes:
    """A synthetic ml-1m.zip in GroupLens' layout: ml-1m/{ratings,movies,users}.dat, `::`-separated,
    latin-1, integer ratings. Made-up films and users; not real data."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-1m/movies.dat", "".join(
            f"{m}::Film {m} ({1960 + m})::Drama|Comedy\n" for m in range(1, movies + 1)).encode("latin-1"))
        z.writestr("ml-1m/users.dat", "".join(
            f"{u}::{'MF'[u % 2]}::25::{u % 20}::0000{u}\n" for u in range(1, users + 1)).encode("latin-1"))
        lines = []
        for u in range(1, users + 1):
            for j, m in enumerate(rng.sample(range(1, movies + 1), per_user)):
                lines.append(f"{u}::{m}::{rng.randint(1, 5)}::{978300000 + 1000 * u + j}\n")
        z.writestr("ml-1m/ratings.dat", "".join(lines).encode("latin-1"))
    return buf.getvalue()


@pytest.fixture(scope="module")
def grouplens(tmp_path_factory):
    """http://127.0.0.1:PORT/ml-1m.zip, served for the module's lifetime."""
    root = tmp_path_factory.mktemp("grouplens")
    (root / "ml-1m.zip").write_bytes(ml1m_zip())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ml-1m.zip"
    server.shutdown()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, grouplens):
    from hub_fixtures import write_mirror

    proj = Project.copy_of_repo(tmp_path_factory.mktemp("smoke"), profile="scale-smoke")
    params = yaml.safe_load(proj.params())
    assert params["rec"]["source"] == "ml-1m"  # full's source; only where it is fetched from changes
    params["rec"]["source"] = grouplens
    (proj.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    mirror = tmp_path_factory.mktemp("hub")
    write_mirror(mirror)
    proj.env["POSTTRAIN_HUB_DIR"] = str(mirror)
    return proj


def _metrics(proj: Project, stage: str) -> dict:
    return json.loads((proj.root / "metrics" / f"{stage}.json").read_text(encoding="utf-8"))


def test_full_profile_heads_run_at_tiny_size(smoke):
    smoke.dvc("repro", *HEAD)
    root = smoke.root

    # The policy is Qwen3's architecture class with Qwen3's chat template.
    config = json.loads((root / "data/models/policy/config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    tok_cfg = (root / "data/models/policy/chat_template.jinja")
    template = tok_cfg.read_text() if tok_cfg.exists() else json.loads(
        (root / "data/models/policy/tokenizer_config.json").read_text())["chat_template"]
    assert "<think>" in template

    # ml-1m came through the download path and its `::` loader.
    prep = _metrics(smoke, "rec_prepare")
    assert prep["ratings"] == 12 * 20

    # QLoRA: a 4-bit base, all-linear targets, real optimizer steps.
    ft = _metrics(smoke, "rec_finetune")
    assert ft["quantization"] == "4bit" and ft["steps"] == 2
    adapter = json.loads((root / "data/rec/adapter/adapter_config.json").read_text())
    assert {"q_proj", "gate_proj", "down_proj"} <= {m.rsplit(".", 1)[-1] for m in adapter["target_modules"]}

    # The think block is prompt (masked), the answer after it is the label.
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "data/models/policy")
    row = load_from_disk(str(root / "data/rec/tokenized/train"))[0]
    masked = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab == -100]
    trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert tok.decode(masked).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.decode(trained).strip() in ("Yes<|im_end|>", "No<|im_end|>")

    # Every hub preference set and every hub problem set produced records through its loader.
    dl = _metrics(smoke, "pref_download")
    for src in ("hh-rlhf", "ultrafeedback-binarized", "stack-exchange-preferences", "champ"):
        assert dl["sources"][src]["pairs"] > 0, (src, dl["sources"][src])
    by_source = _metrics(smoke, "reason_collect")["by_source"]
    assert len(by_source) == 7 and all(s["selected"] == 2 for s in by_source.values()), by_source


@pytest.mark.slow  # every stage of the three pipelines: ~5 min here
def test_every_stage_of_the_full_profile_runs_at_tiny_size(smoke):
    smoke.dvc("repro")
    assert smoke.stale_stages() == set()
    stages = set(yaml.safe_load((smoke.root / "dvc.yaml").read_text())["stages"])
    lock = set(smoke.lock()["stages"])
    assert lock == stages  # every stage ran

    # DPO on the full profile's max_length: pairs were cut to fit, one prompt per pair.
    dpo = _metrics(smoke, "pref_dpo_run")
    assert dpo["pairs"]["longer_than_max_length"] > 0 and _metrics(smoke, "pref_dpo")["heldout"]["n"] > 0
    assert set(dpo["pairs"]["train_per_source"]) <= {"hh-rlhf", "ultrafeedback-binarized",
                                                     "stack-exchange-preferences", "champ"}
    # The RM and the verifier are full fine-tunes in full (num_layers 0, all layers trained).
    assert _metrics(smoke, "pref_rm")["heldout"]["n"] > 0
    assert _metrics(smoke, "reason_verifier")["heldout"]["n"] > 0
    # The hub code sets reach the sandbox: MBPP and APPS samples were executed and graded.
    filt = _metrics(smoke, "reason_filter")
    assert {"google-research-datasets__mbpp", "codeparrot__apps"} & set(filt["by_source"]), filt["by_source"]
    assert "eval_reward" in _metrics(smoke, "pref_grpo")
