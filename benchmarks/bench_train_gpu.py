"""QLoRA SFT throughput side by side: the seed recipe, padded micro-batch 8, and our padding-free
packed path, on tokens from alpaca_en_demo.json, in one run per model shape.

Models are random-weight Llama-shaped models built from config (throughput does not depend on
the weight values): `1b` (Llama-3.2-1B shape), `8b` (Llama-3-8B shape), `toy` (2 layers, hidden
64, for checking on a CPU). All: QLoRA r16 on all linear layers, NF4 + double quantisation, bf16,
gradient checkpointing (use_reentrant=False), paged 8-bit AdamW on CUDA (AdamW on CPU),
vocabulary 49,152 (the SmolLM2 tokenizer's). Each optimizer step is `dataprep train`'s own
(training.loop.train_step: accumulation, gradient clipping, optimizer and schedule step).

Variants (pick with --variants). The baselines load the model as the seed recipe does
(`prepare_model_for_kbit_training` upcasts embeddings, norms and the LM head to fp32, so the
residual stream is fp32); ours keep those frozen weights in bf16 and run under bf16 autocast
(LoRA weights stay fp32), as `dataprep train` does by default:
  seed             micro-batch 1, grad accumulation 8, no packing, full logits (the seed recipe)
  padded8          micro-batch 8, dynamic padding to the longest row, attention_mask, full logits
  flex_upcast      padding-free: rows flattened up to --budget tokens, position_ids restart per
                   sequence, FlexAttention (block-sparse, no (T x T) mask), logits only at trained
                   positions; seed-recipe fp32 upcast (last round's best)
  flex             flex_upcast with bf16 frozen weights + autocast (ours, the default)
  sdpa             flex with SDPA and the block-diagonal mask transformers derives from position_ids
  flex_full        flex with full-vocabulary logits, to isolate what skipping them gives
  flex_onechunk    flex projecting all trained positions at once (no chunked, checkpointed loss)
  flex_nockpt      flex without gradient checkpointing
  flex_compile     flex with each decoder layer torch.compile'd
  flex_half / flex_2x / flex_4x  flex with 1/2, 2x, 4x the token budget

Reported per variant: tokens/s (non-pad tokens through the model), trained tokens/s (tokens
with a label), peak GPU memory (torch.cuda.max_memory_allocated), or peak RSS on CPU.

    python benchmarks/bench_train_gpu.py --shape toy --steps 3              # CPU check
    python benchmarks/bench_train_gpu.py --shape 1b --shape 8b             # on the H100

The tokenized rows are cached in --token-cache (JSON), so a GPU machine without the packaged
SmolLM2 tokenizer can reuse rows tokenized elsewhere (carry the file).
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

from dataprep.records import IGNORE_INDEX  # noqa: E402
from training.sft import LOSS_CHUNK  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "alpaca_en_demo.json"
VOCAB = 49152
SHAPES = {
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),
}
BASE = dict(batching="flat", rows=None, accum=1, attn="flex_attention", full_logits=False, upcast=False,
            checkpointing=True, compile=False, budget_x=1, loss_chunk=None)
VARIANTS = {
    "seed": {**BASE, "batching": "padded", "rows": 1, "accum": 8, "attn": "sdpa", "full_logits": True, "upcast": True},
    "padded8": {**BASE, "batching": "padded", "rows": 8, "attn": "sdpa", "full_logits": True, "upcast": True},
    "flex_upcast": {**BASE, "upcast": True},
    "flex": BASE,
    "sdpa": {**BASE, "attn": "sdpa"},
    "flex_full": {**BASE, "full_logits": True},
    "flex_onechunk": {**BASE, "loss_chunk": 1 << 30},
    "flex_nockpt": {**BASE, "checkpointing": False},
    "flex_compile": {**BASE, "compile": True},
    "flex_half": {**BASE, "budget_x": 0.5},
    "flex_2x": {**BASE, "budget_x": 2},
    "flex_4x": {**BASE, "budget_x": 4},
}
ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"


def tokenized_rows(cache: Path, tokenizer: str) -> list[dict]:
    """alpaca_en_demo rows as {input_ids, labels} (completion-only labels, EOS trained)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from dataprep.models import load_tokenizer

    tok = load_tokenizer(tokenizer)
    rows = []
    for r in json.loads(DATA.read_text()):
        inp = f"\n\n### Input:\n{r['input']}" if r.get("input") else ""
        prompt = f"{ALPACA}### Instruction:\n{r['instruction']}{inp}\n\n### Response:\n"
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p + c)[:2048]
        rows.append({"input_ids": ids, "labels": ([IGNORE_INDEX] * len(p) + c)[:2048]})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows


