"""Which decontamination method finds which leak: alpaca_en_demo.json split into 899 training rows
and a 100-row held-out eval split; 50 eval rows (of ≥ 20 words) planted in the training rows,
25 verbatim and 25 edited five ways. Each method of `dedupe --against` runs alone on the same
rows; the table counts the planted rows it found per edit and the other rows it removed.

    python benchmarks/decon_planted.py            # semantic needs the packaged MiniLM
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data" / "alpaca_en_demo.json"

EDITS = {
    "verbatim": lambda r: r,
    "case + punctuation": lambda r: {**r, "instruction": r["instruction"].upper().rstrip(".?!") + "!!"},
    "sentence appended": lambda r: {**r, "output": r["output"] + " I hope this helps."},
    "one word replaced": lambda r: {**r, "output": _replace_word(r["output"])},
    "answer cut in half": lambda r: {**r, "output": r["output"][: len(r["output"]) // 2]},
    "instruction reworded": lambda r: {**r, "instruction": "Please answer the following. " + r["instruction"]
                                       .replace("Generate", "Write").replace("Describe", "Explain")},
}


def _replace_word(text: str) -> str:
    w = text.split()
    if len(w) > 2:
        w[len(w) // 2] = "banana"
    return " ".join(w)


def main() -> None:
    rows = json.loads(DATA.read_text())
    rng = random.Random(0)
    order = list(range(len(rows)))
    rng.shuffle(order)
    ev, train = [rows[i] for i in order[:100]], [rows[i] for i in order[100:]]
    long = [r for r in ev if len(" ".join(r.values()).split()) >= 20][:50]
    kinds = ["verbatim"] * 25 + [k for k in EDITS if k != "verbatim" for _ in range(5)]
    planted = {}
    for kind, r in zip(kinds, long, strict=True):
        pos = rng.randrange(len(train) + 1)
        train.insert(pos, EDITS[kind](dict(r)))
        planted = {(p + 1 if p >= pos else p): k for p, k in planted.items()}
        planted[pos] = kind
    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        (w / "train.json").write_text(json.dumps(train))
        (w / "eval.json").write_text(json.dumps(ev))
        run = [sys.executable, "-m", "dataprep"]
        subprocess.run([*run, "convert", str(w / "train.json"), "--template", "alpaca", "-o", str(w / "tr")],
                       check=True, cwd=ROOT, capture_output=True)
        import polars as pl

        table = {}
        for method in ("exact", "ngram", "near", "semantic"):
            subprocess.run([*run, "dedupe", str(w / "tr"), "--against", str(w / "eval.json"), "--methods", method,
                            "-o", str(w / method), "--allow-empty"], check=True, cwd=ROOT, capture_output=True)
            found = set(pl.read_parquet(w / method / "removed.parquet")["row"].to_list())
            table[method] = found
    header = list(EDITS)
    print(f"{len(train)} training rows, {len(ev)} eval rows, 50 planted ({', '.join(f'{kinds.count(k)} {k}' for k in header)})")
    print("| method | " + " | ".join(header) + " | planted found | other rows removed |")
    print("|---|" + "---:|" * (len(header) + 2))
    for method, found in table.items():
        cells = [f"{sum(1 for p, k in planted.items() if k == kind and p in found)}/{kinds.count(kind)}" for kind in header]
        print(f"| {method} | " + " | ".join(cells) + f" | {len(found & set(planted))}/50 | {len(found - set(planted))} |")


if __name__ == "__main__":
    main()
