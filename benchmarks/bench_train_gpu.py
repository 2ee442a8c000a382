"""QLoRA SFT throughput side by side: the seed recipe, padded micro-batch 8, and our padding-free
packed path, on tokens from alpaca_en_demo.json, in one run per model shape.

Models are random-weight Llama-shaped models built from config (throughput does not depend on
the weight values): `1b` (Llama-3.2-1B shape), `8b` (Llama-3-8B shape), `toy` (2 layers, hidden
64, for checking on a CPU). All: QLoRA r16 on all linear layers, NF4 + double quantisation, bf16,
gradient checkpointing (use_reentrant=False), 8-bit AdamW on CUDA (trl: paged_adamw_8bit; AdamW on CPU),
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
  flex_onechunk    flex projecting all trained positions at once (the fused loss in one chunk)
  flex_nockpt      flex without gradient checkpointing
  flex_compile     flex with each decoder layer torch.compile'd
  flex_half / flex_2x / flex_4x  flex with 1/2, 2x, 4x the token budget

Whole runs, from the model's loading to the saved adapter (need --data, see below):
  trl_liger_flex   the best-configured peer: trl's SFTTrainer on the plain shards with BFD packing to
                   2048, padding_free, use_liger_kernel, attn_implementation flex_attention, the same
                   QLoRA setup; 4 packed rows (8,192 tokens) per step
  unsloth          unsloth's own best configuration for this setup: FastLanguageModel from the same
                   random model dir (4-bit NF4 + double quant, bf16), get_peft_model r16 on all seven
                   linears (dropout 0, use_gradient_checkpointing="unsloth"), trl's SFTTrainer as unsloth
                   patches it with packing (BFD to 2048, padding-free) on the plain shards, 8-bit AdamW
                   (unsloth's documented `adamw_8bit`); 4 packed rows a step. Always its own process:
                   unsloth must be imported before transformers/trl/peft and patches them
  dataprep         `dataprep train`'s own code path (training.sft.train_sft) on the packed shards of
                   the same rows, micro-batch 4 packed rows: what a user gets with the defaults
  dataprep_warm    dataprep again in a new process, with the compile cache the dataprep run left
                   (a user's second run). It and the other dataprep_ levers but nocompile reuse that
                   cache, so --variants must list dataprep before them (checked)
  dataprep_nocompile  dataprep without the compiled decoder layers (the default before issue #14)
  dataprep_chunk1024  dataprep projecting 1,024 trained positions at a time (the loss chunk before #14)
  dataprep_paged   dataprep with paged 8-bit AdamW (the optimizer before #14)
  dataprep_ckptloss   dataprep with the loss before the fused one: checkpointed chunks of 1,024 positions
  dataprep_cudagraphs dataprep with the layers compiled with mode="reduce-overhead" (CUDA graphs), offload off
  dataprep_nooffload dataprep with --offload-checkpoints no: each decoder layer's checkpointed input stays
                   on the GPU until the backward (the default, auto, keeps it in pinned host memory on CUDA)
unsloth pins trl<=1.15.0 and datasets<5: --unsloth-site DIR puts a tree with those (and unsloth,
unsloth_zoo) first on the unsloth run's PYTHONPATH only, so the peer and dataprep keep their versions.
Both report steady-state step time (median of the steps after --warmup) and the whole run
(compilation and warm-up included), and their loss per step (--loss-png draws them side by side).
Each whole run is a fresh process with empty torch.compile/Triton caches, so neither inherits the
other's compiled FlexAttention kernels (a first run on a new machine pays the same).

Reported per variant: tokens/s (non-pad tokens through the model), trained tokens/s (tokens
with a label), peak GPU memory (torch.cuda.max_memory_allocated), or peak RSS on CPU.

    python benchmarks/bench_train_gpu.py --shape toy --steps 3              # CPU check
    python benchmarks/bench_train_gpu.py --shape 1b --shape 8b             # on the H100

The tokenized rows are cached in --token-cache (JSON), so a GPU machine without the packaged
SmolLM2 tokenizer can reuse rows tokenized elsewhere (carry the file). --data DIR instead takes
every variant's rows from `dataprep tokenize` output made elsewhere: DIR/plain, DIR/packed (--pack)
and DIR/tokenizer (the SmolLM2 tokenizer, saved beside the random model so train_sft accepts it):

    dataprep convert ../shared/data/alpaca_en_demo.json -o D/records
    dataprep tokenize D/records -o D/plain; dataprep tokenize D/records -o D/packed --pack
    python -c "from dataprep.models import *; save_tokenizer(load_tokenizer(resolve_model('smollm2-135m')), 'D/tokenizer')"
    python benchmarks/bench_train_gpu.py --shape 1b --data D --variants seed padded8 trl_liger_flex dataprep
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataprep.records import IGNORE_INDEX  # noqa: E402

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
RUNS = ("trl_liger_flex", "unsloth", "dataprep", "dataprep_warm", "dataprep_nocompile", "dataprep_chunk1024", "dataprep_paged",
        "dataprep_ckptloss", "dataprep_cudagraphs", "dataprep_nooffload")  # whole runs, not steps on a shared model
# the levers that run after dataprep with its compile cache (their compiled layers are the same)
AFTER_DATAPREP = tuple(n for n in RUNS if n.startswith("dataprep_") and n != "dataprep_nocompile")
PACK_LEN, PACK_ROWS = 2048, 4  # trl packs to 2048 and takes 4 packed rows a step; dataprep the same
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


def shard_rows(data: Path) -> list[dict]:
    """The plain shards' rows as {input_ids, labels} (what the seed and padded variants batch)."""
    from datasets import load_from_disk

    ds = load_from_disk(str(data / "plain"))
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in ds.select_columns(["input_ids", "labels"])]


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
    with mock.patch.object(sft, "LOSS_CHUNK", v["loss_chunk"] or sft.LOSS_CHUNK):  # restored after
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


