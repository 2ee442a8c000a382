"""CPU benchmark of `dataprep dedupe`, each part side by side with its baseline in one run.

1. semantic, on N rows (default 100,000) of real text: embedding time vs search + grouping time,
   and peak memory of the search against n·d;
2. our blocked exact search vs the naive full n×n similarity matrix (at a size where it fits)
   and vs semhash (same vectors, its default usearch backend): time and recall of the pairs;
3. near: our MinHash+LSH vs datasketch MinHashLSH (same shingles, num_perm, threshold and
   bands), each with the exact Jaccard check of its candidates: time and agreement.

The text: every real short text under ../shared/data (Alpaca en/zh, KoAlpaca prompts,
GoEmotions, STS-B sentences) make 60% of the N distinct rows; the other 40% are copies of
them with 1-2 small random edits (a dropped, repeated or swapped word, changed case, a typo).

    python benchmarks/bench_dedupe.py [--rows 100000] [--naive-rows 20000] [--near-rows 20000]
                                      [--embed-rows K]  (embed K rows, scale the time; see noisy_copies)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataprep.dedupe.groups import group_and_keep  # noqa: E402
from dataprep.dedupe.minhash import RECALL_WEIGHTS, jaccard, near_pairs, optimal_bands, shingle_all  # noqa: E402
from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402

DATA = ROOT / ".." / "shared" / "data"


# ---------------------------------------------------------------- data


def real_texts() -> list[str]:
    texts = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "ko_alpaca_1040.json"):
        texts += [(r["instruction"] + " " + r["input"]).strip() for r in json.loads((DATA / name).read_text())]
    with open(DATA / "goemotions" / "train.tsv", encoding="utf-8") as fh:
        texts += [row[0] for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        with open(DATA / "stsb" / name, encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts += [row[5], row[6]]
    return list(dict.fromkeys(t for t in texts if t.strip()))


def perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        if not words:
            break
        k = rng.randrange(len(words))
        op = rng.randrange(5)
        if op == 0 and len(words) > 3:
            del words[k]
        elif op == 1:
            words.insert(k, words[k])
        elif op == 2 and k + 1 < len(words):
            words[k], words[k + 1] = words[k + 1], words[k]
        elif op == 3:
            words[k] = words[k].upper() if words[k].islower() else words[k].lower()
        elif len(words[k]) > 2:
            i = rng.randrange(len(words[k]) - 1)
            w = words[k]
            words[k] = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    return " ".join(words)


def bench_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = real_texts()
    rng.shuffle(base)
    originals = base[: int(n * 0.6)]  # 60% real texts, 40% edited copies of them
    texts = dict.fromkeys(originals)
    while len(texts) < n:
        texts[perturb(rng.choice(originals), rng)] = None
    out = list(texts)
    rng.shuffle(out)  # so any prefix holds originals and their edited copies
    return out


def fragments(lo: int = 2, hi: int = 5) -> list[str]:
    """Every real text cut into consecutive pieces of lo..hi words (distinct pieces; a short tail
    joins the piece before it)."""
    out = []
    for text in real_texts():
        words, i, rng = text.split(), 0, random.Random(len(text))
        while len(words) - i >= lo:
            k = rng.randint(lo, hi)
            k = len(words) - i if len(words) - i - k < lo else k
            out.append(" ".join(words[i : i + k]))
            i += k
    return list(dict.fromkeys(out))


def fragment_texts(n: int, copies: float = 0.15, seed: int = 0) -> tuple[list[str], int]:
    """(n distinct texts, how many are edited copies) for the 10M-row benchmarks: (1 - copies)·n
    bases, each three random 2–5-word pieces of the real texts (~200k pieces, so ~10^16 distinct
    bases), then edited copies (`perturb`) of random bases. Bases that share one piece rarely reach
    cosine 0.85 under MiniLM (0.13% of such pairs, measured on CPU: ~2M pairs at 10M rows), bases that
    share none did not in 8M sampled pairs (max 0.72), so the pairs are mostly the copies'."""
    rng = np.random.default_rng(seed)
    pieces = np.array(fragments(), dtype=object)
    texts: dict[str, None] = {}
    while len(texts) < n - int(n * copies):
        need = n - int(n * copies) - len(texts)
        picks = pieces[rng.integers(0, len(pieces), size=(need, 3))]
        texts.update(dict.fromkeys(f"{a} {b} {c}" for a, b, c in picks.tolist()))
    bases = list(texts)
    r = random.Random(seed)
    while len(texts) < n:
        texts[perturb(bases[r.randrange(len(bases))], r)] = None
    out = list(texts)
    r.shuffle(out)
    return out, len(out) - len(bases)


