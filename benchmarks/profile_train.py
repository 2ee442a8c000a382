"""Where a `dataprep train` step goes, on each rank: torch.profiler over a few steps of the
product path (training.sft.train_sft on packed shards), the top CPU and CUDA ops, the step wall
times, and the host's waits for the device. Run it as one process or under torchrun:

    python benchmarks/profile_train.py --data D --shape 1b --steps 20 --profile-from 12 --out P
    torchrun --nproc-per-node 2 benchmarks/profile_train.py --data D --shape 1b --steps 20 --profile-from 12 --out P

(add TORCH_LOGS=recompiles to see recompilations). D is bench_train_gpu.py's --data directory;
each rank writes P/profile_<world>gpu_rank<r>_offload_<auto|yes|no>.txt (--offload: --offload-checkpoints). Micro-batch 4 packed rows, grad accumulation
--grad-accum (1 GPU x 2 = the global batch of 2 GPUs x 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile-from", type=int, default=12, help="first profiled step (after compilation)")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--offload", default="auto", choices=["auto", "yes", "no"], help="--offload-checkpoints")
    ap.add_argument("--out", default="out/profile")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from training import dist, loop
    from training.sft import SFTConfig, train_sft

    dist.setup()
    from bench_train_gpu import random_model_dir

    model = random_model_dir(args.shape, Path(args.model_cache)) if dist.is_main() else None
    dist.barrier()
    model = dist.broadcast(model)
    if dist.is_main():
        from transformers import AutoTokenizer

        from dataprep.models import save_tokenizer

        save_tokenizer(AutoTokenizer.from_pretrained(str(Path(args.data) / "tokenizer")), model)
    dist.barrier()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    step_fn, count, walls, lines = loop.train_step, [0], [], []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def profiled_step(*a, **kw):
        count[0] += 1
        first, last = args.profile_from, args.profile_from + args.profile_steps - 1
        if not first <= count[0] <= last:
            t = time.perf_counter()
            done = step_fn(*a, **kw)
            walls.append(round(time.perf_counter() - t, 4))
            return done
        if count[0] == first:
            sync()
            profiled_step.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            profiled_step.prof.__enter__()
            profiled_step.t = time.perf_counter()
        done = step_fn(*a, **kw)
        if count[0] == last:
            sync()
            wall = time.perf_counter() - profiled_step.t
            prof = profiled_step.prof
            prof.__exit__(None, None, None)
            avg = prof.key_averages()
            lines.append(f"{args.profile_steps} profiled steps, {wall:.3f} s wall (profiler on)")
            for key in ("self_cpu_time_total", "self_device_time_total"):
                lines.append(f"--- top ops by {key}")
                lines.append(avg.table(sort_by=key, row_limit=30, max_name_column_width=60))
        return done

    loop.train_step = profiled_step
    cfg = SFTConfig(model=str(model), micro_batch=4, grad_accum=args.grad_accum, max_steps=args.steps, lr=2e-4,
                    scheduler="constant", warmup_ratio=0.0, report_to="none",
                    offload_checkpoints=args.offload)
    train_sft(str(Path(args.data) / "packed"), str(out / f"adapter_{dist.world()}gpu"), cfg, force=True)
    head = [f"world {dist.world()} rank {dist.rank()}, grad accum {args.grad_accum}",
            f"step wall s (unprofiled): {walls}"]
    (out / f"profile_{dist.world()}gpu_rank{dist.rank()}_offload_{args.offload}.txt").write_text("\n".join(head + lines) + "\n")
    print("\n".join(head), flush=True)


if __name__ == "__main__":
    main()