def steady_and_whole(name: str, step_seconds: list[float], trained: int, warmup: int, run_s: float,
                     total_s: float, losses: list[float], peak_gb: float | None) -> dict:
    """Throughput at steady state (median step after the warm-up) and over the whole run."""
    import statistics

    per_step = trained / len(step_seconds)
    steady = statistics.median(step_seconds[warmup:]) if len(step_seconds) > warmup else float("nan")
    return {"variant": name, "micro_batch": f"{PACK_ROWS} rows of {PACK_LEN}", "grad_accum": 1,
            "steps": len(step_seconds), "steady_step_s": round(steady, 4),
            "trained_tokens_per_s": round(per_step / steady, 1), "tokens_per_s": None,
            "whole_train_s": round(run_s, 2), "whole_trained_tokens_per_s": round(trained / run_s, 1),
            "whole_run_s": round(total_s, 2), "peak_gpu_gb": peak_gb, "peak_rss_gb": None, "resident_gpu_gb": None,
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4), "losses": losses}


def run_dataprep(model_dir: Path, data: Path, steps: int, warmup: int, work: Path, name: str = "dataprep") -> dict:
    """`dataprep train`'s product path: train_sft on the packed shards, defaults but the schedule."""
    import torch

    from training.outputs import read_metrics
    from training.sft import SFTConfig, train_sft

    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    cfg = SFTConfig(model=str(model_dir), micro_batch=PACK_ROWS, max_steps=warmup + steps, lr=2e-4,
                    scheduler="constant", warmup_ratio=0.0, report_to="none",
                    # cudagraphs: no offload, record_stream does not guard the graphs' private memory pool
                    offload_checkpoints="no" if name in ("dataprep_nooffload", "dataprep_cudagraphs") else "auto")
    used: dict[str, str] = {}
    start = time.perf_counter()
    with dataprep_lever(name, used):  # its patches are undone after: an --in-process run next gets the defaults
        train_sft(str(data / "packed"), str(work / "dataprep"), cfg, force=True)
    total = time.perf_counter() - start
    m = read_metrics(work / "dataprep")
    return {**steady_and_whole(name, [r["seconds"] for r in m["train_loss"]], m["trained_tokens"], warmup,
                               m["train_seconds"], total, [r["loss"] for r in m["train_loss"]], m.get("peak_gpu_gb")),
            "optimizer": used.get("optimizer"), "offloaded_gb": m.get("offloaded_bytes", 0) / 1e9}


