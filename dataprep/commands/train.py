"""`dataprep train`: LoRA/QLoRA SFT or multi-label classification on tokenized shards."""

from __future__ import annotations

import click


@click.command(
    "train",
    epilog="Example: dataprep train out/shards --task sft --val-size 0.1 -o out/adapter",
)
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("--task", type=click.Choice(["sft", "classify"]), default=None,
              help="[default: what the shards' record kind trains: sft for sft/chat/text, classify for classify]")
@click.option("--model", default=None, help="Base model: minilm, smollm2-135m, a local dir or a Hub id "
              "[default: smollm2-135m for sft, minilm for classify].")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--quant", type=click.Choice(["auto", "4bit", "none"]), default="auto", show_default=True,
              help="sft: 4bit = QLoRA (NF4, double quant, bf16); auto = 4bit on CUDA, none elsewhere.")
@click.option("--lora-r", type=int, default=16, show_default=True)
@click.option("--lora-alpha", type=int, default=32, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--target-modules", default="all-linear", show_default=True, help="Comma-separated module names.")
@click.option("--micro-batch", type=int, default=8, show_default=True, help="Rows (packed rows for packed shards) per micro-batch.")
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate [default: 2e-4 sft, 5e-5 classify].")
@click.option("--scheduler", default="cosine", show_default=True, help="Any transformers scheduler name.")
@click.option("--warmup-ratio", type=float, default=None, help="[default: 0.03 sft, 0.1 classify]")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=int, default=-1, help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--eval-shards", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--test-shards", type=click.Path(exists=True, file_okay=False), default=None, help="classify: test split.")
@click.option("--val-size", type=float, default=None, help="Eval split from the shards: a fraction or a row count "
              "[default: 0 sft, 0.1 classify].")
@click.option("--eval-steps", type=int, default=50, show_default=True)
@click.option("--group-by-length", is_flag=True, help="sft, unpacked: batch rows of similar length (less padding).")
@click.option("--no-gradient-checkpointing", is_flag=True)
@click.option("--kbit-upcast", is_flag=True, help="sft 4bit: keep embeddings, norms and LM head in fp32 "
              "(peft's default; slower, more memory) instead of bf16 under autocast.")
@click.option("--compile", is_flag=True, help="sft: torch.compile each decoder layer (CUDA; +36% tok/s on an 8B QLoRA).")
@click.option("--bf16", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True)
@click.option("--attn", default="auto", show_default=True, help="sft attention: auto, sdpa, eager, flex_attention.")
@click.option("--per-label-threshold", is_flag=True, help="classify: tune one threshold per label.")
@click.option("--freeze-layers", type=int, default=-1, help="classify: train only the top N encoder layers.")
@click.option("--lora", "use_lora", is_flag=True, help="classify: LoRA instead of full fine-tuning.")
@click.option("--pooling", type=click.Choice(["auto", "cls", "mean"]), default="auto", show_default=True,
              help="classify: sentence vector for the head; auto = mean for sentence-transformers encoders that "
              "mean-pool (minilm), else [CLS].")
@click.option("--report-to", type=click.Choice(["tensorboard", "wandb", "none"]), default="tensorboard", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--force", is_flag=True, help="Retrain even if an up-to-date output exists.")
def command(shards, task, model, out, force, **opts) -> None:
    """Fine-tune on the shards of `dataprep tokenize`: LoRA/QLoRA SFT or multi-label classification.

    Writes the adapter (or model) and tokenizer, metrics.json, loss.png, runs/ (TensorBoard)
    and manifest.json to OUT.
    """
    from training.outputs import read_metrics
    from training.run import train

    opts["gradient_checkpointing"] = not opts.pop("no_gradient_checkpointing")
    opts["lora"] = opts.pop("use_lora")
    manifest = train(shards, out, task=task, model=model, force=force, **opts)
    if manifest.skipped:
        click.echo(f"{out} is up to date (same shards, model and options); nothing to do (--force retrains)")
    else:
        click.echo(summary(manifest.lineage.task, out, read_metrics(out)))


def summary(task: str, out: str, m: dict) -> str:
    """What a training run gives, from its metrics.json."""
    params = f"trainable {m['trainable_params']:,} / {m['total_params']:,} params"
    if task == "sft":
        line = f"trained {m['steps']} steps, {m['trained_tokens']:,} trained tokens at {m['trained_tokens_per_s']:,.0f} tok/s; {params}"
        losses = f"train loss {m['train_loss'][0]['loss']:.4f} -> {m['train_loss'][-1]['loss']:.4f}"
        if m["eval_loss"]:
            losses += f"; eval loss {m['eval_loss'][0]['loss']:.4f} -> {m['eval_loss'][-1]['loss']:.4f}"
        return f"{line}\n{losses}\nwrote {out} (adapter, tokenizer, metrics.json, loss.png)"
    split = "test" if "test" in m else "val"
    r = m[split]
    return (
        f"trained {m['steps']} steps ({m.get('pooling', 'cls')} pooling); {params}; threshold {m['threshold'] if not isinstance(m['threshold'], list) else 'per label'}\n"
        f"{split}: micro-F1 {r['f1_micro']:.4f}  macro-F1 {r['f1_macro']:.4f}  ROC-AUC {r['roc_auc_micro']:.4f}  "
        f"subset acc {r['subset_accuracy']:.4f}  Jaccard {r['jaccard_samples']:.4f}  Hamming {r['hamming_loss']:.4f}\n"
        f"wrote {out} (model, tokenizer, thresholds.json, metrics.json, loss.png)"
    )
