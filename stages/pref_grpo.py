"""pref_grpo: GRPO with LoRA on the policy, rewarded by the trained reward model,
on the prefixes the reward model held out; mean RM reward before/after on eval prompts."""

import click

from posttrain.pref.grpo import require_vllm, train_grpo
from posttrain.core.io import write_json, write_jsonl
from posttrain.core.cli import finite, run
from posttrain.core.stats import write_split


@click.command()
@click.option("--prefixes", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rm", "rm_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--metrics", "metrics_path", required=True, type=click.Path(dir_okay=False))
@click.option("--facts", "facts_path", required=True, type=click.Path(dir_okay=False),
              help="The run's facts beside the metrics (data counts, flags, training facts): "
                   "the metrics file holds only estimates with n and a 95% CI.")
@click.option("--live", "live_dir", required=True, type=click.Path(file_okay=False),
              help="dvclive folder for the training curves (metrics.json, plots/metrics/*.tsv).")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help="Per eval prompt RM reward before/after (jsonl) for `posttrain compare`.")
@click.option("--eval-prompts", "--eval_prompts", required=True, type=click.IntRange(min=1))
@click.option("--eval-batch-size", "--eval_batch_size", required=True, type=click.IntRange(min=1),
              help="eval prompts per left-padded greedy batch (before and after)")
@click.option("--max-prompts", "--max_prompts", required=True, type=click.IntRange(min=0),
              help="GRPO training prompts cap (0 = all)")
@click.option("--max-steps", "--max_steps", required=True, type=click.IntRange(min=1))
@click.option("--batch-size", "--batch_size", required=True, type=click.IntRange(min=1))
@click.option("--num-generations", "--num_generations", required=True, type=click.IntRange(min=2),
              help="completions per prompt (GRPO's group; advantages need at least 2)")
@click.option("--max-completion-length", "--max_completion_length", required=True, type=click.IntRange(min=1))
@click.option("--max-length", "--max_length", required=True, type=click.IntRange(min=1), help="RM scoring truncation")
@click.option("--lr", required=True, type=finite(0, min_open=True))
@click.option("--temperature", required=True, type=finite(0, min_open=True))
@click.option("--beta", required=True, type=finite(0))
@click.option("--lora-r", "--lora_r", required=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", "--lora_alpha", required=True, type=click.IntRange(min=1))
@click.option("--lora-layers", "--lora_layers", required=True, type=click.IntRange(min=0),
              help="LoRA only on the top N decoder layers (0 = all)")
@click.option("--seed", required=True, type=int)
@click.option("--use-vllm/--no-use-vllm", "--use_vllm/--no-use_vllm", "use_vllm", required=True, default=None,
              help="Rollouts through vLLM (trl's use_vllm; GPU machines with vllm installed).")
@click.option("--gen-cache", "gen_cache_dir", type=click.Path(file_okay=False),
              help="Cache of the base policy's greedy eval completions (a persist: true out).")
def main(prefixes, policy, rm_dir, out_dir, metrics_path, facts_path, live_dir, predictions_path, eval_prompts, eval_batch_size,
         max_prompts, max_steps, batch_size, num_generations, max_completion_length, max_length, lr, temperature,
         beta, lora_r, lora_alpha, lora_layers, seed, use_vllm, gen_cache_dir):
    if use_vllm:
        try:
            require_vllm()
        except ImportError as e:
            raise click.UsageError(str(e)) from e
    res = train_grpo(
        prefixes, policy, rm_dir, out_dir, eval_prompts=eval_prompts, max_prompts=max_prompts,
        max_steps=max_steps, batch_size=batch_size, num_generations=num_generations,
        max_completion_length=max_completion_length, max_length=max_length, lr=lr,
        temperature=temperature, beta=beta, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_layers=lora_layers, seed=seed, live_dir=live_dir, gen_cache_dir=gen_cache_dir,
        use_vllm=use_vllm, eval_batch_size=eval_batch_size)
    if res is None:  # another rank of `accelerate launch`; rank 0 writes
        return
    write_split(res["metrics"], metrics_path, facts_path, write_json)
    write_jsonl(predictions_path, res["predictions"])
    r = res["metrics"]["eval_reward"]
    click.echo(f"pref_grpo: mean RM reward on eval prompts {r['before']:.4f} -> {r['after']:.4f}", err=True)


if __name__ == "__main__":
    run(main)
