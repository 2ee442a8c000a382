"""n-gram decontamination side by side: `dedupe --against`'s ngram method, datatrove's
NGramsDecontFilter, and a naive Python set of n-gram tuples, on the same rows in one run.

Training rows: real texts of ../shared/data (alpaca en/zh, ko_alpaca, c4; every row's text fields
joined; each distinct text once), cycled to --rows, each copy made distinct by a row number. Eval rows:
--eval-rows texts of the same pool with their words shuffled (real vocabulary and lengths, so no
real 13-gram is shared), --planted of them copied into the training rows, half verbatim and half
with an appended sentence. 13-word n-grams; a row is contaminated when it shares
one n-gram with an eval row (GPT-3's and datatrove's rule).

datatrove is configured at its fastest: its default English word tokenizer (NLTK punkt) needs a
data download, so it gets a whitespace tokenizer over its own text normalisation; the index is
built with its own normalisation, tokenizer and hash function, as its NGramsDecontIndexer does
(that class requires lighteval). Its default xxhash function raises on the str n-grams its filter
passes it (datatrove 0.10.1: "Strings must be encoded before hashing"), so it runs with sha1. Its filter runs per document, as in a datatrove pipeline.

    python benchmarks/bench_decon.py --rows 1000000 --eval-rows 10000

Ours is timed twice: the library call on texts in memory (`decontaminate`) and the whole
`dataprep dedupe --against` command on a records file (read, match, write, report).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"
N = 13


def pool_texts() -> list[str]:
    texts = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "ko_alpaca_1040.json"):
        for row in json.loads((DATA / name).read_text(encoding="utf-8")):
            texts.append("\n\n".join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                                     for v in row.values() if v))
    for line in (DATA / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines():
        texts.append(json.loads(line)["text"])
    return list(dict.fromkeys(texts))  # each text once


def make_rows(n: int, n_eval: int, planted: int, seed: int = 0):
    """Training rows: the pool cycled to n rows, each copy made distinct by its number. Eval rows: pool texts
    with their words shuffled (real vocabulary and lengths, no real 13-gram shared with the training rows);
    `planted` of them copied into the training rows, half verbatim and half with a sentence appended."""
    rng = random.Random(seed)
    pool = pool_texts()
    long = [t for t in pool if len(t.split()) >= 20]
    ev = []
    for i in range(n_eval):
        w = long[i % len(long)].split()
        rng.shuffle(w)
        ev.append(" ".join(w))
    train = [f"{pool[i % len(pool)]} #{i}" for i in range(n)]
    slots = rng.sample(range(n), planted)
    for k, pos in enumerate(slots):
        train[pos] = ev[k] if k % 2 == 0 else ev[k] + " I hope this helps."
    return train, ev, set(slots)


def naive(train: list[str], ev: list[str]) -> set[int]:
    """A Python set of n-gram tuples of the eval rows; each training row's n-grams looked up one by one."""
    from dataprep.dedupe.against import words

    grams = set()
    for t in ev:
        w = words(t)
        grams.update(tuple(w[i : i + N]) for i in range(len(w) - N + 1))
    out = set()
    for j, t in enumerate(train):
        w = words(t)
        if any(tuple(w[i : i + N]) in grams for i in range(len(w) - N + 1)):
            out.add(j)
    return out


def datatrove(train: list[str], ev: list[str]) -> set[int]:
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import simplify_text
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            raise NotImplementedError

    # its default xxhash function raises on the str n-grams its own filter passes it (datatrove 0.10.1), so sha1
    config = NGramsDecontConfig(n_grams=N, find_query_ngrams=True, hash_config=HashConfig(hash_fc="sha1"))
    with tempfile.TemporaryDirectory() as index:
        f = NGramsDecontFilter(index, config=config, language=Whitespace("en"))
        hashes = set()
        for t in ev:  # what NGramsDecontIndexer.compute_hashes does, with the filter's tokenizer and hash
            toks = f.tokenizer.word_tokenize(simplify_text(t, config.norm_config))
            hashes.update(f.hash_func(" ".join(toks[i : i + N])) for i in range(len(toks) - N + 1))
        np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(f"{index}/eval.index.hashes")
        return {j for j, t in enumerate(train) if f.filter(Document(text=t, id=str(j))) is not True}


def ours(train: list[str], ev: list[str]) -> set[int]:
    import numpy as np

    from dataprep.dedupe.against import EvalSet, ngram_hits

    evs = EvalSet(ev, ["eval"] * len(ev), list(range(len(ev))), [])
    hits = ngram_hits(train, np.arange(len(train)), evs, N, 0.0)
    return set(hits.train.tolist())


def ours_cli(train: list[str], ev: list[str], work: Path) -> tuple[set[int], float]:
    import polars as pl

    pl.DataFrame({"text": train, "source": "train", "row": range(len(train))}).write_parquet(work / "train.parquet")
    (work / "eval.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ev), encoding="utf-8")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dataprep", "dedupe", str(work / "train.parquet"), "--against",
                    str(work / "eval.jsonl"), "--methods", "ngram", "-o", str(work / "out"), "--force"],
                   check=True, cwd=ROOT, capture_output=True)
    seconds = time.perf_counter() - t0
    return set(pl.read_parquet(work / "out" / "removed.parquet")["id"].to_list()), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--eval-rows", type=int, default=10_000)
    ap.add_argument("--planted", type=int, default=50)
    ap.add_argument("--skip", nargs="*", default=[], help="naive, datatrove")
    args = ap.parse_args()
    train, ev, planted = make_rows(args.rows, args.eval_rows, args.planted)
    words = sum(len(t.split()) for t in train)
    print(f"{len(train):,} training rows ({words:,} words), {len(ev):,} eval rows, {len(planted)} planted")
    results = {}
    for name, fn in (("ours (library)", ours), ("datatrove NGramsDecontFilter", datatrove), ("naive set", naive)):
        if any(s in name for s in args.skip):
            continue
        t0 = time.perf_counter()
        found = fn(train, ev)
        results[name] = (time.perf_counter() - t0, found)
    with tempfile.TemporaryDirectory() as work:
        found, seconds = ours_cli(train, ev, Path(work))
        results["ours (dataprep dedupe --against, whole command)"] = (seconds, found)
    base = results["ours (library)"][1]
    ref = results.get("naive set", (None, base))[1]
    print("| method | seconds | rows/s | contaminated rows | planted found | same rows as naive | × ours (library) |")
    print("|---|---:|---:|---:|---:|---|---:|")
    t_ours = results["ours (library)"][0]
    for name, (sec, found) in results.items():
        print(f"| {name} | {sec:.1f} | {len(train) / sec:,.0f} | {len(found):,} | {len(found & planted)}/{len(planted)} "
              f"| {'yes' if found == ref else f'no ({len(found ^ ref)} differ)'} | {sec / t_ours:.2f} |")


if __name__ == "__main__":
    main()
