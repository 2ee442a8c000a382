"""experimental: not yet run to completion on a GPU, see RESULTS.md (known problem below).

What is alive on the GPU at a training step's peak: `dataprep train`'s product path
(training.sft.train_sft) and trl's SFTTrainer + liger + FlexAttention (bench_train_gpu.run_trl),
each with torch.cuda.memory._record_memory_history over steps --from..--to, the allocations alive
at the peak of those steps grouped by where they were made (python frames), and what was
allocated before the recording (the weights):

    python benchmarks/memory_peak_gpu.py --data D --shape 1b --runs dataprep trl_liger_flex --out P

D is bench_train_gpu.py's --data directory. Each run is a fresh process; writes P/memory_<run>.txt.

Known problem (H200, torch 2.11, 2026-12-01): recording python stacks during dataprep's compiled,
checkpointed layers failed in the backward's recompute with "SystemError: <built-in method apply of
FunctionMeta object> returned NULL without setting an exception"; not yet run to the end on either path.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

KEEP = ("training/", "peft/", "transformers/", "bitsandbytes/", "torchinductor", "liger_kernel/", "trl/",
        "torch/utils/checkpoint", "torch/_functorch", "torch/optim", "torch/autograd", "torch/nn/attention")


def where(frames: list[dict]) -> str:
    """The innermost two frames from the libraries that matter, as file:line function."""
    picked = []
    for f in frames:
        name = f.get("filename", "")
        if any(k in name for k in KEEP):
            short = "/".join(name.split("/")[-2:])
            picked.append(f"{short}:{f.get('line')} {f.get('name')}")
        if len(picked) == 2:
            break
    return " < ".join(picked) or "(no python frame: autograd engine / C++)"


def live_at_peak(snapshot: dict) -> tuple[int, list[tuple[str, int, int]]]:
    """Replay the allocation trace; (peak bytes above the start, [(where, bytes, blocks)] alive then)."""
    events = [e for trace in snapshot["device_traces"] for e in trace]
    live, now, peak, peak_i = {}, 0, 0, -1
    for i, e in enumerate(events):
        if e["action"] == "alloc":
            live[e["addr"]] = e["size"]
            now += e["size"]
            if now > peak:
                peak, peak_i = now, i
        elif e["action"] == "free_completed" and e["addr"] in live:
            now -= live.pop(e["addr"])
    alive: dict[int, dict] = {}
    for e in events[: peak_i + 1]:
        if e["action"] == "alloc":
            alive[e["addr"]] = e
        elif e["action"] == "free_completed":
            alive.pop(e["addr"], None)
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in alive.values():
        g = groups[where(e.get("frames", []))]
        g[0] += e["size"]
        g[1] += 1
    return peak, sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda x: -x[1])


def record(run: str, args) -> None:
    """In this process: the run, recording steps --from..--to; the report to OUT/memory_<run>.txt."""
    import bench_train_gpu as bench
    import torch

    calls, lines = [0], []

    def around(step):
        def wrapped(*a, **kw):
            if not torch.cuda.is_available():  # a CPU check of the paths: nothing to record
                return step(*a, **kw)
            calls[0] += 1
            if calls[0] == args.start:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                wrapped.before = torch.cuda.memory_allocated()
                torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
            out = step(*a, **kw)
            if calls[0] == args.to:
                torch.cuda.synchronize()
                snap = torch.cuda.memory._snapshot()
                torch.cuda.memory._record_memory_history(enabled=None)
                peak, groups = live_at_peak(snap)
                gb = 1e9
                lines.append(f"{run}: allocated before step {args.start} (weights, optimizer state, caches): "
                             f"{wrapped.before / gb:.3f} GB; peak of steps {args.start}-{args.to} above that: "
                             f"{peak / gb:.3f} GB (replayed); max_memory_allocated {torch.cuda.max_memory_allocated() / gb:.3f} GB")
                lines.append("alive at the peak, by where it was allocated (recorded steps only):")
                lines.extend(f"{b / 1e6:10.1f} MB {n:6d} blocks  {k}" for k, b, n in groups[:args.top])
            return out
        return wrapped

    model_dir = bench.random_model_dir(args.shape, Path(args.model_cache))
    from transformers import AutoTokenizer

    from dataprep.models import save_tokenizer

    save_tokenizer(AutoTokenizer.from_pretrained(str(Path(args.data) / "tokenizer")), model_dir)
    work = Path(tempfile.mkdtemp(prefix=f"mem-{run}-"))
    if run == "trl_liger_flex":
        import transformers

        transformers.Trainer.training_step = around(transformers.Trainer.training_step)
        bench.run_trl(model_dir, Path(args.data), args.to - 1, 1, work)
    else:
        from training import loop

        loop.train_step = around(loop.train_step)
        bench.run_dataprep(model_dir, Path(args.data), args.to - 1, 1, work, name=run)
    text = "\n".join(lines) + "\n"
    Path(args.out, f"memory_{run}.txt").write_text(text)
    print(text, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--runs", nargs="+", default=["dataprep", "trl_liger_flex"])
    ap.add_argument("--start", type=int, default=2, help="first recorded step (the first one compiles)")
    ap.add_argument("--to", type=int, default=3, help="last recorded step")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", default="out/memory")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    ap.add_argument("--in-process", action="store_true")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.in_process:
        record(args.runs[0], args)
        return
    for run in args.runs:  # a fresh process each
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--in-process", "--runs", run], check=False)


if __name__ == "__main__":
    main()
