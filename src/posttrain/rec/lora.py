"""LoRA / QLoRA supervised fine-tuning with peft + trl on pre-tokenized, label-masked rows.

The dataset already carries `labels` with every prompt token at -100, so trl's
own preparation is skipped (`skip_prepare_dataset`) and its collator pads the
labels with -100: the loss is completion-only by construction.
`quantization="4bit"` loads the base model with bitsandbytes NF4 (QLoRA) and
prepares it for k-bit training; on CUDA compute runs in bf16, on CPU in fp32.
Training runs in `train.precision` (bf16 autocast where the hardware has it) with the
frozen layers below `lora_layers` computed once (`posttrain.core.training.fit`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from posttrain.core.adapters import lora_config, save_adapter
from posttrain.core.io import atomic_path
from posttrain.core.live import callback
from posttrain.core.settings import param
from posttrain.core.training import WALL_TIME_FACTS, TrainSettings, device_args, fit

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "4bit")


@dataclass(frozen=True)
class LoraSettings:
    """rec_finetune's params (rec.finetune.*, rec.seed)."""

    max_train_examples: int = param("train rows used, a seeded sample (0 = all)", min=0)
    max_eval_examples: int = param("eval rows for the final eval loss (0 = all)", min=0)
    max_steps: int = param("optimizer steps", min=1)
    batch_size: int = param("rows per step and process", min=1)
    grad_accum: int = param("gradient accumulation steps", min=1)
    lr: float = param("learning rate", min=0, min_open=True)
    warmup_steps: int = param("linear warmup steps", min=0)
    lora_r: int = param("LoRA rank", min=1)
    lora_alpha: int = param("LoRA alpha", min=1)
    lora_dropout: float = param("LoRA dropout", min=0, max=1, max_open=True)
    target_modules: str = param("comma-separated module names, or all-linear")
    lora_layers: int = param("LoRA only on the top N decoder layers (0 = all); the frozen ones below are "
                             "computed once per row", min=0)
    quantization: str = param("none, or 4bit (QLoRA, bitsandbytes NF4; CUDA)", choices=QUANTIZATIONS)
    seed: int = param("training seed (and the train-row sample)")

    def modules(self) -> list[str] | str:
        """peft's target_modules: a list of names, or "all-linear"."""
        if self.target_modules == "all-linear":
            return self.target_modules
        return [m for m in self.target_modules.split(",") if m]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_base(model_dir, quantization: str = "none"):
    import torch
    from transformers import AutoModelForCausalLM

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "none":
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if _cuda() else torch.float32
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=compute)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, dtype=compute,
                                                     device_map="auto" if _cuda() else {"": "cpu"})
    except Exception as e:  # an unusable bitsandbytes build: say what to do instead
        raise RuntimeError(f"4-bit loading with bitsandbytes failed ({type(e).__name__}: {e}); "
                           "use quantization 'none' (plain LoRA) on this machine") from e
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _cap(ds, n: int):
    # Rows were shuffled with the seed in rec_prepare, so a head is a random sample.
    return ds.select(range(min(n, len(ds)))) if n and n > 0 else ds


def train(model_dir, tokenized_dir, adapter_dir, s: LoraSettings, t: TrainSettings, *, live_dir) -> dict:
    """Train a LoRA adapter; save it (atomically) to `adapter_dir`, curves to `live_dir` (dvclive).

    Returns {"metrics": {...}} on the main process
    and None on the other ranks of an `accelerate launch` (they only train).
    """
    import datasets
    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dd = datasets.load_from_disk(str(tokenized_dir))
    train_ds = _cap(dd["train"], s.max_train_examples)
    eval_ds = _cap(dd["eval"], s.max_eval_examples) if "eval" in dd else None
    model = load_base(model_dir, s.quantization)
    model.config.use_cache = False
    peft_config = lora_config(s.lora_r, s.lora_alpha, s.lora_dropout, "CAUSAL_LM", top_layers=s.lora_layers,
                              model=model, targets=s.modules())
    model = get_peft_model(model, peft_config)
    trainable, total = model.get_nb_trainable_parameters()
    cuda = _cuda()
    work = Path(tempfile.mkdtemp(prefix="rec_finetune."))
    try:
        args = SFTConfig(
            output_dir=str(work), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
            learning_rate=s.lr, warmup_steps=s.warmup_steps, lr_scheduler_type="linear",
            logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
            seed=s.seed, data_seed=s.seed, **device_args(t),
            dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
            # batches of similar lengths: less padding (the seq-length report's waste)
            train_sampling_strategy="group_by_length",
            dataloader_num_workers=0, disable_tqdm=False,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tokenizer, callbacks=[callback(live_dir)])
        run = fit(trainer, t)
        result = trainer.state
        losses = [h["train_loss"] for h in result.log_history if "train_loss" in h]
        metrics = {"train_loss": round(float(losses[-1]), 6) if losses else None,
                   "steps": int(trainer.state.global_step),
                   "train_examples": len(train_ds), "trainable_parameters": int(trainable),
                   "total_parameters": int(total), "quantization": s.quantization,
                   "device": "cuda" if cuda else "cpu", "world_size": int(args.world_size),
                   "lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_layers": s.lora_layers,
                   # the rate is wall time: it goes to the log and the caller, so the metrics file
                   # stays byte-identical across runs
                   **{k: v for k, v in run.items() if k not in WALL_TIME_FACTS}}
        log.info("rec_finetune: %s trained tokens/s (%s)", run["trained_tokens_per_s"], run["precision"])
        if eval_ds is not None and len(eval_ds):
            ev = trainer.evaluate()  # every rank: under DDP the eval set is sharded and gathered
            metrics["eval_loss"] = round(float(ev["eval_loss"]), 6)
            metrics["eval_examples"] = len(eval_ds)
        from posttrain.core.sharded import full_model

        trained = full_model(trainer, lambda: get_peft_model(load_base(model_dir, s.quantization), peft_config))
        if trained is None:
            return None  # rank 0 writes the adapter and metrics
        with atomic_path(adapter_dir, directory=True) as tmp:
            save_adapter(trained, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"metrics": metrics, "run": run}


def load_for_eval(model_dir, adapter_dir=None):
    """Base model (fp32) with the adapter merged in, in eval mode; no adapter -> the base model."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model.eval()
