"""Chat tokenize speed and masks, side by side with trl's `assistant_only_loss` path, in one run.

Same conversations, same tokenizer (the packaged SmolLM2), the same real template: trl's
`qwen2_5.jinja` for dataprep, and its `qwen2_5_training.jinja` for trl (the same template with the
`{% generation %}` markers trl's assistant-only loss needs). Rows: alpaca_en_demo.json as one-turn
chats plus glaive_toolcall_en_demo.json's conversations without tool calls (multi-turn), times
--copies. Prints rows/s for `dataprep.tokenize.tokenize` end to end (parquet in, shards + manifest
out, fidelity check included) and for trl's `SFTTrainer._prepare_dataset` with
`assistant_only_loss=True`, then compares the masks row by row and says why they differ.

Run from the repository root:  python benchmarks/bench_chat.py [--copies 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


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


def trl_preparer(tok, convs, template: str, max_len: int):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer.__new__(SFTTrainer)  # only the dataset preparation is used: no model needed
    trainer._tokenizer, trainer.completion_only_loss, trainer.chat_template = tok, False, template
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_len, assistant_only_loss=True, report_to=[],
                     use_cpu=True, bf16=False)
    ds = Dataset.from_dict({"messages": convs})
    return lambda: trainer._prepare_dataset(ds, tok, args, packing=False, formatting_func=None, dataset_name="bench")


def main() -> None:
    import trl
    from datasets import load_from_disk

    from dataprep.models import load_tokenizer
    from dataprep.tokenize import tokenize

    p = argparse.ArgumentParser()
    p.add_argument("--copies", type=int, default=5)
    p.add_argument("--max-len", type=int, default=4096)
    a = p.parse_args()
    templates = Path(trl.__file__).parent / "chat_templates"
    convs = conversations() * a.copies
    work = Path(tempfile.mkdtemp(prefix="bench_chat_"))
    try:
        rec = write_records(convs, work / "rec")
        t = time.perf_counter()
        m = tokenize(rec, work / "tok", chat_template=str(templates / "qwen2_5.jinja"), max_len=a.max_len,
                     progress=False, force=True)
        t_ours = time.perf_counter() - t
        tok = load_tokenizer("smollm2-135m")
        prepare = trl_preparer(tok, convs, (templates / "qwen2_5_training.jinja").read_text(), a.max_len)
        t = time.perf_counter()
        theirs = prepare()
        t_trl = time.perf_counter() - t
        ours = load_from_disk(str(work / "tok"))
        n = len(convs)
        print(f"rows: {n:,} conversations ({sum(len(c) for c in convs):,} turns), SmolLM2 tokenizer, qwen2_5 template")
        print(f"dataprep tokenize (end to end, fidelity check on): {n / t_ours:,.0f} rows/s ({t_ours:.1f}s); "
              f"out {m.counts.n_out}, fidelity {m.get('fidelity')}")
        print(f"trl SFTTrainer._prepare_dataset (assistant_only_loss): {n / t_trl:,.0f} rows/s ({t_trl:.1f}s)")
        print(f"speed-up: {t_trl / t_ours:.2f}x")
        differ, reasons = 0, Counter()
        for i in range(min(len(ours), len(theirs))):
            ids, labels = ours[i]["input_ids"], ours[i]["labels"]
            tids = theirs[i]["input_ids"]
            tmask = theirs[i].get("assistant_masks") or [1] * len(tids)
            if ids != tids[: len(ids)]:
                differ += 1
                reasons["input_ids differ"] += 1
                continue
            mine = [x != -100 for x in labels]
            their = [bool(x) for x in tmask[: len(ids)]]
            if mine != their:
                differ += 1
                for j, (x, y) in enumerate(zip(mine, their, strict=True)):
                    if x != y:
                        reasons[f"{tok.decode([ids[j]])!r}: dataprep {'trains' if x else 'masks'}, "
                                f"trl {'trains' if y else 'masks'}"] += 1
        print(f"masks: {differ} of {min(len(ours), len(theirs))} rows differ")
        for r, c in reasons.most_common(8):
            print(f"  {c:>6} tokens  {r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