def dataprep_lever(name: str, used: dict) -> contextlib.ExitStack:
    """The dataprep_ variant `name` as patches of training.sft (and bitsandbytes), in a context
    that undoes them; the optimizer train_sft builds is recorded in `used["optimizer"]`."""
    from training import loop, sft

    stack = contextlib.ExitStack()

    def patch(target, attr: str, value) -> None:
        stack.enter_context(mock.patch.object(target, attr, value))

    if name == "dataprep_nocompile":
        patch(sft, "compile_layers", lambda model: None)
    if name in ("dataprep_chunk1024", "dataprep_ckptloss"):  # the loss chunk before #14
        patch(sft, "LOSS_CHUNK", 1024)
    if name == "dataprep_ckptloss":  # the loss before: checkpointed chunks of 1,024, recomputed in the backward
        patch(sft, "FUSED_LOSS", False)
    if name == "dataprep_cudagraphs":  # CUDA graphs over the compiled layers (cudagraph trees)
        def compile_layers(model):
            sft.persistent_compile_cache()
            for layer in model.get_base_model().model.layers:
                layer.compile(mode="reduce-overhead")

        patch(sft, "compile_layers", compile_layers)
    if name == "dataprep_paged":
        import bitsandbytes as bnb

        patch(bnb.optim, "AdamW8bit", bnb.optim.PagedAdamW8bit)
    make_optimizer = loop.make_optimizer

    def recorded(*args, **kwargs):
        optimizer, opt_name = make_optimizer(*args, **kwargs)
        used["optimizer"] = f"paged_{opt_name}" if type(optimizer).__name__.startswith("Paged") else opt_name
        return optimizer, opt_name

    patch(loop, "make_optimizer", recorded)
    return stack


def run_trl(model_dir: Path, data: Path, steps: int, warmup: int, work: Path) -> dict:
    """trl SFTTrainer configured at its best: BFD packing, padding-free, liger kernels, FlexAttention."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    torch.cuda.reset_peak_memory_stats() if cuda else None
    start = time.perf_counter()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.bfloat16, quantization_config=quant if cuda else None,
        attn_implementation="flex_attention" if cuda else "sdpa")
    ds = load_from_disk(str(data / "plain")).select_columns(["input_ids", "labels"])
    args = SFTConfig(
        output_dir=str(work / "trl"), max_steps=warmup + steps, per_device_train_batch_size=PACK_ROWS,
        gradient_accumulation_steps=1, max_length=PACK_LEN, packing=True, packing_strategy="bfd", padding_free=True, use_liger_kernel=cuda,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        optim="paged_adamw_8bit" if cuda else "adamw_torch", bf16=cuda, learning_rate=2e-4,
        lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not cuda, seed=42)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, peft_config=lora,
                         processing_class=AutoTokenizer.from_pretrained(str(model_dir)))
    return timed_trainer_run("trl_liger_flex", trainer, warmup, start)


def timed_trainer_run(name: str, trainer, warmup: int, start: float) -> dict:
    """trainer.train() with each step timed (synchronised) and the trained tokens of its batches counted."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times: list[float] = []
    trained = [0]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            sync()
            times.append(-time.perf_counter())

        def on_step_end(self, *_, **__):
            sync()
            times[-1] += time.perf_counter()

    trainer.add_callback(StepTimer())
    collator = trainer.data_collator
    collate = collator.torch_call  # the instance's own call, so wrappers set on it (unsloth's packing) stay

    def counting(examples):  # trained tokens: a label at the next position, as dataprep counts them
        batch = collate(examples)
        trained[0] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        return batch

    collator.torch_call = counting
    run_start = time.perf_counter()
    trainer.train()
    sync()
    run_s = time.perf_counter() - run_start
    total = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    peak = round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else None
    del trainer
    gc.collect()
    return steady_and_whole(name, times, trained[0], warmup, run_s, total, losses, peak)


