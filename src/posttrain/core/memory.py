"""Back-of-the-envelope memory for one batch: weights + activations + overhead.

    weights     = n_params * bytes(dtype)
                  (+ training: gradients n_trainable * bytes(dtype)
                   + optimizer state n_trainable * optimizer_bytes, AdamW = 8: two fp32 moments)
    activations = batch * seq_len * hidden * layers_kept * activation_factor * bytes(dtype)
                  + batch * seq_len * vocab * bytes(logits_dtype)          (if vocab_size given)
                  layers_kept = num_layers when training (kept for backward), 1 at inference
    overhead    = overhead_fraction * (weights + activations)   (allocator, CUDA context, buffers)
    total       = weights + activations + overhead

`activation_factor` is the number of hidden-sized values a transformer block keeps
per token for the backward pass; ~17 with fused attention (Korthikanti et al. 2022
count 34 bytes/token/hidden unit in 16-bit, without the attention-score term).

Worked example (pinned in tests/test_collators.py): SmolLM2-135M (134,515,008
params, hidden 576, 30 layers, vocab 49,152), full fine-tune in bf16 with AdamW,
batch 8 x 512 tokens, fp32 logits, 10% overhead:
    weights+grads = 2 * 134,515,008 * 2            =   538,060,032
    AdamW state   = 134,515,008 * 8                = 1,076,120,064
    activations   = 8*512*576*30*17*2              = 2,406,481,920
    logits        = 8*512*49,152*4                 =   805,306,368
    subtotal                                       = 4,825,968,384
    overhead 10%                                   =   482,596,838.4
    total                                          = 5,308,565,222.4 B ~= 4.94 GiB
"""

from __future__ import annotations

DTYPE_BYTES = {
    "float32": 4.0, "fp32": 4.0, "float": 4.0,
    "float16": 2.0, "fp16": 2.0, "half": 2.0,
    "bfloat16": 2.0, "bf16": 2.0,
    "int8": 1.0, "8bit": 1.0,
    "int4": 0.5, "4bit": 0.5, "nf4": 0.5,
}
OPTIMIZER_BYTES = {"adamw": 8.0, "adam": 8.0, "sgd": 0.0, "sgd_momentum": 4.0, "adamw_8bit": 2.0, "none": 0.0}


def dtype_bytes(dtype) -> float:
    """Bytes per element for a dtype name or a torch.dtype."""
    key = str(dtype).removeprefix("torch.").lower()
    if key not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(sorted(DTYPE_BYTES))}")
    return DTYPE_BYTES[key]


def estimate_batch_memory(n_params: int, batch_size: int, seq_len: int, hidden_size: int,
                          num_layers: int, dtype="float32", vocab_size: int | None = None,
                          training: bool = True, n_trainable: int | None = None,
                          optimizer: str = "adamw", activation_factor: float = 17.0,
                          logits_dtype="float32", overhead_fraction: float = 0.1) -> dict:
    """Estimated bytes for one forward(+backward) step; see the module docstring.

    Returns the parts in bytes (`weights`, `gradients`, `optimizer`, `activations`,
    `logits`, `overhead`, `total`) and `total_gib`.
    """
    for name, v in (("n_params", n_params), ("batch_size", batch_size), ("seq_len", seq_len),
                    ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(sorted(OPTIMIZER_BYTES))}")
    b = dtype_bytes(dtype)
    trainable = n_params if n_trainable is None else n_trainable
    weights = n_params * b
    gradients = trainable * b if training else 0.0
    optim = trainable * OPTIMIZER_BYTES[optimizer] if training else 0.0
    layers_kept = num_layers if training else 1
    activations = batch_size * seq_len * hidden_size * layers_kept * activation_factor * b
    logits = batch_size * seq_len * vocab_size * dtype_bytes(logits_dtype) if vocab_size else 0.0
    subtotal = weights + gradients + optim + activations + logits
    overhead = overhead_fraction * subtotal
    total = subtotal + overhead
    return {"weights": weights, "gradients": gradients, "optimizer": optim,
            "activations": activations, "logits": logits, "overhead": overhead,
            "total": total, "total_gib": total / 2**30}


def estimate_for_model(model, batch_size: int, seq_len: int, dtype=None, **kw) -> dict:
    """`estimate_batch_memory` with sizes read from a transformers model and its config."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_params = sum(p.numel() for p in model.parameters())
    kw.setdefault("n_trainable", sum(p.numel() for p in model.parameters() if p.requires_grad))
    return estimate_batch_memory(
        n_params=n_params, batch_size=batch_size, seq_len=seq_len, hidden_size=cfg.hidden_size,
        num_layers=cfg.num_hidden_layers, dtype=dtype or next(model.parameters()).dtype,
        vocab_size=kw.pop("vocab_size", getattr(cfg, "vocab_size", None)), **kw)
