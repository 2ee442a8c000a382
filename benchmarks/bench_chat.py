"""Chat tokenize speed and masks, side by side with trl's `assistant_only_loss` path, in one run.

Same conversations, same tokenizer (the packaged SmolLM2), the same real template: trl's
`qwen2_5.jinja` for dataprep, and its `qwen2_5_training.jinja` for trl (the same template with the
`{% generation %}` markers trl's assistant-only loss needs). Rows: alpaca_en_demo.json as one-turn
chats plus glaive_toolcall_en_demo.json's conversations without tool calls (multi-turn), times
--copies. Prints rows/s for `dataprep.tokenize.tokenize` end to end (parquet in, shards + manifest
out, fidelity check included) and for trl's `SFTTrainer._prepare_dataset` with
`assistant_only_loss=True`, then compares the masks row by row and says why they differ.

What each side uses: dataprep one process (`--num-proc 1`, its default), two batches in flight on
threads, the tokenizer's Rust batch encode on every core; trl its default `dataset_num_proc=None`
(one process, one row at a time) and, as its best configuration on this machine, `dataset_num_proc`
= the number of cores (`datasets.map` in that many processes). The speed-up is printed against both.

dataprep encodes each batch's renderings piece by piece between added tokens, each distinct piece
once per batch (dataprep/tokenize/pieces.py). --copies repeats the 1,146 distinct conversations; at
the default --batch-size 1000 no batch holds a conversation twice, so the copies are never encoded
once for two rows (a batch size above 1,146 would let them be: not a fair figure).

`--core` compares the per-row work alone, without `datasets` or trl installed: dataprep's
per-batch function (`tokenize_batch`: render, spans, one batch encode, fidelity probes) against the
call trl's `tokenize_fn` makes for every row (`apply_chat_template(messages, tokenize=True,
return_dict=True, return_assistant_tokens_mask=True)` with the training template), `--tokenizer DIR`
and `--templates DIR` naming a tokenizer directory and a folder with the two templates.

Run from the repository root:  python benchmarks/bench_chat.py [--copies 5] [--core]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DATAPREP_SHARED_DATA", REPO.parent / "shared" / "data"))


def conversations() -> list[list[dict]]:
    alpaca = json.loads((SHARED / "alpaca_en_demo.json").read_text())
    out = [[{"role": "user", "content": (r["instruction"] + ("\n" + r["input"] if r.get("input") else ""))},
            {"role": "assistant", "content": r["output"]}] for r in alpaca]
    roles = {"human": "user", "gpt": "assistant"}
    for r in json.loads((SHARED / "glaive_toolcall_en_demo.json").read_text()):
        turns = r["conversations"]
        if all(t["from"] in roles for t in turns):
            out.append([{"role": roles[t["from"]], "content": t["value"]} for t in turns])
    return out


def write_records(convs: list[list[dict]], directory: Path) -> Path:
    import polars as pl
    import pyarrow as pa

    from dataprep.records import SCHEMAS

    directory.mkdir(parents=True, exist_ok=True)
    full = [[{"role": m["role"], "content": m["content"], "parts": None, "reasoning_content": None,
              "tool_calls": None, "tool_call_id": None, "name": None, "train": None} for m in c] for c in convs]
    table = pa.table({"messages": full, "tools": [None] * len(convs), "source": ["bench"] * len(convs),
                      "row": list(range(len(convs)))}, schema=SCHEMAS["chat"])
    pl.from_arrow(table).write_parquet(directory / "records.parquet")
    (directory / "manifest.json").write_text(json.dumps({"stage": "convert", "lineage": {"kind": "chat"}}))
    return directory


CPU: dict[object, float] = {}  # fn -> its least CPU seconds (this process and its threads) over the runs


def best(fn, repeats: int):
    """(fastest wall time of `repeats` runs, the last result); the least CPU time goes to CPU[fn]."""
    times, out = [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        CPU[fn] = min(CPU.get(fn, float("inf")), time.process_time() - c)
    return min(times), out


def trl_preparer(tok, convs, template: str, max_len: int, num_proc: int | None = None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer.__new__(SFTTrainer)  # only the dataset preparation is used: no model needed
    trainer._tokenizer, trainer.completion_only_loss, trainer.chat_template = tok, False, template
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_len, assistant_only_loss=True, report_to=[],
                     use_cpu=True, bf16=False, dataset_num_proc=num_proc)
    ds = Dataset.from_dict({"messages": convs})
    return lambda: trainer._prepare_dataset(ds, tok, args, packing=False, formatting_func=None, dataset_name="bench")


def _mask_differences(tok, ids, mine: list[bool], theirs: list[bool], reasons: Counter) -> int:
    """1 if the trained positions differ (each differing token counted in `reasons` by where it is), else 0."""
    if mine == theirs:
        return 0
    for j, (x, y) in enumerate(zip(mine, theirs, strict=True)):
        if x != y:
            reasons[f"{_where(tok, ids, j)}: dataprep {'trains' if x else 'masks'}, trl {'trains' if y else 'masks'}"] += 1
    return 1


def _where(tok, ids: list[int], j: int) -> str:
    """A differing token, named by what it is in the rendering."""
    text, before = tok.decode([ids[j]]), tok.decode(ids[max(0, j - 2) : j])
    if text == "\n" and before.endswith("assistant"):
        return "'\\n' ending the generation prompt <|im_start|>assistant\\n"
    if text == "\n" and before.endswith("<|im_end|>"):
        return "'\\n' after <|im_end|> (the model stops at <|im_end|>)"
    return repr(text)


def core(a) -> None:
    """dataprep's tokenize_batch vs trl's per-row apply_chat_template call, same rows, one run."""
    from transformers import AutoTokenizer

    from dataprep.tokenize.masks import Specials, choose_pad
    from dataprep.tokenize.rows import TokenizeOptions, tokenize_batch

    templates = Path(a.templates)
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    train_template = (templates / "qwen2_5_training.jinja").read_text()
    ours_tok = AutoTokenizer.from_pretrained(a.tokenizer)
    ours_tok.chat_template = (templates / "qwen2_5.jinja").read_text()
    sp: Specials = choose_pad(ours_tok)
    convs = conversations() * a.copies
    full = [[{"role": m["role"], "content": m["content"], "parts": None, "reasoning_content": None,
              "tool_calls": None, "tool_call_id": None, "name": None, "train": None} for m in c] for c in convs]
    opts = TokenizeOptions(max_len=a.max_len, batch_size=1000)

    def run_ours():
        ours = {"input_ids": [], "labels": []}
        fid = Counter()
        for start in range(0, len(full), 1000):
            part = full[start : start + 1000]
            batch = {"messages": part, "tools": [None] * len(part), "source": ["b"] * len(part),
                     "row": list(range(start, start + len(part)))}
            cols, _, ev = tokenize_batch(batch, ours_tok, "chat", opts, sp)
            ours["input_ids"] += cols["input_ids"]
            ours["labels"] += cols["labels"]
            fid.update(ev)
        return ours, fid

    def run_trl():
        out = []
        for c in convs:
            r = tok.apply_chat_template(c, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                        chat_template=train_template, tools=None)
            out.append((r["input_ids"], r["assistant_masks"]))
        return out

    t_ours, (ours, fid) = best(run_ours, a.repeats)
    t_trl, theirs = best(run_trl, a.repeats)
    n = len(convs)
    print(f"rows: {n:,} conversations, {a.tokenizer}, qwen2_5 template; {__import__('os').cpu_count()} CPUs")
    print(f"dataprep tokenize_batch (fidelity on: {fid['fidelity.checked']} turns checked, "
          f"{sum(v for k, v in fid.items() if k.startswith('fidelity.mismatch'))} mismatched): {n / t_ours:,.0f} rows/s")
    print(f"trl's per-row apply_chat_template(return_assistant_tokens_mask=True): {n / t_trl:,.0f} rows/s")
    print(f"speed-up: {t_trl / t_ours:.2f}x (trl's datasets.map and label building not counted)")
    differ, reasons = 0, Counter()
    for ids, labels, (tids, tmask) in zip(ours["input_ids"], ours["labels"], theirs, strict=True):
        if ids != tids:
            differ += 1
            reasons["over --max-len: not truncated on trl's side here" if len(tids) > a.max_len
                    else "input_ids differ"] += 1
            continue
        differ += _mask_differences(tok, ids, [x != -100 for x in labels], [bool(x) for x in tmask], reasons)
    print(f"masks: {differ} of {n} rows differ")
    for r, c in reasons.most_common(8):
        print(f"  {c:>6}  {r}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--copies", type=int, default=5)
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", action="store_true")
    p.add_argument("--tokenizer", help="--core: a tokenizer directory (default: the packaged SmolLM2)")
    p.add_argument("--templates", help="--core: folder with qwen2_5.jinja and qwen2_5_training.jinja (default: trl's)")
    a = p.parse_args()
    if a.core:
        if a.tokenizer is None:
            from dataprep.models import resolve_model

            a.tokenizer = resolve_model("smollm2-135m")
        if a.templates is None:
            import trl

            a.templates = str(Path(trl.__file__).parent / "chat_templates")
        return core(a)
    full_run(a)


def full_run(a) -> None:
    import trl
    from datasets import load_from_disk

    from dataprep.models import load_tokenizer
    from dataprep.tokenize import tokenize

    templates = Path(trl.__file__).parent / "chat_templates"
    convs = conversations() * a.copies
    work = Path(tempfile.mkdtemp(prefix="bench_chat_"))
    try:
        rec = write_records(convs, work / "rec")
        tok = load_tokenizer("smollm2-135m")
        cores = os.cpu_count() or 1
        train_template = (templates / "qwen2_5_training.jinja").read_text()
        prepare = trl_preparer(tok, convs, train_template, a.max_len)
        prepare_procs = trl_preparer(tok, convs, train_template, a.max_len, num_proc=cores) if cores > 1 else None

        def run_ours():
            return tokenize(rec, work / "tok", chat_template=str(templates / "qwen2_5.jinja"), max_len=a.max_len,
                            progress=False, force=True)

        # best of --repeats, each side warmed up by its first run (imports, tokenizer load, caches)
        load = os.getloadavg()[0]
        t_ours, m = best(run_ours, a.repeats)
        t_trl, theirs = best(prepare, a.repeats)
        t_procs = best(prepare_procs, a.repeats)[0] if prepare_procs else float("inf")
        ours = load_from_disk(str(work / "tok"))
        n = len(convs)
        print(f"rows: {n:,} conversations ({sum(len(c) for c in convs):,} turns), SmolLM2 tokenizer, qwen2_5 template; "
              f"{cores} CPU cores, load average {load:.1f} -> {os.getloadavg()[0]:.1f} during the run")
        print(f"dataprep tokenize (end to end, fidelity check on; 1 process, 2 batches in flight on threads, the Rust "
              f"encode on {cores} cores): {n / t_ours:,.0f} rows/s ({t_ours:.2f}s, {CPU[run_ours]:.2f} CPU s); "
              f"out {m.counts.n_out}, fidelity {m.get('fidelity')}")
        print(f"trl SFTTrainer._prepare_dataset (assistant_only_loss, dataset_num_proc=None: 1 process): "
              f"{n / t_trl:,.0f} rows/s ({t_trl:.2f}s, {CPU[prepare]:.2f} CPU s)")
        if prepare_procs:
            print(f"trl SFTTrainer._prepare_dataset (assistant_only_loss, dataset_num_proc={cores}): "
                  f"{n / t_procs:,.0f} rows/s ({t_procs:.2f}s)")
        print(f"speed-up: {t_trl / t_ours:.2f}x trl's default, {min(t_trl, t_procs) / t_ours:.2f}x trl's best "
              f"configuration; in CPU seconds {CPU[prepare] / CPU[run_ours]:.2f}x trl's default")
        # trl drops rows it leaves fully masked, so rows are matched by their token ids
        trl_labels = {tuple(r["input_ids"]): r["labels"] for r in theirs}
        differ, compared, reasons = 0, 0, Counter()
        for row in ours:
            ids, labels = row["input_ids"], row["labels"]
            if tuple(ids) not in trl_labels:
                reasons["over --max-len: trl keeps the start, dataprep cuts the prompt's start" if len(ids) == a.max_len
                        else "row not in trl's output (dropped by trl, or other input_ids)"] += 1
                differ += 1
                continue
            compared += 1
            differ += _mask_differences(tok, ids, [x != -100 for x in labels],
                                        [x != -100 for x in trl_labels[tuple(ids)]], reasons)
        print(f"masks: {differ} of {len(ours)} rows differ ({compared} rows in both outputs)")
        for r, c in reasons.most_common(8):
            print(f"  {c:>6}  {r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