# ---------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms in a thread."""

    def __enter__(self):
        import psutil  # bench extra; imported here so bench_dedupe_gpu.py can reuse bench_texts without it

        self.proc = psutil.Process(os.getpid())
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.base) / 2**20


def noisy_copies(emb: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """m unit vectors, each an embedded row plus Gaussian noise (cosine to it from about 0.55 to 0.99)."""
    rng = np.random.default_rng(seed)
    base = emb[rng.integers(len(emb), size=m)]
    sigma = rng.uniform(0.1, 1.5, size=(m, 1))
    x = base + sigma * rng.normal(size=base.shape) / np.sqrt(emb.shape[1])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def pair_set(a, b) -> set[tuple[int, int]]:
    return set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), strict=True))


def naive_pairs(emb: np.ndarray, threshold: float):
    """The notebook recipe: the whole n×n cosine matrix, then the upper triangle above the threshold."""
    sims = emb @ emb.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return i, j


def semhash_pairs(emb: np.ndarray, texts: list[str], threshold: float):
    """semhash's own index (default usearch backend) on the same vectors; its threshold query's pairs."""
    from semhash.index import Index

    index = Index.from_vectors_and_items(emb, [[{"text": t}] for t in texts], backend_type="usearch")
    neighbours = index.query_threshold(emb, threshold)
    a, b = [], []
    for i, (idx, _) in enumerate(neighbours):
        for j in np.asarray(idx).tolist():
            if j != i:
                a.append(i)
                b.append(j)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


# ---------------------------------------------------------------- parts


def semantic_part(args, texts):
    from dataprep.embed import embed_texts, load_encoder

    print(f"\n## semantic: {len(texts)} rows, model {args.model}, threshold {args.threshold}")
    enc = load_encoder(args.model, "cpu")
    enc.model  # noqa: B018  (load before timing)
    k = min(args.embed_rows or len(texts), len(texts))
    emb, t_embed = timed(embed_texts, texts[:k], enc, batch_size=args.batch_size, use_cache=args.cache, progress=True)
    note = " (read from the embedding cache)" if enc.stats["cached"] else ""
    if k < len(texts):
        # Embedding every row was too slow on this machine: the rate is measured on k rows and
        # scaled; the other rows get vectors near those of the embedded ones (duplicates of
        # varied strength), so the search and grouping still run on n real-shaped vectors.
        rate = k / t_embed
        emb = np.concatenate([emb, noisy_copies(emb, len(texts) - k)])
        t_embed = len(texts) / rate
        note = (f" (scaled: {k} rows embedded at {rate:.1f} rows/s; the other {len(texts) - k} vectors are noisy "
                "copies of those)")
    with PeakRSS() as mem:
        res, t_search = timed(semantic_pairs, emb, args.threshold, device="cpu")
    groups, t_group = timed(group_and_keep, len(texts), res.a, res.b, res.score)
    nd_mb = emb.nbytes / 2**20
    print(f"embed {t_embed:.1f} s{note} | search {t_search:.2f} s | group {t_group:.2f} s | "
          f"search+group / embed = {(t_search + t_group) / t_embed:.1%}")
    print(f"pairs {len(res.a)}, groups {len(groups.sizes())}, removed {len(groups.removed)}; "
          f"search peak memory +{mem.mb:.0f} MB (n·d float32 = {nd_mb:.0f} MB; n×n float32 would be "
          f"{len(texts) ** 2 * 4 / 2**30:.0f} GB)")
    return emb


