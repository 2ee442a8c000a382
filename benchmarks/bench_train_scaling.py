"""`dataprep train` on 1 GPU and on N GPUs of one machine at the same global batch: scaling of
trained tokens/s, and the loss curves side by side (they should lie on each other).

1 GPU runs micro-batch 4 packed rows x grad accumulation N; N GPUs run `dataprep train --gpus N`
(DDP, accelerate launch) with micro-batch 4 x grad accumulation 1 on each: the same global batch
of 4N packed rows per optimizer step, the same rows in the same order. Both are the product's
command line (subprocesses), so the launcher, the model load and the compilation are in the
whole-run figures; steady state is the median step after --warmup.

    python benchmarks/bench_train_scaling.py --data D --shape 1b --gpus 2 --steps 40 --out out/scaling

D is the --data directory of bench_train_gpu.py (plain/, packed/, tokenizer/). Each run writes
OUT/<n>gpu; a run whose metrics.json is there is not repeated unless --runs names it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_train_gpu import random_model_dir, steady_and_whole  # noqa: E402


def train_cmd(data: Path, model: Path, out: Path, gpus: int, n: int, steps: int) -> list[str]:
    per_gpu_accum = n // gpus
    return [sys.executable, "-m", "dataprep", "train", str(data / "packed"), "-o", str(out), "--model", str(model),
            "--micro-batch", "4", "--grad-accum", str(per_gpu_accum), "--max-steps", str(steps), "--lr", "2e-4",
            "--scheduler", "constant", "--warmup-ratio", "0", "--report-to", "none", "--force",
            *(["--gpus", str(gpus)] if gpus > 1 else [])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--gpus", type=int, default=2, help="N")
    ap.add_argument("--runs", type=int, nargs="*", default=None, help="GPU counts to (re)run: 1 and/or N [both]")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default="out/scaling")
    ap.add_argument("--model-cache", default=str(Path(tempfile.gettempdir()) / "dataprep-bench-models"))
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from dataprep.models import save_tokenizer

    data, out = Path(args.data), Path(args.out)
    model = random_model_dir(args.shape, Path(args.model_cache))
    save_tokenizer(AutoTokenizer.from_pretrained(str(data / "tokenizer")), model)
    counts = (1, args.gpus)
    for gpus in args.runs if args.runs is not None else counts:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
        if gpus == 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = "0"
        done = subprocess.run(train_cmd(data, model, out / f"{gpus}gpu", gpus, args.gpus, args.steps), env=env,
                              cwd=HERE.parent)
        if done.returncode:
            sys.exit(f"the {gpus}-GPU run failed (exit {done.returncode})")
    results = {}
    for gpus in counts:
        path = out / f"{gpus}gpu" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        r = steady_and_whole(f"{gpus} GPU", [s["seconds"] for s in m["train_loss"]], m["trained_tokens"], args.warmup,
                             m["train_seconds"], m["train_seconds"], [s["loss"] for s in m["train_loss"]],
                             m.get("peak_gpu_gb"))
        results[gpus] = {**r, "processes": m["processes"]}
    print(f"\n{args.shape}, global batch {4 * args.gpus} packed rows of 2048 per step, {args.steps} steps")
    print("| GPUs | steady step s | steady trained tok/s | whole-run trained tok/s | train loop s | peak GPU GB "
          "| x 1 GPU steady | x 1 GPU whole |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    one = results.get(1)
    for gpus, r in results.items():
        xs = f"{r['trained_tokens_per_s'] / one['trained_tokens_per_s']:.2f}" if one else "-"
        xw = f"{r['whole_trained_tokens_per_s'] / one['whole_trained_tokens_per_s']:.2f}" if one else "-"
        print(f"| {gpus} | {r['steady_step_s']} | {r['trained_tokens_per_s']:,.0f} | {r['whole_trained_tokens_per_s']:,.0f} "
              f"| {r['whole_train_s']} | {r['peak_gpu_gb']} | {xs} | {xw} |")
    if len(results) == 2:
        a, b = results[1]["losses"], results[args.gpus]["losses"]
        print(f"loss per step, 1 vs {args.gpus} GPUs: largest difference {max(abs(x - y) for x, y in zip(a, b, strict=True)):.2e}"
              f" (first {a[0]:.4f} / {b[0]:.4f}, last {a[-1]:.4f} / {b[-1]:.4f})")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(range(1, len(a) + 1), a, label=f"1 GPU (grad accum {args.gpus})", lw=2)
        ax.plot(range(1, len(b) + 1), b, "--", label=f"{args.gpus} GPUs (DDP)", lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title(f"dataprep train, {args.shape} QLoRA, same global batch")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "loss_1_vs_n.png", dpi=100)
        print(f"wrote {out / 'loss_1_vs_n.png'}")
    (out / "scaling.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