def run_unsloth(model_dir: Path, data: Path, steps: int, warmup: int, work: Path) -> dict:
    """unsloth at its documented best for QLoRA SFT: its loader, its LoRA/checkpointing, packing in its SFTTrainer.

    main() imported unsloth first in this process (it must precede transformers, trl and peft)."""
    import torch
    from datasets import load_from_disk
    from trl import SFTConfig, SFTTrainer  # unsloth's patched SFTTrainer (auto packing, padding-free)
    from unsloth import FastLanguageModel

    cuda = torch.cuda.is_available()
    torch.cuda.reset_peak_memory_stats() if cuda else None
    start = time.perf_counter()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_dir), max_seq_length=PACK_LEN, dtype=torch.bfloat16 if cuda else None,
        load_in_4bit=cuda, local_files_only=True)  # 4-bit: NF4 + double quantisation, unsloth's defaults
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0.0, bias="none", use_gradient_checkpointing="unsloth",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        random_state=42)
    ds = load_from_disk(str(data / "plain")).select_columns(["input_ids", "labels"])
    args = SFTConfig(
        output_dir=str(work / "unsloth"), max_steps=warmup + steps, per_device_train_batch_size=PACK_ROWS,
        gradient_accumulation_steps=1, max_length=PACK_LEN, packing=True, packing_strategy="bfd", padding_free=True,
        optim="adamw_8bit" if cuda else "adamw_torch", bf16=cuda, learning_rate=2e-4,
        lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not cuda, seed=42, dataset_num_proc=1)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    return timed_trainer_run("unsloth", trainer, warmup, start)


def fresh_process(name: str, shape: str, args, work: Path, compile_cache: Path | None = None) -> dict:
    """One whole run in a new process with empty compile caches (or `compile_cache`'s); its result."""
    import os
    import subprocess

    out = work / "result.json"
    cmd = [sys.executable, __file__, "--shape", shape, "--data", args.data, "--variants", name, "--run-steps",
           str(args.run_steps), "--warmup", str(args.warmup), "--model-cache", args.model_cache, "--in-process",
           "--json", str(out), "--child"]
    cache = compile_cache or work / "inductor"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU: SFTTrainer refuses several in one process
    if name == "unsloth":  # its generated-code cache cold too (by default it is ./unsloth_compiled_cache)
        env.setdefault("UNSLOTH_COMPILE_LOCATION", str(work / "unsloth_compiled_cache"))
    if name == "unsloth" and args.unsloth_site:  # its pins (trl<=1.15, datasets<5) ahead of the peer's packages
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.unsloth_site, env.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, env=env)
    if done.returncode or not out.is_file():
        raise RuntimeError(f"the {name} run failed (exit {done.returncode})")
    (res,) = json.loads(out.read_text())
    return res


def plot_runs(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.get("losses"):
            ax.plot(range(1, len(r["losses"]) + 1), r["losses"], label=f"{r['shape']} {r['variant']}", lw=1)
    ax.set_xlabel("optimizer step (8,192-token packed batches)")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_shape(shape: str, rows: list[dict], args) -> list[dict]:
    import torch

    from training.sft import add_lora, load_model

    model_dir = random_model_dir(shape, Path(args.model_cache))

    class Cfg:  # the LoRA options add_lora reads
        lora_r, lora_alpha, lora_dropout, target_modules = 16, 32, 0.0, "all-linear"

    results = []
    if args.data:  # the random model must carry the shards' tokenizer for train_sft's check
        from transformers import AutoTokenizer

        from dataprep.models import save_tokenizer

        save_tokenizer(AutoTokenizer.from_pretrained(str(Path(args.data) / "tokenizer")), model_dir)
    caches: dict[str, Path] = {}
    for name in [n for n in args.variants if n in RUNS]:
        work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        run = {"trl_liger_flex": run_trl, "unsloth": run_unsloth}.get(name) or functools.partial(run_dataprep, name=name)
        caches[name] = caches["dataprep"] if name in AFTER_DATAPREP and "dataprep" in caches else work / "inductor"
        try:
            if args.in_process:
                res = run(model_dir, Path(args.data), args.run_steps, args.warmup, work)
            else:
                res = fresh_process(name, shape, args, work, caches[name])
        except Exception as exc:  # e.g. a missing package on the GPU machine: the other variants still run
            res = {"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        res["shape"] = shape
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "losses"}), flush=True)
    # one model per weight setup (seed-recipe fp32 upcast, or ours); compiled variants last (compile is in place)
    order = sorted([n for n in args.variants if n not in RUNS], key=lambda n: (not VARIANTS[n]["upcast"], VARIANTS[n]["compile"]))
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


