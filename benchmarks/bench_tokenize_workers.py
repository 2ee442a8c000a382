"""Benchmark: where tokenize's `--num-proc` workers spend their time (issue #17: on 16 cores,
`--num-proc 16` ran at about one worker's speed).

The same records as bench_engine.py (alpaca_en_demo.json repeated, converted; SmolLM2, max_len
2048, 2,000 rows a batch). tokenize runs up to its worker pool, and the pool's arguments (the
tokenizer, options) and batches are kept; then:
1. a fresh, spawned worker process: seconds to import the stage, unpickle its arguments (the
   tokenizer: which modules come with it, torch included?) and run its first batch, counted from the
   process's start. On Linux `--num-proc` now forks its workers from a fork server that imported the
   tokenizer's module once, so this is what that server pays once (and what a spawned worker, on
   macOS and Windows, pays each);
2. the batches in this process, one at a time: seconds a batch (wall and CPU);
3. the batches in `--workers` worker processes (tokenize's own pool, `_in_processes`): the wall
   time, when the last worker was ready (spawned, its imports and arguments loaded), each batch's
   seconds in its worker (wall and CPU), and how busy the workers were
   (the batches' seconds over wall x workers). Batches slower in the pool than alone mean the
   workers slow each other down (more CPU a batch: they share something, e.g. memory bandwidth;
   the same CPU but more wall: they wait for a core); idle workers mean they wait for the parent.

    python benchmarks/bench_tokenize_workers.py [--rows 100000] [--workers N (default: cores)]
        [--tokenizer smollm2-135m] [--json out.json] [--data DIR (as ../shared/data; for the device)]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "out"

FRESH = """
import pickle, sys, time
start = float(sys.argv[2])
from dataprep.tokenize import stage
imported = time.time()
with open(sys.argv[1], "rb") as fh:
    initargs, batches = pickle.load(fh)
unpickled = time.time()
stage._worker_init(*initargs)
stage._worker_run(batches[0])
done = time.time()
print(f'{{"import_s": {imported - start:.3f}, "unpickle_s": {unpickled - imported:.3f}, "first_batch_s": {done - unpickled:.3f}, '
      f'"total_s": {done - start:.3f}, "torch_imported": {str("torch" in sys.modules).lower()}, "modules": {len(sys.modules)}}}')
"""


def capture(records: Path, tokenizer: str, path: Path) -> int:
    """Runs tokenize up to its worker pool; saves the pool's arguments and the batches to `path`."""
    from dataprep.tokenize import stage, tokenize

    class Captured(Exception):
        pass

    def keep(fn, batches, num_proc, *, init, initargs, preload=()):
        batches = list(batches)
        with open(path, "wb") as fh:
            pickle.dump((initargs, batches), fh)
        raise Captured(len(batches))
        yield

    stage._in_processes, saved = keep, stage._in_processes
    try:
        tokenize(records, OUT / "workers_unused", num_proc=2, max_len=2048, batch_size=2000, progress=False,
                 tokenizer=tokenizer, force=True)
    except Captured as exc:
        return exc.args[0]
    finally:
        stage._in_processes = saved
    raise SystemExit("tokenize did not reach its worker pool")


_SET_UP: dict[str, float] = {}


def timed_init(*initargs) -> None:
    from dataprep.tokenize import stage

    start = time.time()
    stage._worker_init(*initargs)
    _SET_UP.update(start=start, end=time.time())


def timed_run(batch):
    from dataprep.tokenize import stage

    start, cpu = time.time(), time.process_time()
    stage._worker_run(batch)
    return os.getpid(), _SET_UP["start"], _SET_UP["end"], start, time.time(), time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--tokenizer", default="smollm2-135m")
    ap.add_argument("--json", default=None)
    ap.add_argument("--data", default=None, help="a folder holding alpaca_en_demo.json (default: ../shared/data)")
    args = ap.parse_args()
    import bench_convert
    from bench_convert import build_csv

    if args.data:
        bench_convert.DATA = Path(args.data) / "alpaca_en_demo.json"

    from dataprep.convert import convert
    from dataprep.tokenize import stage

    records, dump = OUT / f"workers_records_{args.rows}", OUT / "workers_args.pkl"
    convert([str(build_csv(args.rows))], str(records), limit=args.rows)
    n_batches = capture(records, args.tokenizer, dump)
    result = {"rows": args.rows, "batches": n_batches, "workers": args.workers, "load_before": os.getloadavg()[0]}

    fresh = subprocess.run([sys.executable, "-c", FRESH, str(dump),
                            repr(time.time())], capture_output=True, text=True, cwd=REPO, check=True)
    result["fresh_worker"] = json.loads(fresh.stdout)

    with open(dump, "rb") as fh:
        initargs, batches = pickle.load(fh)
    stage._worker_init(*initargs)
    alone, alone_cpu = [], []
    for batch in batches:
        t, cpu = time.perf_counter(), time.process_time()
        stage._worker_run(batch)
        alone.append(time.perf_counter() - t)
        alone_cpu.append(time.process_time() - cpu)
    result["in_process"] = {"total_s": round(sum(alone), 2), "batch_median_s": round(statistics.median(alone), 3),
                            "batch_cpu_median_s": round(statistics.median(alone_cpu), 3)}

    t = time.time()
    runs = list(stage._in_processes(timed_run, iter(batches), args.workers, init=timed_init, initargs=initargs,
                                    preload=(type(initargs[0]).__module__,)))  # as tokenize's own pool
    wall = time.time() - t
    in_pool = [end - start for *_, start, end, _ in runs]
    ready = {pid: ready - t for pid, _, ready, *_ in runs}  # its process started, imported, unpickled, set up
    result["pool"] = {"wall_s": round(wall, 2), "batch_median_s": round(statistics.median(in_pool), 3),
                      "batch_cpu_median_s": round(statistics.median(r[-1] for r in runs), 3),
                      "batches_s": round(sum(in_pool), 2), "busy": round(sum(in_pool) / (wall * args.workers), 3),
                      "workers_used": len(ready), "last_worker_ready_s": round(max(ready.values()), 2),
                      "first_batch_start_s": round(min(r[3] for r in runs) - t, 2)}
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
