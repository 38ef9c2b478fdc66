"""Base models: materialize a policy model as a plain transformers folder.

The offline default ships as one Q4_1 GGUF file. transformers can read it with
`gguf_file=`, but that dequantizes on every load (~50 s), so `base_models`
does it once: weights copied into a fresh model built from the GGUF's config,
then `save_pretrained` with the tokenizer and its chat template. Every later
stage loads the folder with plain `from_pretrained(path)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from posttrain.core import assets
from posttrain.core.io import atomic_path, write_json
from posttrain.core.settings import param

log = logging.getLogger(__name__)


TINY_PREFIX = "tiny-random"
DEFAULT_TOKENIZER = "smollm2-135m-instruct"
# `tiny-random-qwen3` stands in for the full profile's Qwen3 policy at test size: Qwen3's
# architecture class and its published chat template (an empty think block in finished
# assistant turns), so every Qwen3-specific code path runs without the hub.
TINY_ARCHS = ("llama", "qwen3")
QWEN3_TEMPLATE = Path(__file__).parent / "templates" / "qwen3.jinja"


def load_tokenizer(ref: str = DEFAULT_TOKENIZER):
    """Tokenizer (with chat template) from an asset name, GGUF file, folder or hub id."""
    from transformers import AutoTokenizer

    src = assets.resolve(ref)
    if isinstance(src, Path) and src.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    else:
        tok = AutoTokenizer.from_pretrained(str(src))
    return _fix_special_tokens(tok)


def _fix_special_tokens(tokenizer):
    # SmolLM2 ships pad == eos == <|im_end|>; label code that masks padding by id
    # would then also mask the real end-of-turn token the model must learn.
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        for cand in ("<|endoftext|>", tokenizer.unk_token):
            if cand and cand in tokenizer.get_vocab() and cand != tokenizer.eos_token:
                tokenizer.pad_token = cand
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.model_max_length > 1_000_000:
        tokenizer.model_max_length = 8192
    return tokenizer


def build_tiny_causal_lm(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2,
                         arch: str = "llama"):
    """A tiny random Llama (or Qwen3) with the real tokenizer's vocabulary: pipeline tests in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[arch]
    extra = {"head_dim": hidden_size // 4} if arch == "qwen3" else {}  # Qwen3's default head_dim is 128
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=8192, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **extra,
    )
    torch.manual_seed(seed)
    return model_cls(config)


def parse_tiny_ref(ref: str) -> tuple[str, str]:
    """`tiny-random[-ARCH][:TOKENIZER_REF]` -> (arch, tokenizer ref)."""
    name, _, tok_ref = ref.partition(":")
    arch = name[len(TINY_PREFIX):].lstrip("-") or "llama"
    if arch not in TINY_ARCHS:
        raise ValueError(f"{ref!r}: unknown tiny architecture {arch!r}; use one of {', '.join(TINY_ARCHS)}")
    return arch, tok_ref or DEFAULT_TOKENIZER


def load_source(ref: str):
    """(model, tokenizer) from an asset name, a GGUF file, a local folder, a hub id,
    or `tiny-random[-qwen3][:TOKENIZER_REF]` (a tiny random model for tests and CI)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if ref.startswith(TINY_PREFIX):
        arch, tok_ref = parse_tiny_ref(ref)
        tokenizer = load_tokenizer(tok_ref)
        if arch == "qwen3":
            tokenizer.chat_template = QWEN3_TEMPLATE.read_text(encoding="utf-8")
        return build_tiny_causal_lm(tokenizer, arch=arch), tokenizer
    src = assets.resolve(ref)
    if isinstance(src, Path) and src.suffix == ".gguf":
        folder, name = str(src.parent), src.name
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # A fresh model from the config gives clean module/dtype state; the
        # GGUF-loaded one carries loader details we do not want to save.
        config.dtype = torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
        # Tied embeddings may show as "missing" lm_head; anything else is a bug.
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"GGUF weights do not match config: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        del gguf_model
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(src))
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    tokenizer = _fix_special_tokens(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@dataclass(frozen=True)
class ModelSettings:
    """base_models' params (models.*)."""

    policy: str = param("asset name (smollm2-135m-instruct), GGUF file, local folder, hub id, "
                        "or tiny-random[-qwen3] (tests/CI)")


def materialize(ref: str, out_dir, meta: dict | None = None) -> Path:
    """Write `ref` as a transformers folder at `out_dir`, atomically (temp dir + rename)."""
    out_dir = Path(out_dir)
    model, tokenizer = load_source(ref)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{ref}: tokenizer has no chat template; chat stages need one")
    save_folder(model, tokenizer, out_dir, {"source": ref, **(meta or {})})
    return out_dir


def shrink_layers(model, *, num_layers: int, trainable_layers: int):
    """CPU-sized backbone: keep the first `num_layers` decoder layers and train only the top
    `trainable_layers` of them plus the final norm and the head; 0 = all, for both (the one
    convention of every layer-count param).

    Backward then stops at the first trainable layer, so a step costs little more than a
    forward pass through the kept layers."""
    prefix = model.base_model_prefix
    base = getattr(model, prefix)
    layers = getattr(base, "layers", None)
    if layers is None:
        if num_layers or trainable_layers:
            raise ValueError(f"{type(model).__name__}: no `.layers` to shrink; "
                             "use num_layers 0 and trainable_layers 0")
        return model
    if num_layers and num_layers < len(layers):
        base.layers = layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = list(model.config.layer_types)[:num_layers]
    if trainable_layers:
        keep = base.layers[max(0, len(base.layers) - trainable_layers):]
        trainable = {id(p) for m in (*keep, getattr(base, "norm", None)) if m is not None
                     for p in m.parameters()}
        for name, p in model.named_parameters():
            # the head is everything outside the base model (score / lm_head)
            p.requires_grad = id(p) in trainable or not name.startswith(f"{prefix}.")
    return model


def save_folder(model, tokenizer, out_dir, meta: dict) -> Path:
    """save_pretrained model + tokenizer into a temp dir, then swap it into place."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "posttrain_source.json", {
            "n_parameters": sum(p.numel() for p in model.parameters()), **meta})
    return out_dir