def print_runs(results: list[dict]) -> None:
    runs = [r for r in results if r["variant"] in RUNS and "error" not in r]
    if not runs:
        return
    print("\n| shape | whole run | steps | steady step s | steady trained tok/s | train loop s | whole-run trained tok/s "
          "| load+train+save s | peak GPU GB | x trl steady | x trl whole |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    peer = {r["shape"]: r for r in runs if r["variant"] == "trl_liger_flex"}
    print("(x trl whole: train loops, compilation included; load+train+save: the whole process)")
    for r in runs:
        p = peer.get(r["shape"])
        xs = f"{r['trained_tokens_per_s'] / p['trained_tokens_per_s']:.2f}" if p else "-"
        xw = f"{r['whole_trained_tokens_per_s'] / p['whole_trained_tokens_per_s']:.2f}" if p else "-"
        print(f"| {r['shape']} | {r['variant']} | {r['steps']} | {r['steady_step_s']} | {r['trained_tokens_per_s']:,.0f} | "
              f"{r['whole_train_s']} | {r['whole_trained_tokens_per_s']:,.0f} | {r['whole_run_s']} | "
              f"{r['peak_gpu_gb'] or '-'} | {xs} | {xw} |")


def print_table(results: list[dict]) -> None:
    print("\n| shape | variant | micro-batch | tokens/s | trained tok/s | resident GB | peak GPU GB | "
          "x seed | x padded8 tok/s | x padded8 memory |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ok = [r for r in results if "error" not in r]
    ref = {(r["shape"], r["variant"]): r for r in ok}
    for r in results:
        if r["variant"] in RUNS and "error" not in r:
            continue  # print_runs
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
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS) + list(RUNS))
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed micro-batch")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (compilation, allocator)")
    ap.add_argument("--tokenizer", default="smollm2-135m")
    ap.add_argument("--token-cache", default="out/bench_train/alpaca_tokens.json")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    ap.add_argument("--profile", nargs="*", default=[], help="variants to profile (2 extra steps, top kernels)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--data", default=None, help="dir with plain/, packed/ (dataprep tokenize) and tokenizer/")
    ap.add_argument("--run-steps", type=int, default=30, help="timed steps of the whole runs (after --warmup)")
    ap.add_argument("--loss-png", default=None, help="draw the whole runs' loss curves here")
    ap.add_argument("--in-process", action="store_true", help="whole runs in this process (warm caches after the first)")
    ap.add_argument("--unsloth-site", default=None, help="a site-packages dir put first on the unsloth run's "
                    "PYTHONPATH (unsloth pins trl<=1.15 and datasets<5; the other runs keep theirs)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one run of a parent's list (fresh_process)
    args = ap.parse_args()

    import torch

    if set(args.variants) & set(RUNS) and not args.data:
        ap.error(f"{', '.join(RUNS)} need --data")
    if "unsloth" in args.variants and args.in_process:
        if len(args.variants) > 1:  # it patches trl, transformers and peft on import: the others would run patched
            ap.error("unsloth runs alone with --in-process (its import patches trl and transformers); "
                     "drop --in-process to run each whole run in its own process")
        import unsloth  # noqa: F401  before transformers, trl and peft, as unsloth requires
    early = [n for i, n in enumerate(args.variants) if n in AFTER_DATAPREP and "dataprep" not in args.variants[:i]]
    if early and not args.child:  # they would run cold (or, --in-process, warm from whatever ran before)
        ap.error(f"--variants: list dataprep before {', '.join(early)} (they reuse its compile cache): "
                 f"--variants ... dataprep {' '.join(early)}")
    rows = shard_rows(Path(args.data)) if args.data else tokenized_rows(Path(args.token_cache), args.tokenizer)
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
    print_runs(results)
    if args.loss_png:
        plot_runs(results, args.loss_png)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
