"""Filter quality on ../shared/data: language accuracy (rows of ≥ 20 characters and shorter), PII
precision/recall on tests/assets/pii_fixture.jsonl, rows removed per quality rule with 3 samples.

    PYTHONPATH=. python benchmarks/filter_quality.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl

from dataprep.filter.config import FilterConfig
from dataprep.filter.language import detect, expand
from dataprep.filter.pii import find_pii
from dataprep.filter.quality import quality_filter

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "assets" / "pii_fixture.jsonl"
LANG_FILES = {"ko_alpaca_1040.json": "ko", "alpaca_en_demo.json": "en", "alpaca_zh_demo.json": "zh"}


def language_accuracy() -> None:
    print("## language (py3langid; row text = instruction, input, output joined; zh accepts yue/wuu)")
    for name, code in LANG_FILES.items():
        rows = json.loads((DATA / name).read_text())
        for label, get in (("row", lambda r: "\n\n".join(x for x in (r["instruction"], r.get("input", ""), r["output"]) if x)),
                           ("instruction", lambda r: r["instruction"]), ("output", lambda r: r["output"])):
            texts = [get(r).strip() for r in rows if get(r).strip()]
            for part, sel in (("≥20", [t for t in texts if len(t) >= 20]), ("<20", [t for t in texts if len(t) < 20])):
                if not sel:
                    continue
                tops = [detect(t)[0] for t in sel]
                ok = sum(t in expand([code]) for t in tops)
                wrong = Counter(t for t in tops if t not in expand([code])).most_common(3)
                print(f"{name:22s} {label:11s} {part}: {ok / len(sel):.4f} ({ok}/{len(sel)}) misses {wrong}")


def pii_scores() -> None:
    tp = fp = fn = 0
    misses = []
    for line in FIXTURE.read_text().splitlines():
        r = json.loads(line)
        gold, got = {tuple(s) for s in r["spans"]}, set(find_pii(r["text"]))
        tp, fp, fn = tp + len(gold & got), fp + len(got - gold), fn + len(gold - got)
        misses += [("missed", r["text"], s) for s in gold - got] + [("false", r["text"], s) for s in got - gold]
    print(f"## pii: precision {tp / max(tp + fp, 1):.3f} recall {tp / max(tp + fn, 1):.3f} (tp {tp}, fp {fp}, fn {fn})")
    for m in misses:
        print("  ", m)


def frame_of(name: str) -> tuple[pl.DataFrame, str]:
    path = DATA / name
    if name.endswith(".jsonl"):
        return pl.read_ndjson(path), "text"
    rows = json.loads(path.read_text())
    if "conversations" in rows[0]:
        role = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
        msgs = [[{"role": role.get(m["from"], m["from"]), "content": m["value"]} for m in r["conversations"]] for r in rows]
        return pl.DataFrame({"messages": msgs}), "chat"
    return pl.DataFrame([{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in rows]), "sft"


def quality_counts() -> None:
    cfg = FilterConfig(quality=True)
    print("## quality rules (defaults), rows removed per rule")
    for name in ("ko_alpaca_1040.json", "alpaca_en_demo.json", "alpaca_zh_demo.json", "c4_demo.jsonl",
                 "glaive_toolcall_en_demo.json", "identity.json"):
        frame, kind = frame_of(name)
        res = quality_filter(frame, kind, cfg)
        counts = Counter(r for r in res.reason if r)
        print(f"{name} ({kind}, {frame.height} rows): {dict(counts) or 'none'}")
        for rule in counts:
            for i in [i for i, r in enumerate(res.reason) if r == rule][:3]:
                text = str(frame.row(i, named=True))[:160].replace("\n", " ")
                print(f"   {rule} ({res.score[i]:.3g}): {text}")


if __name__ == "__main__":
    language_accuracy()
    pii_scores()
    quality_counts()
