"""The host side of GPU embedding, emulated on a CPU: does a second "GPU" embed twice as fast?

On 2×H200 the embedding did not scale (1M rows: 66,445 rows/s on two GPUs, 67,981 on one): the
per-row and per-batch Python work under one GIL was the limit. This runs the real `embed_texts` path
(keys, unique texts, chunks, the real Rust tokenizer, ids and padding, batching, threads or worker
processes) with a stub model (`StubGPU`) that stands for a GPU: per batch it holds the GIL for
--host-ms (the Python module calls and kernel launches of a MiniLM forward) and then sleeps outside
the GIL for the GPU's time, --gpu-ms per 1,024 texts of the data's mean length (4 ms: ~250k rows/s,
an H200's MiniLM fp16 rate on short texts), scaled by the batch's padded tokens. The vectors are a
cheap function of the ids (this measures the host, not the model).

    PYTHONPATH=. python benchmarks/bench_embed_host.py --rows 100000
    PYTHONPATH=. python benchmarks/bench_embed_host.py --rows 30000 --host-ms 40 --gpu-ms 1 --batches 1024 --skip-breakdown

(the second: Python work under the GIL dominates, as on the 32-core GPU host, instead of this
VM's tokenizer: threads cannot scale it, processes can.)

Prints rows/s for each (workers, batch, devices) and the scaling of 2 devices over 1; worker
processes are timed after their start (a first call of 16 texts starts them; they are kept). This VM has 2
shared cores, so the tokenizer and the workers compete for them: absolute figures are low.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


class StubGPU:
    """MiniLM's tokenizer and window; a forward holds the GIL `host_s` and sleeps `gpu_s_per_token`
    for each padded token outside it. Its presence makes `batch_limits` treat it as a GPU."""

    def __init__(self, host_s: float, gpu_s_per_token: float) -> None:
        import torch

        from dataprep import embed
        from dataprep.models import resolve_model

        real = embed._load("minilm", resolve_model("minilm"), "cpu", "fp32")
        self.tokenizer, self.max_seq_length = real.tokenizer, real.max_seq_length
        self.device = torch.device("cpu")
        self.host_s, self.per_token = host_s, gpu_s_per_token
        limits = getattr(embed, "batch_limits", None)  # (absent from the code before the token budget)
        if limits and not getattr(limits, "stub", False):
            embed.batch_limits = lambda batch_size, device: limits(batch_size, "cuda")  # as on a GPU (this process)
            embed.batch_limits.stub = True

    def get_embedding_dimension(self) -> int:
        return 384

    def __call__(self, features: dict) -> dict:
        import torch

        ids = features["input_ids"]
        end = time.perf_counter() + self.host_s
        while time.perf_counter() < end:  # Python work under the GIL, as module calls and launches are
            pass
        time.sleep(ids.numel() * self.per_token)  # the GPU's time, outside the GIL
        vec = torch.zeros(len(ids), 384)
        vec[:, 0], vec[:, 1] = ids[:, 1].float(), ids.sum(1).float()
        return {"sentence_embedding": vec + 1.0}


def load_stub(host_s: float, gpu_s_per_token: float, device: str) -> StubGPU:
    return StubGPU(host_s, gpu_s_per_token)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--host-ms", type=float, default=4.0, help="GIL-held ms per forward call")
    ap.add_argument("--gpu-ms", type=float, default=4.0, help="GPU ms per 1,024 texts of the mean length")
    ap.add_argument("--breakdown-only", action="store_true")
    ap.add_argument("--batches", default="1024,auto", help="comma list of batch sizes (auto: the token budget)")
    ap.add_argument("--skip-breakdown", action="store_true")
    args = ap.parse_args()
    from bench_dedupe import fragment_texts

    from dataprep import embed

    texts, _ = fragment_texts(args.rows)
    tok = embed._load("minilm", embed.resolve_model("minilm"), "cpu").tokenizer
    mean_tokens = float(np.mean([len(x) for x in tok(texts[:5000])["input_ids"]]))
    per_token = args.gpu_ms / 1e3 / (1024 * mean_tokens)
    print(f"{len(texts):,} texts, {mean_tokens:.1f} tokens on average; stub: {args.host_ms} ms GIL-held per forward, "
          f"{args.gpu_ms} ms outside it per 1,024 texts ({1024 / args.gpu_ms * 1e3:,.0f} rows/s a device)", flush=True)
    if not args.skip_breakdown:
        breakdown(texts, args.host_ms)
        parent_cost(texts)
    if args.breakdown_only:
        return
    results = {}
    batches = [None if b == "auto" else int(b) for b in args.batches.split(",")]
    for workers, batch in [(w, b) for w in ("threads", "processes") for b in batches]:
        for k in (1, 2):
            enc = embed.load_encoder("minilm", "cpu", devices=["cpu"] * k, workers=workers)
            enc.load = functools.partial(load_stub, args.host_ms / 1e3, per_token)
            t = time.perf_counter()
            embed_texts_timed(texts[:16], enc, batch)  # the workers' start (spawn, imports, tokenizer), not timed
            start = time.perf_counter() - t
            t = time.perf_counter()
            embed_texts_timed(texts, enc, batch)
            wall = time.perf_counter() - t
            enc.close()
            rate = len(texts) / wall
            results[(workers, batch, k)] = rate
            label = f"{workers:9s} batch {batch or 'auto (131,072 tokens)':>21}  {k} device(s)"
            print(f"{label}: {rate:9,.0f} rows/s ({wall:5.1f} s; start {start:.1f} s before, not counted)", flush=True)
        print(f"  scaling 2 over 1: {results[(workers, batch, 2)] / results[(workers, batch, 1)]:.2f}x", flush=True)


def breakdown(texts: list[str], host_ms: float) -> None:
    """Host µs a row, step by step, on one thread: what runs under the GIL (keys, unique, the ids,
    padding and batch assembly of `forward`, with a stub that takes no time) and the Rust tokenizer
    (outside the GIL, on every core: on a 32-core host it is ~16× cheaper than here)."""
    import hashlib

    from dataprep import embed

    n = len(texts)
    model = StubGPU(0.0, 0.0)

    def per_row(f) -> float:
        t = time.perf_counter()
        f()
        return (time.perf_counter() - t) / n * 1e6

    old_keys = per_row(lambda: np.array([hashlib.sha256(t.encode()).digest()[:16] for t in texts], dtype="S16"))
    keys = embed.text_keys(texts)
    print(f"GIL-held host µs a row ({n:,} texts, one thread): keys sha256 {old_keys:.2f} → xxh3-128 "
          f"{per_row(lambda: embed.text_keys(texts)):.2f}; unique "
          f"{per_row(lambda: np.unique(keys, return_index=True, return_inverse=True)):.2f}")
    chunks = [texts[i : i + embed.CHUNK] for i in range(0, n, embed.CHUNK)]
    tokens = []
    print(f"  tokenize (Rust, outside the GIL, {len(chunks)} chunks): "
          f"{per_row(lambda: tokens.extend(embed.tokenize(model, c) for c in chunks)):.2f}")
    for batch in (1024, None):
        calls = []
        spy = _Counting(model, calls)
        host = per_row(lambda spy=spy, batch=batch: [embed.forward(spy, c, t, batch) for c, t in zip(chunks, tokens, strict=True)])
        per_call = host_ms * 1e3 * len(calls) / n
        print(f"  forward, batch {batch or 'auto'}: ids + padding + tensors {host:.2f}, {len(calls):,} forward calls "
              f"(~{n / len(calls):,.0f} texts each): at {host_ms} ms of module calls each {per_call:.2f}; "
              f"sum {host + per_call:.2f} µs a row → a GIL-bound ceiling of {1e6 / (host + per_call):,.0f} rows/s",
              flush=True)


def parent_cost(texts: list[str], workers: int = 2) -> None:
    """CPU time of this process (all its threads) a row while `workers` worker processes with a
    stub that takes no time embed: keys, unique, chunks, sending texts, taking the vectors back."""
    from dataprep import embed

    enc = embed.load_encoder("minilm", "cpu", devices=["cpu"] * workers, workers="processes")
    enc.load = functools.partial(load_stub, 0.0, 0.0)
    embed.embed_texts(texts[:16], enc, use_cache=False)  # start the workers
    cpu, wall = time.process_time(), time.perf_counter()
    embed.embed_texts(texts, enc, use_cache=False)
    print(f"parent process with {workers} worker processes: {(time.process_time() - cpu) / len(texts) * 1e6:.2f} µs "
          f"of CPU a row (wall {(time.perf_counter() - wall) / len(texts) * 1e6:.2f})", flush=True)
    enc.close()


class _Counting:
    def __init__(self, model, calls: list) -> None:
        self.m, self.calls = model, calls
        self.__dict__.update({k: getattr(model, k) for k in ("tokenizer", "max_seq_length", "device")})

    def __call__(self, features: dict) -> dict:
        self.calls.append(len(features["input_ids"]))
        return self.m(features)


def embed_texts_timed(texts, enc, batch):
    from dataprep.embed import embed_texts

    return embed_texts(texts, enc, batch_size=batch, use_cache=False)


if __name__ == "__main__":
    main()
