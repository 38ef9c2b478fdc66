"""Shared fixtures: the real SmolLM2 tokenizer (loaded once) and a tiny random LM."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("POSTTRAIN_HUB_DIR", None)  # a developer's hub mirror must not change what tests read

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (expected ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 tokenizer + chat template, converted from the GGUF once per session."""
    from posttrain.core.models import load_tokenizer

    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    load_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random Llama (2 layers, hidden 64) with the real tokenizer, saved as a folder
    that stages load like the `base_models` output."""
    from posttrain.core.models import build_tiny_causal_lm, save_folder

    out = tmp_path_factory.mktemp("tiny-model") / "policy"
    save_folder(build_tiny_causal_lm(tokenizer), tokenizer, out, {"source": "tiny-random"})
    return out


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)
