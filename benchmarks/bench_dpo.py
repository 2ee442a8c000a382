"""DPO step side by side: `dataprep train --task dpo`'s step and trl's DPOTrainer step, on the same
preference pairs (dpo_en_demo.json through `dataprep convert` + `tokenize` with the SmolLM2
tokenizer) and the same model, in one run.

Both: LoRA r16 on all linear layers (QLoRA NF4 on CUDA when bitsandbytes is there, else bf16/fp32
LoRA), gradient checkpointing, the reference = the base with the adapter disabled, the same
pairs per optimizer step, gradient clipping to 1, AdamW (paged 8-bit on CUDA for both).
- ours: training.loop.train_step with training.dpo's loss: chosen and rejected of every pair in
  one padding-free row (isolated sequences), only response positions projected onto the vocabulary;
  FlexAttention on CUDA. --ours picks the variants:
    bucket    as `dataprep train --task dpo` does (training.dpo.prepare_flex): decoder layers compiled,
              the flat row padded to a bucket of 1,024 tokens (flat_padding)
    static    the product before buckets: layers not compiled, the row padded to pairs × 2 × max-len
    nocompile buckets without compiled layers (transformers' own compiled flex_attention alone)
- trl:  DPOTrainer.training_step (trl's own compute_loss and backward; padded [chosen; rejected]
  batch from its DataCollatorForPreference, fused LM head) on the same token ids, then the same
  clip / optimizer / schedule step. --trl picks: default, liger (use_liger_kernel: liger's RMSNorm,
  RoPE and SwiGLU kernels; trl 1.16 keeps its own fused LM head; padding_free is disabled in 1.16).
  The ratios are against the fastest trl variant run.
Before timing, the LoRA A and B matrices of both get the same small random values, so the first-step
losses compare a policy that differs from its reference (|ours - trl| is printed).

Models are random-weight Llama shapes built from config (throughput does not depend on weights):
`toy` (2 layers, hidden 64: a CPU check), `1b` (Llama-3.2-1B shape: for the GPU).

    PYTHONPATH=. python benchmarks/bench_dpo.py --shape toy --steps 3        # CPU check
    PYTHONPATH=. python benchmarks/bench_dpo.py --shape 1b --steps 10        # GPU
    PYTHONPATH=. python benchmarks/bench_dpo.py --shape 1b --ours bucket --ours static \
        --trl default --trl liger --profile OUT                                 # GPU, every lever

Reported: pairs/s, tokens/s (non-pad tokens of both sides), computed tokens (what the forward passes
see: ours the flat row with its filler, trl its padded batch), peak GPU memory (CUDA) or peak RSS
(CPU; the process's, so not separable per variant), ours/trl ratios. The tokenized pairs and the
tokenizer are cached in --cache (carry that folder to a machine without the packaged tokenizer).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_train_gpu import random_model_dir  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "dpo_en_demo.json"


def tokenized_pairs(cache: Path, max_len: int) -> list[dict]:
    """dpo_en_demo pairs as our preference shards' rows (cached as JSON with the tokenizer)."""
    rows_file = cache / f"pairs_{max_len}.json"
    if rows_file.is_file():
        return json.loads(rows_file.read_text())
    from datasets import load_from_disk

    from dataprep.convert import convert
    from dataprep.models import load_tokenizer, resolve_model, save_tokenizer
    from dataprep.tokenize import tokenize

    work = Path(tempfile.mkdtemp())
    convert([str(DATA)], work / "records", kind="preference")
    tokenize(work / "records", work / "shards", tokenizer="smollm2-135m", max_len=max_len, progress=False)
    cols = ("prompt_input_ids", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
    rows = [{k: r[k] for k in cols} for r in load_from_disk(str(work / "shards"))]
    cache.mkdir(parents=True, exist_ok=True)
    save_tokenizer(load_tokenizer(resolve_model("smollm2-135m")), cache / "tokenizer")
    rows_file.write_text(json.dumps(rows))
    return rows


def perturb_lora(model, seed: int) -> None:
    """The same small random LoRA A and B matrices in any model with the same adapter layout (both: the
    two libraries draw their A matrices from different random streams)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if "lora_A" in name or "lora_B" in name:
            p.data = (torch.randn(p.shape, generator=gen) * (1e-2 if "lora_B" in name else 1e-1)).to(p.device, p.dtype)


class Lora:  # the LoRA options training.sft.add_lora reads
    lora_r, lora_alpha, lora_dropout, target_modules = 16, 32, 0.0, "all-linear"


def trl_pairs(rows: list[dict]) -> list[dict]:
    """Our rows as trl's DataCollatorForPreference takes them (the same token ids)."""
    out = []
    for r in rows:
        k = len(r["prompt_input_ids"])
        out.append({"prompt_ids": r["prompt_input_ids"], "chosen_ids": r["chosen_input_ids"][k:],
                    "rejected_ids": r["rejected_input_ids"][k:]})
    return out


def memory() -> float:
    import torch

    from training.loop import peak_memory_gb

    return peak_memory_gb()["peak_gpu_gb"] if torch.cuda.is_available() else peak_memory_gb()["peak_rss_gb"]


def run(name: str, step, batches: list, steps: int, warmup: int) -> dict:
    import torch

    begin = time.perf_counter()
    for b in batches[:warmup]:
        step(b)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - begin
    timed = batches[warmup: warmup + steps]
    start = time.perf_counter()
    losses = [step(b) for b in timed]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    pairs = sum(len(b["rows"]) for b in timed)
    tokens = sum(len(r["chosen_input_ids"]) + len(r["rejected_input_ids"]) for b in timed for r in b["rows"])
    whole = sum(len(b["rows"]) for b in batches[: warmup + steps])
    return {"variant": name, "pairs_per_s": pairs / seconds, "tokens_per_s": tokens / seconds, "peak_gb": memory(),
            "seconds": seconds, "warmup_s": warmup_s, "whole_pairs_per_s": whole / (warmup_s + seconds),
            "last_loss": losses[-1]}


def bench_ours(load, chunks: list, args, variant: str = "bucket") -> dict:
    """Our step: training.loop.train_step with training.dpo's loss on flat pair batches."""
    import torch
    from transformers import get_scheduler

    from training.dpo import DPOConfig, collate_pairs, dpo_loss_fn, flat_padding, prepare_flex
    from training.loop import make_optimizer, to_device, train_step
    from training.sft import add_lora

    cuda = torch.cuda.is_available()
    attn = "flex_attention" if cuda else "sdpa"  # what `dataprep train --task dpo` picks (training.sft.attn_implementation)
    model = add_lora(load(attn), Lora)
    if variant == "bucket":  # as train_preference does
        pad_to = prepare_flex(model, attn, args.pairs, args.max_len)
    elif variant == "static":
        pad_to = args.pairs * 2 * args.max_len if cuda else None
    else:
        pad_to = flat_padding(args.pairs, args.max_len) if cuda else None

    def collate(rows):
        return collate_pairs(rows, pad_to)

    perturb_lora(model, 0)
    model.train()  # as train_loop does: from_pretrained returns eval mode, where checkpointing is skipped
    loss_fn = dpo_loss_fn(DPOConfig(beta=args.beta))
    with torch.no_grad():
        loss, k = loss_fn(model, to_device(collate(chunks[0])))
    opt, _ = make_optimizer(model, 5e-5, 0.0)
    sched = get_scheduler("constant", opt)

    def step(b):
        return train_step(model, [collate(b["rows"])], loss_fn, opt, sched).loss

    batches = [{"rows": c} for c in chunks]
    out = {**run(f"ours {variant}", step, batches, args.steps, args.warmup), "first_loss": float(loss) / k,
           "flat_tokens": sum(collate(c)["input_ids"].shape[1] for c in chunks[args.warmup:])}
    if args.profile and variant == args.ours[0]:
        profile(step, batches[args.warmup: args.warmup + 2], Path(args.profile) / f"profile_ours_{variant}.txt")
    return out


def profile(step, batches: list, path: Path) -> None:
    """torch.profiler over a few steps: the top ops by device time (CPU time without CUDA)."""
    import torch
    from torch.profiler import ProfilerActivity

    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=acts) as prof:
        for b in batches:
            step(b)
        if cuda:
            torch.cuda.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70))
    print(f"profile: {path}", flush=True)


