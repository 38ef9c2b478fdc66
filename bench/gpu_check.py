"""GPU check: every trainer's placement at the full profile's shapes, in bf16 on one CUDA GPU,
for a few steps each: throughput (tokens/s, model TFLOP/s, fraction of the measured bf16
matmul peak) and a learning check (the loss on a fixed batch falls; GRPO's reward rises).

    bash bench/gpu_check.sh            # on the GPU machine, one command, < 8 min
    python bench/gpu_check.py --dry-run    # tiny shapes on the CPU (tests/test_gpu_check.py)

It needs only torch, transformers and peft (what the GPU machine has): nothing to install,
no trl, datasets or dvc. The model is Qwen3-0.6B's architecture (profiles/full.yaml's policy)
with random weights: throughput depends on the shapes, not the weights, and the machine
cannot reach the hub. Each trainer is a short plain loop with the stage's placement and
loss, not trl's code path (trl is not on the machine):

    rec       LoRA r 8 on all linear layers, completion-only cross-entropy, 8 x 1024 tokens
    rm        full fine-tune, sequence-classification head, Bradley-Terry, 16 pairs x 1024
    dpo       LoRA r 16, reference = adapter off (peft), DPO sigmoid loss, 8 pairs x 1024
    grpo      LoRA r 8 + the head: 64 rollouts (8 prompts x 8) of 128 new tokens, group-normalized
              advantages, policy gradient; reward = share of tokens from the vocabulary's first
              eighth (so it can rise)
    verifier  full fine-tune, regression head, MSE, 16 x 2048 tokens
"""

from __future__ import annotations

import sys
import time

# Qwen3-0.6B's published config (profiles/full.yaml's policy)
FULL = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256)


def config(dims: dict, **kw):
    from transformers import Qwen3Config

    return Qwen3Config(**{"tie_word_embeddings": True, "pad_token_id": 0, **dims, **kw})


def matmul_peak(device, dtype, n: int) -> float:
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_params(cfg, layers: int | None = None) -> int:
    h, i = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return (layers if layers is not None else cfg.num_hidden_layers) * (2 * h * q + 2 * h * kv + 3 * h * i)


def lora(model, r, head: bool = False):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0,
                                            modules_to_save=["lm_head"] if head else None))


def run(name, step, steps, tokens_per_step, flops_per_token, device, peak):
    """`step()` -> loss (or -reward) `steps` times; the first step is warm-up (not timed)."""
    first = float(step())
    sync(device)
    t = time.perf_counter()
    last = first
    for _ in range(steps - 1):
        last = float(step())
    sync(device)
    dt = time.perf_counter() - t
    tps = tokens_per_step * (steps - 1) / dt
    ok = last < first
    print(f"{name:9s} {tps:10,.0f} tok/s  {tps * flops_per_token / 1e12:7.1f} TFLOP/s  "
          f"{tps * flops_per_token / peak:5.1%} of bf16 peak  loss {first:.4f} -> {last:.4f}  "
          f"learning check: {'ok' if ok else 'FAILED'}", flush=True)
    return ok


