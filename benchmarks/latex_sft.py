"""Real result: SmolLM2-135M LoRA SFT on English -> LaTeX (../shared/data/english_to_latex.csv).

40 rows train, 10 held out (a seeded shuffle, since the file is grouped by formula type). Prints
the held-out eval loss before and after, the generated LaTeX for the 10 held-out prompts before and
after, and the exact-match count before and after; writes it all to OUT/latex_result.json.

The shards are built here with a minimal offset-mask tokenizer (template "Convert English to
LaTeX\\nEnglish: {instruction}\\nLaTeX:", completion " {latex}" + EOS), in the tokenize stage's
output format, so the script does not depend on the tokenize branch.

    python benchmarks/latex_sft.py [--out out/latex] [--epochs 5] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataprep.models import load_tokenizer, resolve_model, tokenizer_fingerprint  # noqa: E402
from dataprep.records import IGNORE_INDEX  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "english_to_latex.csv"
TEMPLATE = "Convert English to LaTeX\nEnglish: {prompt}\nLaTeX:"


def load_split(seed: int = 0) -> tuple[list[dict], list[dict]]:
    with open(DATA, newline="", encoding="utf-8") as fh:
        rows = [{"english": r["English"], "latex": r["LaTeX"]} for r in csv.DictReader(fh)]
    random.Random(seed).shuffle(rows)
    return rows[:40], rows[40:]


def tokenize_row(tok, english: str, latex: str) -> dict:
    """Completion-only labels from character offsets of one tokenization, then EOS (trained)."""
    prompt = TEMPLATE.format(prompt=english)
    text = prompt + " " + latex
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = enc["input_ids"] + [tok.eos_token_id]
    labels = [t if start >= len(prompt) else IGNORE_INDEX for t, (start, _) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    return {"input_ids": ids, "labels": labels + [tok.eos_token_id]}


def write_shards(out: Path, rows: list[dict], tok, name: str) -> Path:
    from datasets import Dataset

    data = [tokenize_row(tok, r["english"], r["latex"]) for r in rows]
    Dataset.from_dict({
        "input_ids": [d["input_ids"] for d in data],
        "labels": [d["labels"] for d in data],
        "length": [len(d["input_ids"]) for d in data],
    }).save_to_disk(str(out))
    manifest = {
        "stage": "tokenize", "kind": "sft", "packed": False, "max_len": 256, "template": TEMPLATE,
        "tokenizer": {"name": name, "path": resolve_model(name), "fingerprint": tokenizer_fingerprint(tok)},
        "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
        "counts": {"in": len(rows), "out": len(rows), "rejected": 0, "rejected_by_reason": {}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def base_eval_and_generations(model_name: str, shards: Path, prompts: list[str], max_new: int):
    import torch
    from transformers import AutoModelForCausalLM

    from training.data import load_shards
    from training.generate import generate
    from training.sft import causal_batches, eval_loss

    path = resolve_model(model_name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = load_tokenizer(model_name)
    ds, manifest = load_shards(shards)
    loss = eval_loss(model, causal_batches(ds, manifest, 8, False)(0))["loss"]
    gens = generate(path, prompts, TEMPLATE, max_new, model=(model, tok, {}, False))
    return loss, [g["output"] for g in gens]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/latex")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    from training.generate import generate
    from training.outputs import read_metrics
    from training.sft import SFTConfig, train_sft

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(args.model)
    train_rows, held = load_split()
    train_dir = write_shards(out / "train_shards", train_rows, tok, args.model)
    eval_dir = write_shards(out / "eval_shards", held, tok, args.model)
    prompts = [r["english"] for r in held]

    t0 = time.perf_counter()
    before_loss, before = base_eval_and_generations(args.model, eval_dir, prompts, args.max_new_tokens)
    cfg = SFTConfig(model=args.model, quant="none", epochs=args.epochs, lr=args.lr, micro_batch=args.micro_batch,
                    eval_shards=str(eval_dir), eval_steps=10, report_to="tensorboard", warmup_ratio=0.05,
                    gradient_checkpointing=False)
    train_sft(str(train_dir), str(out / "adapter"), cfg, force=True)
    metrics = read_metrics(out / "adapter")
    after = [g["output"] for g in generate(out / "adapter", prompts, None, args.max_new_tokens)]
    seconds = time.perf_counter() - t0

    def exact(outputs):
        return sum(o.strip() == r["latex"].strip() for o, r in zip(outputs, held, strict=True))

    result = {
        "model": args.model, "train_rows": 40, "held_out_rows": 10, "epochs": args.epochs, "lr": args.lr,
        "steps": metrics["steps"], "eval_loss_before": before_loss, "eval_loss_after": metrics["eval_loss"][-1]["loss"],
        "eval_loss_curve": metrics["eval_loss"], "exact_before": exact(before), "exact_after": exact(after),
        "train_seconds": metrics["train_seconds"], "total_seconds": round(seconds, 1),
        "trainable_params": metrics["trainable_params"], "total_params": metrics["total_params"],
        "peak_rss_gb": metrics["peak_rss_gb"],
        "rows": [{"english": r["english"], "reference": r["latex"], "before": b.strip(), "after": a.strip()}
                 for r, b, a in zip(held, before, after, strict=True)],
    }
    (out / "latex_result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"eval loss (10 held-out rows): before {before_loss:.4f}  after {result['eval_loss_after']:.4f}")
    print(f"exact match: before {result['exact_before']}/10  after {result['exact_after']}/10")
    print(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s; total {seconds:.0f} s")
    print("| English | reference | before | after |\n|---|---|---|---|")
    for r in result["rows"]:
        cells = [r["english"], r["reference"], r["before"].replace("\n", " ")[:60], r["after"].replace("\n", " ")]
        print("| " + " | ".join(f"`{c}`" if i else c for i, c in enumerate(cells)) + " |")


if __name__ == "__main__":
    main()
