"""pref_grpo: GRPO with LoRA on the policy, rewarded by the trained reward model,
on the prefixes the reward model held out; mean RM reward before/after on eval prompts."""

import logging

import click

from posttrain.pref.grpo import train_grpo
from posttrain.core.io import write_json, write_jsonl


@click.command()
@click.option("--prefixes", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rm", "rm_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--curve", "curve_path", required=True, type=click.Path(dir_okay=False))
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per eval prompt RM reward before/after (jsonl) for `posttrain compare`.")
@click.option("--eval-prompts", type=int, default=16, show_default=True)
@click.option("--max-prompts", type=int, default=64, show_default=True, help="GRPO training prompts cap (0 = all)")
@click.option("--max-steps", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--num-generations", type=int, default=4, show_default=True)
@click.option("--max-completion-length", type=int, default=48, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True, help="RM scoring truncation")
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--beta", type=float, default=0.0, show_default=True)
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-layers", type=int, default=0, show_default=True,
              help="LoRA only on the top N decoder layers (0 = all)")
@click.option("--seed", type=int, default=0, show_default=True)
def main(prefixes, policy, rm_dir, out_dir, metrics_path, curve_path, predictions_path, eval_prompts, max_prompts,
         max_steps, batch_size, num_generations, max_completion_length, max_length, lr, temperature,
         beta, lora_r, lora_alpha, lora_layers, seed):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    res = train_grpo(
        prefixes, policy, rm_dir, out_dir, eval_prompts=eval_prompts, max_prompts=max_prompts,
        max_steps=max_steps, batch_size=batch_size, num_generations=num_generations,
        max_completion_length=max_completion_length, max_length=max_length, lr=lr,
        temperature=temperature, beta=beta, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_layers=lora_layers, seed=seed)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_json(metrics_path, res["metrics"])
    write_json(curve_path, res["curve"])
    write_jsonl(predictions_path, res["predictions"])
    r = res["metrics"]["eval_reward"]
    click.echo(f"pref_grpo: mean RM reward on eval prompts {r['before']:.4f} -> {r['after']:.4f}", err=True)


if __name__ == "__main__":
    main()
