"""Tokenize speed and masks, side by side with trl's SFTTrainer dataset preparation.

Same rows (alpaca_en_demo.json x 10, Alpaca template, prompt-completion), same SmolLM2
tokenizer, max length 2048, in one run. Prints rows/s for: raw `tokenizer(texts)` (the
physical limit), raw with offsets, `dataprep.tokenize.tokenize` end to end (parquet in,
shards + manifest out) with `--seam inference` (the default) and `--seam joint`, its per-batch
function alone, and trl's `_prepare_dataset` with `completion_only_loss=True`. Wall seconds
(best of --repeat interleaved rounds) and, since the CPU is shared, process CPU seconds too.
"raw, freshly loaded tokenizer" is the raw call on a tokenizer loaded just before it (not timed),
whose BPE cache is as cold as the one end to end loads. Then compares our labels with trl's for every row both keep, and counts, per set and seam, the
rows whose completion's first character is not trained and the fidelity mismatches.

Run from the repository root:  python benchmarks/bench_tokenize.py [--copies 10]
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
DATA = REPO.parent / "shared" / "data" / "alpaca_en_demo.json"


def other_sets() -> dict[str, tuple[list[str], list[str], int]]:
    """(prompts, completions, max_len) for the label comparison beyond alpaca (convert's templates)."""
    import csv

    from dataprep.templates import TEMPLATES, render_prompt

    ko = json.loads((DATA.parent / "ko_alpaca_1040.json").read_text())
    zh = json.loads((DATA.parent / "alpaca_zh_demo.json").read_text())
    with open(DATA.parent / "english_to_latex.csv", newline="", encoding="utf-8") as fh:
        latex = list(csv.DictReader(fh))
    prefix = TEMPLATES["latex"].completion_prefix
    alpaca_p, alpaca_c = load_rows(1)
    return {
        "ko_alpaca_1040.json, ko-alpaca template (###답변: no space)": (
            [render_prompt(r, "ko-alpaca") for r in ko], [r["output"] for r in ko], 2048),
        "alpaca_zh_demo.json, alpaca template": ([render_prompt(r, "alpaca") for r in zh], [r["output"] for r in zh], 2048),
        "english_to_latex.csv, latex template (LaTeX: + ' ' completion)": (
            [render_prompt({"instruction": r["English"]}, "latex") for r in latex],
            [prefix + r["LaTeX"] for r in latex], 2048),
        "alpaca_en_demo.json at max_len 256 (truncation policies differ)": (alpaca_p, alpaca_c, 256),
    }


def load_rows(copies: int) -> tuple[list[str], list[str]]:
    from dataprep.templates import render_prompt

    rows = json.loads(DATA.read_text()) * copies
    return [render_prompt(r, "alpaca") for r in rows], [r["output"] for r in rows]


def timed(fn):
    """(wall seconds, CPU seconds of this process and its threads, result)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def first_char_untrained(tok, completions: list[str], labels: list[list[int]]) -> int:
    """Rows whose trained tokens do not start with the completion's first character (a token that
    straddles the seam took it into the prompt)."""
    return sum(not tok.decode([t for t in lab if t != -100]).startswith(c[:1])
               for c, lab in zip(completions, labels, strict=True) if c)


def trl_preparer(tok, prompts, completions, max_len):
    """A function that runs trl's own SFT dataset preparation (set-up kept out of the timing)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer.__new__(SFTTrainer)  # only the dataset preparation is used: no model needed
    trainer._tokenizer, trainer.completion_only_loss, trainer.chat_template = tok, True, None
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_len, completion_only_loss=True, report_to=[],
                     use_cpu=True, bf16=False)
    ds = Dataset.from_dict({"prompt": prompts, "completion": completions})
    return lambda: trainer._prepare_dataset(ds, tok, args, packing=False, formatting_func=None, dataset_name="bench")