def baselines_part(args, emb, texts):
    m = min(args.naive_rows, len(emb))
    sub, sub_texts = np.ascontiguousarray(emb[:m]), texts[:m]
    print(f"\n## exact search vs baselines on the first {m} rows (threshold {args.threshold})")
    with PeakRSS() as mem_ours:
        ours, t_ours = timed(semantic_pairs, sub, args.threshold, device="cpu", borderline=0)
    with PeakRSS() as mem_naive:
        (ni, nj), t_naive = timed(naive_pairs, sub, args.threshold)
    truth = pair_set(ni, nj)
    found = pair_set(ours.a, ours.b)
    (sa, sb), t_semhash = timed(semhash_pairs, sub, sub_texts, args.threshold)
    semhash_found = pair_set(sa, sb)
    rows = [
        ("dataprep blocked exact search", t_ours, mem_ours.mb, found),
        ("naive n×n matrix (numpy)", t_naive, mem_naive.mb, truth),
        ("semhash 0.5 (usearch index + threshold query)", t_semhash, None, semhash_found),
    ]
    print("| method | time (s) | peak memory (MB) | pairs | recall vs exact | ours faster by |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, mb, pairs in rows:
        recall = len(pairs & truth) / len(truth) if truth else 1.0
        mem = f"{mb:.0f}" if mb is not None else "n/a"
        print(f"| {name} | {t:.2f} | {mem} | {len(pairs)} | {recall:.4f} | {t / t_ours:.2f}× |")
    assert found == truth, "blocked search must find exactly the pairs of the full matrix"


def datasketch_near(texts, threshold, num_perm, ngram=5):
    """datasketch MinHashLSH with our shingles (hashed by datasketch's sha1) and the same bands."""
    from datasketch import MinHash, MinHashLSH

    from dataprep.dedupe.exact import normalize_text

    bands, rows = optimal_bands(threshold, num_perm, *RECALL_WEIGHTS)
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    grams = []
    sigs = []
    for t in texts:
        norm = normalize_text(t)
        g = {norm[i : i + ngram] for i in range(max(1, len(norm) - ngram + 1))} if norm else set()
        grams.append(g)
        m = MinHash(num_perm=num_perm)
        m.update_batch([s.encode("utf-8") for s in g])
        sigs.append(m)
    for i, (g, m) in enumerate(zip(grams, sigs, strict=True)):
        if g:
            lsh.insert(i, m)
    pairs = set()
    for i, (g, m) in enumerate(zip(grams, sigs, strict=True)):
        if not g:
            continue
        for j in lsh.query(m):
            if j > i:
                inter = len(g & grams[j])
                if inter / (len(g) + len(grams[j]) - inter) >= threshold:
                    pairs.add((i, j))
    return pairs


def near_part(args, texts):
    m = min(args.near_rows, len(texts))
    sub = texts[:m]
    print(f"\n## near: {m} rows, char 5-grams, num_perm {args.num_perm}, threshold {args.near_threshold}, "
          f"bands×rows {optimal_bands(args.near_threshold, args.num_perm, *RECALL_WEIGHTS)} for both")
    res, t_ours = timed(near_pairs, sub, args.near_threshold, num_perm=args.num_perm)
    ours = pair_set(res.a, res.b)
    theirs, t_ds = timed(datasketch_near, sub, args.near_threshold, args.num_perm)
    both = ours | theirs
    # the true Jaccard of every pair either found: both must only hold pairs ≥ threshold
    sh = shingle_all(sub)
    union = np.array(sorted(both), dtype=np.int64).reshape(-1, 2)
    true_j = jaccard(sh, union[:, 0], union[:, 1]) if len(union) else np.zeros(0)
    print("| method | time (s) | pairs | pairs only this one found | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(f"| dataprep near (numpy MinHash + LSH + Jaccard check) | {t_ours:.2f} | {len(ours)} | "
          f"{len(ours - theirs)} | {t_ds / t_ours:.1f}× |")
    print(f"| datasketch 2.0 MinHashLSH + same check | {t_ds:.2f} | {len(theirs)} | {len(theirs - ours)} | 1.0× |")
    print(f"pairs found by both: {len(ours & theirs)}; all pairs found have true Jaccard ≥ threshold: "
          f"{bool((true_j >= args.near_threshold - 1e-6).all())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--naive-rows", type=int, default=20_000)
    ap.add_argument("--near-rows", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--near-threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--embed-rows", type=int, default=None,
                    help="embed only this many rows and scale the time (default: all)")
    ap.add_argument("--cache", action="store_true", help="read/write the embedding cache (embed time is then not real)")
    ap.add_argument("--parts", default="semantic,near")
    args = ap.parse_args()
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    texts = bench_texts(max(args.rows, args.near_rows))
    if "near" in args.parts:
        near_part(args, texts)
    if "semantic" in args.parts:
        emb = semantic_part(args, texts[: args.rows])
        baselines_part(args, emb, texts[: args.rows])
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