def bench_trl(load, chunks: list, args, variant: str = "default") -> dict:
    """trl's step: DPOTrainer.training_step on its collator's batches of the same token ids."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(Path(args.cache) / "tokenizer")
    trl_args = TrlDPOConfig(output_dir=tempfile.mkdtemp(), beta=args.beta, per_device_train_batch_size=args.pairs,
                            report_to="none", use_cpu=not cuda, bf16=cuda, max_length=None, save_strategy="no",
                            gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                            optim="paged_adamw_8bit" if cuda else "adamw_torch", learning_rate=5e-5,
                            lr_scheduler_type="constant", max_grad_norm=1.0, use_liger_kernel=variant == "liger")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=load(), args=trl_args, peft_config=lora, processing_class=tok,
                         train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]))
    model = trainer.model
    perturb_lora(model, 0)
    model.train()
    with torch.no_grad():
        batch0 = {k: v.to(model.device) for k, v in trainer.data_collator(trl_pairs(chunks[0])).items()}
        first = float(trainer.compute_loss(model, batch0))
    trainer.create_optimizer_and_scheduler(num_training_steps=args.steps + args.warmup)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before its steps

    def step(b):
        loss = trainer.training_step(model, b["batch"])
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return float(loss)

    batches = [{"rows": c, "batch": trainer.data_collator(trl_pairs(c))} for c in chunks]
    out = {**run(f"trl {variant}", step, batches, args.steps, args.warmup), "first_loss": first,
           "flat_tokens": sum(b["batch"]["input_ids"].numel() for b in batches[args.warmup:])}
    if args.profile and variant == args.trl[0]:
        profile(step, batches[args.warmup: args.warmup + 2], Path(args.profile) / f"profile_trl_{variant}.txt")
    return out


def bench_shape(shape: str, rows: list[dict], args) -> list[dict]:
    import torch

    from training.sft import load_model

    cuda = torch.cuda.is_available()
    quant = args.quant if args.quant != "auto" else ("4bit" if cuda else "none")
    model_dir = random_model_dir(shape, Path(args.model_cache))
    n = args.pairs * (args.steps + args.warmup)
    chunks = [rows[i: i + args.pairs] for i in range(0, n, args.pairs)]

    def load(attn="sdpa"):  # trl: sdpa on its padded batches; ours: what the product picks
        return load_model(str(model_dir), quant, cuda, attn, gradient_checkpointing=True)

    results = []
    runs = [(bench_ours, v) for v in args.ours] + [(bench_trl, v) for v in args.trl]
    for bench, variant in runs:
        try:
            results.append({**bench(load, chunks, args, variant), "shape": shape, "quant": quant, "pairs": args.pairs})
            print(json.dumps(results[-1]), flush=True)
        except Exception as exc:  # one variant failing (a compile error) still reports the others
            print(f"{shape} {bench.__name__} {variant} failed: {type(exc).__name__}: {exc}", flush=True)
        gc.collect()
        torch.cuda.empty_cache() if cuda else None
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", choices=["toy", "1b"], help="repeatable; default toy")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step (both)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--max-len", type=int, default=1024, help="tokenize --max-len of the pairs")
    ap.add_argument("--quant", default="auto", choices=["auto", "4bit", "none"])
    ap.add_argument("--cache", default="out/bench_dpo", help="tokenized pairs + tokenizer")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    ap.add_argument("--ours", action="append", choices=["bucket", "static", "nocompile"],
                    help="repeatable; default bucket (the product's padding)")
    ap.add_argument("--trl", action="append", choices=["default", "liger"], help="repeatable; default: default")
    ap.add_argument("--profile", default=None, help="write torch.profiler tables of the first ours/trl variant here")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    args.ours, args.trl = args.ours or ["bucket"], args.trl or ["default"]

    import torch

    rows = tokenized_pairs(Path(args.cache), args.max_len)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    import trl

    print(f"{len(rows)} pairs; device {dev}; torch {torch.__version__}, trl {trl.__version__}")
    results = []
    for shape in args.shape or ["toy"]:
        results += bench_shape(shape, rows, args)
    def best_trl(shape):
        return max((x for x in results if x["shape"] == shape and x["variant"].startswith("trl")),
                   key=lambda x: x["pairs_per_s"], default=next(x for x in results if x["shape"] == shape))

    print("\n| shape | quant | variant | pairs/step | pairs/s | tokens/s | computed tokens | peak GB | first-step loss "
          "| x best trl pairs/s | x best trl memory | warm-up s | whole-run pairs/s | x best trl whole run |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        t = best_trl(r["shape"])
        print(f"| {r['shape']} | {r['quant']} | {r['variant']} | {r['pairs']} | {r['pairs_per_s']:.2f} | "
              f"{r['tokens_per_s']:,.0f} | {r['flat_tokens']:,} | {r['peak_gb']} | {r['first_loss']:.6f} | "
              f"{r['pairs_per_s'] / t['pairs_per_s']:.2f} | {r['peak_gb'] / t['peak_gb']:.2f} | {r['warmup_s']:.1f} | "
              f"{r['whole_pairs_per_s']:.2f} | {r['whole_pairs_per_s'] / t['whole_pairs_per_s']:.2f} |")
    for shape in {r["shape"] for r in results}:
        o, t = next(x for x in results if x["shape"] == shape), best_trl(shape)
        print(f"{shape}: |first-step loss {o['variant']} - {t['variant']}| = {abs(o['first_loss'] - t['first_loss']):.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