def write_records(prompts, completions, directory: Path) -> Path:
    import polars as pl

    n = len(prompts)
    directory.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"instruction": [""] * n, "input": [""] * n, "output": completions, "prompt": prompts,
                  "completion": completions, "source": ["alpaca_en_demo.json"] * n, "row": list(range(n))}
                 ).write_parquet(directory / "records.parquet")
    (directory / "manifest.json").write_text(json.dumps({"stage": "convert", "kind": "sft"}))
    return directory


def compare_labels(ours: list[list[int]], theirs: list[list[int]], ours_ids, theirs_ids, tok, max_len: int) -> None:
    kinds: Counter = Counter()
    example: dict[str, str] = {}
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a == b:
            continue
        if ours_ids[i] != theirs_ids[i]:
            cut = max_len in (len(ours_ids[i]), len(theirs_ids[i]))
            kind = "different input_ids (truncation)" if cut else "different input_ids at the seam"
            if not cut and kind not in example:  # the tokens around the first difference, [trained] ones bracketed
                j = next(j for j, (x, y) in enumerate(zip(ours_ids[i], theirs_ids[i], strict=False)) if x != y)

                def around(ids, lab, j=j):
                    return [t if lab[j - 2 + n] == -100 else f"[{t}]"
                            for n, t in enumerate(tok.convert_ids_to_tokens(ids[j - 2 : j + 3]))]

                example[kind] = f"row {i}: ours {around(ours_ids[i], a)}; trl {around(theirs_ids[i], b)}"
        else:
            ka = next(j for j, x in enumerate(a) if x != -100)
            kb = next(j for j, x in enumerate(b) if x != -100)
            kind = f"mask boundary differs (ours starts {'later' if ka > kb else 'earlier'})"
            if kind not in example:
                j = min(ka, kb)
                toks = tok.convert_ids_to_tokens(ours_ids[i][max(0, j - 3) : max(ka, kb) + 2])
                example[kind] = f"row {i}: tokens {toks}; first trained token ours {ka}, trl {kb}"
        kinds[kind] += 1
        trained_a, trained_b = sum(x != -100 for x in a), sum(x != -100 for x in b)
        example.setdefault(kind, f"row {i}: ours {len(a)} tokens, {trained_a} trained, starts "
                                 f"{tok.decode(ours_ids[i][:6])!r}; trl {len(b)} tokens, {trained_b} trained, starts "
                                 f"{tok.decode(theirs_ids[i][:6])!r}")
    print(f"labels compared on {len(ours)} rows both keep: {len(ours) - sum(kinds.values())} identical, "
          f"{sum(kinds.values())} differ")
    for kind, n in kinds.most_common():
        print(f"  {n:6d}  {kind}\n          e.g. {example[kind]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the fast runs (best of N is kept)")
    ap.add_argument("--speed-only", action="store_true", help="no trl run and no label comparisons")
    a = ap.parse_args()

    from datasets import disable_caching, load_from_disk
    from datasets.utils.logging import disable_progress_bar

    from dataprep.models import load_tokenizer
    from dataprep.tokenize import TokenizeOptions, choose_pad, tokenize, tokenize_batch

    disable_caching()
    disable_progress_bar()
    tok = load_tokenizer("smollm2-135m")
    prompts, completions = load_rows(a.copies)
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    n = len(texts)
    print(f"{n} rows (alpaca_en_demo.json x {a.copies}), SmolLM2 tokenizer, max_len {a.max_len}")

    batch = {"prompt": prompts, "completion": completions, "source": ["a"] * n, "row": list(range(n))}
    sp = choose_pad(tok)
    opts = TokenizeOptions(max_len=a.max_len)

    def per_batch():
        return [tokenize_batch({k: v[s : s + 1000] for k, v in batch.items()}, tok, "sft", opts, sp)
                for s in range(0, n, 1000)]

    tmp = Path(tempfile.mkdtemp())
    records = write_records(prompts, completions, tmp / "records")
    # End to end loads the tokenizer, whose BPE word cache starts empty; `tok` is warm after round 1.
    # So raw is also timed on a tokenizer loaded just before (its loading not timed): same cold cache.
    fresh = [load_tokenizer("smollm2-135m") for _ in range(a.repeat)]
    runs = {
        "raw tokenizer(texts)": lambda: tok(texts),
        "raw, freshly loaded tokenizer": lambda: fresh.pop()(texts),
        "raw with return_offsets_mapping": lambda: tok(texts, return_offsets_mapping=True),
        "dataprep tokenize (end to end)": lambda: tokenize(records, tmp / "tok", max_len=a.max_len, force=True,
                                                           progress=False),
        "  same, --seam joint": lambda: tokenize(records, tmp / "tok-joint", max_len=a.max_len, force=True,
                                                 progress=False, seam="joint"),
        "dataprep tokenize_batch only": per_batch,
        "trl SFTTrainer._prepare_dataset": trl_preparer(tok, prompts, completions, a.max_len),
    }
    if a.speed_only:
        del runs["trl SFTTrainer._prepare_dataset"]
    # The CPU is shared: interleave the runs round by round and keep each one's best time.
    best, cpu, results = dict.fromkeys(runs, float("inf")), dict.fromkeys(runs, float("inf")), {}
    for _ in range(a.repeat):
        for name, fn in runs.items():
            secs, cpu_secs, results[name] = timed(fn)
            best[name], cpu[name] = min(best[name], secs), min(cpu[name], cpu_secs)
    n_tokens = sum(len(x) for x in results["raw tokenizer(texts)"]["input_ids"])
    manifest = results["dataprep tokenize (end to end)"]
    ours = load_from_disk(str(tmp / "tok"))
    ours_ids, ours_labels = ours["input_ids"], ours["labels"]
    theirs = results.get("trl SFTTrainer._prepare_dataset")

    print(f"{n_tokens:,} tokens")
    print(f"{'':34s}{'seconds':>9s}{'rows/s':>10s}{'x trl':>8s}{'x raw':>8s}{'CPU s':>8s}{'x raw':>8s}")
    t_raw, c_raw = best["raw tokenizer(texts)"], cpu["raw tokenizer(texts)"]
    t_trl = best.get("trl SFTTrainer._prepare_dataset", float("nan"))
    for name, secs in best.items():
        print(f"{name:34s}{secs:9.2f}{n / secs:10.0f}{t_trl / secs:8.2f}{t_raw / secs:8.2f}{cpu[name]:8.2f}"
              f"{c_raw / cpu[name]:8.2f}")
    print(f"dataprep: {manifest.counts.to_json()}, overflow events {manifest.get('events')}, "
          f"fidelity {manifest.get('fidelity')}; --seam joint: fidelity {results['  same, --seam joint'].get('fidelity')}")
    if a.speed_only:
        return
    print(f"trl kept {len(theirs)} of {n} rows")
    compare_labels(ours_labels, theirs["labels"], ours_ids, theirs["input_ids"], tok, a.max_len)
    shutil.rmtree(tmp, ignore_errors=True)
    for label, (p, c, max_len) in other_sets().items():
        print(f"\n{label}: {len(p)} rows")
        batch = {"prompt": p, "completion": c, "source": ["a"] * len(p), "row": list(range(len(p)))}
        for seam in ("joint", "inference"):
            cols, rejects, events = tokenize_batch(batch, tok, "sft", TokenizeOptions(max_len=max_len, seam=seam), sp)
            fid = {k: v for k, v in events.items() if k.startswith("fidelity:mismatch")}
            print(f"--seam {seam}: {first_char_untrained(tok, c, cols['labels'])} of {len(p)} rows never train the "
                  f"completion's first character; fidelity mismatches {fid or 0}")
        theirs = trl_preparer(tok, p, c, max_len)()
        overflow = {k: v for k, v in events.items() if not k.startswith("fidelity:")}
        print(f"dataprep kept {len(cols['labels'])} (overflow {overflow}), trl kept {len(theirs)}")
        if len(theirs) == len(cols["labels"]):
            compare_labels(cols["labels"], theirs["labels"], cols["input_ids"], theirs["input_ids"], tok, max_len)


if __name__ == "__main__":
    main()