def random_model_dir(shape: str, root: Path) -> Path:
    """A random-weight Llama of `shape`, saved once in bf16 (from_pretrained then quantises it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = root / f"llama-{shape}-random"
    if (path / "config.json").is_file():
        return path
    cfg = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=8192, rope_theta=500000.0, **SHAPES[shape])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(path)
    del model
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return path


def micro_batches(rows: list[dict], batching: str, rows_per_batch: int | None, budget: int, seed: int,
                  static: bool = False):
    """Endless micro-batches: padded (n rows, padded to the longest) or flat (rows up to `budget` tokens)."""
    import random

    from training.data import collate_flat, collate_padded

    rng = random.Random(seed)
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        if batching == "padded":
            for i in range(0, len(order) - rows_per_batch + 1, rows_per_batch):
                yield collate_padded([rows[j] for j in order[i : i + rows_per_batch]], 0, multiple=1)
            continue
        chunk, used = [], 0
        for j in order:
            n = len(rows[j]["input_ids"])
            if chunk and used + n > budget:
                yield collate_flat(chunk, pad_to=budget if static else None)
                chunk, used = [], 0
            chunk.append(rows[j])
            used += n


def full_logits_loss_sum(model, batch):
    """The seed recipe's loss: full (tokens x vocabulary) logits, cross-entropy over labels."""
    import torch

    from training.sft import weights_autocast

    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with weights_autocast(model, batch["labels"].device.type):
        logits = model(**inputs, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


def set_checkpointing(model, on: bool) -> None:
    from training.sft import enable_checkpointing

    base = model.get_base_model()
    if on:
        enable_checkpointing(base, {"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def run_variant(model, rows, name: str, budget: int, steps: int, warmup: int, profile: bool = False) -> dict:
    import torch
    from transformers import get_scheduler

    from training import sft
    from training.loop import make_optimizer, peak_memory_gb, train_step

    v = VARIANTS[name]
    budget = int(budget * v["budget_x"])
    sft.LOSS_CHUNK = v["loss_chunk"] or LOSS_CHUNK
    model.set_attn_implementation(v["attn"])
    set_checkpointing(model, v["checkpointing"])
    if v["compile"]:
        sft.compile_layers(model)
    model.train()
    loss_fn = full_logits_loss_sum if v["full_logits"] else sft.causal_lm_loss_sum
    optimizer, opt_name = make_optimizer(model, 2e-4, 0.0)
    scheduler = get_scheduler("constant", optimizer)
    # FlexAttention is compiled: a fixed flat length (one filler sequence) avoids a recompile per step
    batches = micro_batches(rows, v["batching"], v["rows"], budget, seed=0, static=v["attn"] == "flex_attention")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() / 1e9 if cuda else None
    tokens = trained = 0
    losses = []

    def step_once():  # the product's optimizer step (training.loop.train_step: clipping included)
        nonlocal tokens, trained
        done = train_step(model, [next(batches) for _ in range(v["accum"])], loss_fn, optimizer, scheduler)
        tokens += done.tokens
        trained += done.trained_tokens
        losses.append(done.loss)

    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize() if cuda else None
            start, tokens, trained = time.perf_counter(), 0, 0
        step_once()
    torch.cuda.synchronize() if cuda else None
    seconds = time.perf_counter() - start
    mem = peak_memory_gb()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            step_once()
            step_once()
            torch.cuda.synchronize() if cuda else None
        key = "cuda_time_total" if cuda else "cpu_time_total"
        print(f"--- profile of {name}: 2 steps, top kernels by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70))
    gc.collect()
    return {
        "variant": name, **{k: v[k] for k in ("attn", "full_logits", "upcast", "checkpointing", "compile")},
        "optimizer": opt_name, "micro_batch": f"{v['rows']} rows" if v["rows"] else f"{budget} tokens",
        "grad_accum": v["accum"], "tokens_per_s": round(tokens / seconds, 1),
        "trained_tokens_per_s": round(trained / seconds, 1), "resident_gpu_gb": resident and round(resident, 2),
        "peak_gpu_gb": mem.get("peak_gpu_gb"), "peak_rss_gb": mem["peak_rss_gb"], "timed_steps": steps,
        "seconds": round(seconds, 2), "first_loss": round(float(losses[0]), 4), "last_loss": round(float(losses[-1]), 4),
    }


def bench_shape(shape: str, rows: list[dict], args) -> list[dict]:
    import torch

    from training.sft import add_lora, load_model

    model_dir = random_model_dir(shape, Path(args.model_cache))

    class Cfg:  # the LoRA options add_lora reads
        lora_r, lora_alpha, lora_dropout, target_modules = 16, 32, 0.0, "all-linear"

    results = []
    # one model per weight setup (seed-recipe fp32 upcast, or ours); compiled variants last (compile is in place)
    order = sorted(args.variants, key=lambda n: (not VARIANTS[n]["upcast"], VARIANTS[n]["compile"]))
    model, loaded = None, None
    for name in order:
        upcast = VARIANTS[name]["upcast"]
        if loaded != upcast:
            model = None
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            start = time.perf_counter()
            model = load_model(str(model_dir), "4bit", True, "sdpa", gradient_checkpointing=True, kbit_upcast=upcast)
            model = add_lora(model, Cfg)
            loaded = upcast
            print(f"loaded {shape} (upcast={upcast}) in {time.perf_counter() - start:.1f} s", flush=True)
        try:
            res = run_variant(model, rows, name, args.budget, args.steps, args.warmup, profile=name in args.profile)
        except Exception as exc:  # one variant failing (e.g. out of memory) must not hide the others
            res = {"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            gc.collect()
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
        res["shape"] = shape
        results.append(res)
        print(json.dumps(res), flush=True)
    del model
    gc.collect()
    return results


def print_table(results: list[dict]) -> None:
    print("\n| shape | variant | micro-batch | tokens/s | trained tok/s | resident GB | peak GPU GB | "
          "x seed | x padded8 tok/s | x padded8 memory |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ok = [r for r in results if "error" not in r]
    ref = {(r["shape"], r["variant"]): r for r in ok}
    for r in results:
        if "error" in r:
            print(f"| {r['shape']} | {r['variant']} | failed: {r['error']} | | | | | | | |")
            continue
        seed, pad = ref.get((r["shape"], "seed")), ref.get((r["shape"], "padded8"))
        x_seed = f"{r['trained_tokens_per_s'] / seed['trained_tokens_per_s']:.2f}" if seed else "-"
        x_pad = f"{r['trained_tokens_per_s'] / pad['trained_tokens_per_s']:.2f}" if pad else "-"
        x_mem = f"{r['peak_gpu_gb'] / pad['peak_gpu_gb']:.2f}" if pad and r["peak_gpu_gb"] else "-"
        print(f"| {r['shape']} | {r['variant']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | "
              f"{r['trained_tokens_per_s']:,.0f} | {r['resident_gpu_gb'] or '-'} | {r['peak_gpu_gb'] or r['peak_rss_gb']} | "
              f"{x_seed} | {x_pad} | {x_mem} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable; default toy")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed micro-batch")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (compilation, allocator)")
    ap.add_argument("--tokenizer", default="smollm2-135m")
    ap.add_argument("--token-cache", default="out/bench_train/alpaca_tokens.json")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    ap.add_argument("--profile", nargs="*", default=[], help="variants to profile (2 extra steps, top kernels)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import torch

    rows = tokenized_rows(Path(args.token_cache), args.tokenizer)
    lengths = [len(r["input_ids"]) for r in rows]
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    import peft
    import transformers

    print(f"{len(rows)} rows, mean {sum(lengths) / len(rows):.0f} tokens/row; device {dev}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}")
    results = []
    for shape in args.shape or ["toy"]:
        results += bench_shape(shape, rows, args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
