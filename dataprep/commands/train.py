"""`dataprep train`: LoRA/QLoRA SFT, DPO/IPO, KTO, reward models, masked LM or multi-label
classification on tokenized shards."""

from __future__ import annotations

import click

from dataprep.options import click_options
from training.run import TrainOptions


@click.command(
    "train",
    epilog="Example: dataprep train out/shards --task sft --val-size 0.1 -o out/adapter",
)
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click_options(TrainOptions, first=("task", "model"))
@click.option("--force", is_flag=True, help="Retrain even if an up-to-date output exists.")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="Train on N GPUs of this machine (DDP; --fsdp shards the model): runs `accelerate launch` for you. "
                   "Under `accelerate launch`/`torchrun` leave it out.")
def command(shards, out, force, gpus, **options) -> None:
    """Fine-tune on the shards of `dataprep tokenize`: LoRA/QLoRA SFT, DPO/IPO or KTO, a reward
    model, masked-LM, or multi-label classification.

    Writes the adapter (or model) and tokenizer, metrics.json, loss.png, runs/ (TensorBoard)
    and manifest.json to OUT. Several GPUs: `--gpus N`, or `accelerate launch -m dataprep train ...`.
    """
    from training import dist

    if gpus is not None and not dist.launched():
        dist.check_gpus(gpus)
        if gpus > 1:
            launch(gpus)
            return
    dist.check_launch_env(gpus=gpus)
    from training.outputs import read_metrics
    from training.run import train

    manifest = train(shards, out, force=force, **options)
    if not dist.is_main():
        return
    if manifest.skipped:
        click.echo(f"{out} is up to date (same shards, model and options); nothing to do (--force retrains)")
    else:
        click.echo(summary(manifest.lineage.task, out, read_metrics(out)))


def launch(gpus: int) -> None:
    """Run this same command under `accelerate launch` on `gpus` processes, without --gpus."""
    import subprocess
    import sys

    from training.dist import launch_command

    args = sys.argv[sys.argv.index("train"):]
    argv = [a for i, a in enumerate(args) if not (a == "--gpus" or a.startswith("--gpus=") or
                                                     (i > 0 and args[i - 1] == "--gpus"))]
    rc = subprocess.call(launch_command(gpus, argv))
    if rc:
        raise click.exceptions.Exit(rc)


def summary(task: str, out: str, m: dict) -> str:
    """What a training run gives, from its metrics.json."""
    if task == "mlm":
        ev = m["eval_loss"]
        losses = f"; eval MLM loss {ev[0]['loss']:.4f} -> {ev[-1]['loss']:.4f}" if ev else ""
        return (f"trained {m['steps']} steps, {m['masked_tokens']:,} masked tokens, {m['params']:,} params{losses}\n"
                f"wrote {out} (model, tokenizer, metrics.json, loss.png)")
    params = f"trainable {m['trainable_params']:,} / {m['total_params']:,} params"
    if task == "sft":
        line = f"trained {m['steps']} steps, {m['trained_tokens']:,} trained tokens at {m['trained_tokens_per_s']:,.0f} tok/s; {params}"
        losses = f"train loss {m['train_loss'][0]['loss']:.4f} -> {m['train_loss'][-1]['loss']:.4f}"
        if m["eval_loss"]:
            losses += f"; eval loss {m['eval_loss'][0]['loss']:.4f} -> {m['eval_loss'][-1]['loss']:.4f}"
        return f"{line}\n{losses}\nwrote {out} (adapter, tokenizer, metrics.json, loss.png)"
    if task in ("dpo", "kto"):
        return f"trained {m['steps']} steps, {m['trained_examples']:,} {'pairs' if task == 'dpo' else 'examples'} at " \
               f"{m['examples_per_s']:,.2f}/s; {params}\n{preference_summary(m)}\nwrote {out} (adapter, tokenizer, metrics.json, loss.png)"
    if task == "reward":
        e = m["eval"] or {}
        held = f"held-out pairwise accuracy {m['eval_curve'][0]['accuracy']:.3f} -> {e['accuracy']:.3f}, margin {e['margin']:.3f}" \
            if e else "no held-out pairs (--val-size 0)"
        return f"trained {m['steps']} steps ({m['pooling']} pooling); {params}\n{held}\nwrote {out} (model, tokenizer, " \
               "reward.json, metrics.json, loss.png)"
    split = "test" if "test" in m else "val"
    r = m[split]
    return (
        f"trained {m['steps']} steps ({m.get('pooling', 'cls')} pooling); {params}; threshold {m['threshold'] if not isinstance(m['threshold'], list) else 'per label'}\n"
        f"{split}: micro-F1 {r['f1_micro']:.4f}  macro-F1 {r['f1_macro']:.4f}  ROC-AUC {r['roc_auc_micro']:.4f}  "
        f"subset acc {r['subset_accuracy']:.4f}  Jaccard {r['jaccard_samples']:.4f}  Hamming {r['hamming_loss']:.4f}\n"
        f"wrote {out} (model, tokenizer, thresholds.json, metrics.json, loss.png)"
    )


def preference_summary(m: dict) -> str:
    """Train loss, and eval reward accuracy and margin before -> after, from a dpo/kto metrics.json."""
    line = f"train loss {m['train_loss'][0]['loss']:.4f} -> {m['train_loss'][-1]['loss']:.4f}"
    if m["eval_curve"]:
        first, last = m["eval_curve"][0], m["eval_curve"][-1]
        line += f"; eval loss {first['loss']:.4f} -> {last['loss']:.4f}"
        for key in ("reward_accuracy", "reward_margin"):
            if key in last:
                line += f", {key.replace('_', ' ')} {first[key]:.3f} -> {last[key]:.3f}"
    return line