def main(argv=None) -> int:
    import argparse

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--trainers", default="rec,rm,dpo,grpo,verifier")
    a = ap.parse_args(argv)
    dry = a.dry_run or not torch.cuda.is_available()
    if not a.dry_run and dry:
        print("no CUDA device: use --dry-run for the CPU path", file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    dims, scale = (TINY, 64) if dry else (FULL, 1)
    steps = a.steps or (4 if dry else 10)
    seq = {k: max(16, v // scale) for k, v in dict(rec=1024, rm=1024, dpo=1024, verifier=2048, prompt=128,
                                                    completion=128).items()}
    peak = matmul_peak(device, torch.bfloat16, 256 if dry else 8192)
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    print(f"device: {name}; torch {torch.__version__}; bf16 matmul peak {peak / 1e12:.1f} TFLOP/s; "
          f"{'tiny' if dry else 'Qwen3-0.6B'} shapes, random weights, {steps} steps each", flush=True)
    torch.manual_seed(0)
    cfg = config(dims)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    ids = lambda b, t: torch.randint(1, cfg.vocab_size, (b, t), generator=g).to(device)  # noqa: E731
    pm, v = matmul_params(cfg), cfg.vocab_size * cfg.hidden_size
    results = {}
    for trainer in a.trainers.split(","):
        torch.manual_seed(0)  # each trainer's init and sampling, whatever ran before it
        if trainer in ("rec", "dpo", "grpo"):
            r = {"rec": 8, "dpo": 16, "grpo": 8}[trainer]
            # GRPO also trains an untied head: random weights give near-uniform logits that LoRA
            # alone moves too slowly for a few-step reward check
            model = lora(AutoModelForCausalLM.from_config(config(dims, tie_word_embeddings=False)
                                                          if trainer == "grpo" else cfg), r,
                         head=trainer == "grpo").to(device)
        else:
            model = AutoModelForSequenceClassification.from_config(config(dims, num_labels=1)).to(device)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr={"rec": 1e-3, "dpo": 1e-3, "grpo": 1e-2 if dry else 1e-3}.get(trainer, 1e-5))

        def update(loss):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        if trainer == "rec":
            x = ids(8, seq["rec"])
            labels = x.clone()
            labels[:, : seq["rec"] - 8] = -100  # the answer tokens only, as rec's label mask

            def step():
                with autocast:
                    return update(model(input_ids=x, labels=labels).loss)
            flops = 2 * (pm + v) + 2 * (pm + v)  # forward; backward: activation grads (LoRA weights ~0)
            results[trainer] = run(trainer, step, steps, x.numel(), flops, device, peak)
        elif trainer in ("rm", "verifier"):
            b, t = (32, seq["rm"]) if trainer == "rm" else (16, seq["verifier"])
            x = ids(b, t)
            target = torch.rand(b, device=device)

            def step():
                with autocast:
                    s = model(input_ids=x).logits[:, 0].float()
                if trainer == "rm":  # rows 2i chosen, 2i+1 rejected: Bradley-Terry
                    loss = -torch.nn.functional.logsigmoid(s[0::2] - s[1::2]).mean()
                else:
                    loss = torch.nn.functional.mse_loss(s, target)
                return update(loss)
            results[trainer] = run(trainer, step, steps, x.numel(), 6 * pm, device, peak)
        elif trainer == "dpo":
            chosen, rejected = ids(8, seq["dpo"]), ids(8, seq["dpo"])
            x = torch.cat([chosen, rejected])
            start = seq["dpo"] // 2  # the completion half is scored

            def logps(m):
                logits = m(input_ids=x).logits[:, start - 1:-1].float()
                return torch.gather(logits.log_softmax(-1), 2, x[:, start:, None]).squeeze(-1).sum(-1)

            def step():
                with autocast:
                    with torch.no_grad(), model.disable_adapter():
                        ref = logps(model)
                    pol = logps(model)
                d = (pol - ref)
                return update(-torch.nn.functional.logsigmoid(0.1 * (d[:8] - d[8:])).mean())
            flops = 2 * (pm + v) * 3  # policy forward + backward (activation grads) + reference forward
            results[trainer] = run(trainer, step, steps, x.numel(), flops, device, peak)
        elif trainer == "grpo":
            prompts = ids(8, seq["prompt"])
            goal = cfg.vocab_size // 8  # reward: the share of completion tokens below this id (~1/8 at start)

            def step():
                model.eval()
                with torch.no_grad(), autocast:
                    out = model.generate(input_ids=prompts.repeat_interleave(8, 0), do_sample=True,
                                         max_new_tokens=seq["completion"], min_new_tokens=seq["completion"],
                                         top_k=0, pad_token_id=0)
                model.train()
                comp = out[:, prompts.shape[1]:]
                reward = (comp < goal).float().mean(-1)
                grp = reward.view(8, 8)
                adv = ((grp - grp.mean(1, keepdim=True)) / (grp.std(1, keepdim=True) + 1e-4)).view(-1)
                with autocast:
                    logits = model(input_ids=out).logits[:, prompts.shape[1] - 1:-1].float()
                logp = logits.log_softmax(-1)
                lp = torch.gather(logp, 2, comp[..., None]).squeeze(-1).mean(-1)
                update(-(adv * lp).mean())
                # the policy's expected reward (its probability of a rewarded token), less noisy
                # than the sampled share: the "loss" falls as it rises
                return -logp.detach()[..., :goal].exp().sum(-1).mean()
            # with the rollouts' tokens: generation dominates on every machine
            results[trainer] = run(trainer, step, steps, 64 * (seq["prompt"] + seq["completion"]),
                                   4 * (pm + v), device, peak)
        else:
            print(f"unknown trainer {trainer!r}", file=sys.stderr)
            return 2
        model = opt = None  # free the GPU before the next trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    failed = [k for k, ok in results.items() if not ok]
    print("all learning checks ok" if not failed else f"learning check failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
