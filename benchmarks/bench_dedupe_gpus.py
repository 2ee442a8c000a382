"""Semantic dedupe end to end (embed, exact search, group) on every visible GPU and on one, same rows.

Issue #17's target: 10M rows in ≤ 5 minutes on two GPUs, ≥ 1.8× one GPU. The product's library
calls, as `dataprep dedupe --methods semantic` makes them: `embed_texts` (no cache; one model copy
per GPU: one worker process each, batches by a token budget by default), `semantic_pairs(devices=...)`
(the fused kernel; the upper triangle split over the GPUs) and `group_and_keep`. All GPUs run first,
then GPU 0 alone; each stage is timed (not timed: model loading, a 20k-row embedding warm-up, and
compiling every configuration of the search kernel on every GPU: the first 100k-row 2-GPU search
took 16.0 s, GPU 1 compiling, when only GPU 0 had been warmed). Then the two runs are compared: the vectors, the pairs (those that differ
must lie within fp16 rounding of the threshold) and the kept rows. The same passes run first on the
first --calibrate-rows rows (1M: a minute or two), so that a run cut short still has rates; with
--variants (e.g. threads:auto,processes:auto,threads:1024) once per embedding variant, and --workers best
then runs the full size the fastest way. With one GPU visible each size runs once (no "GPU 0 alone" pass).

The text (`bench_dedupe.fragment_texts`, generated here from the real texts of ../shared/data):
85% bases, each three random 2–5-word pieces of real texts, and 15% edited copies of bases.

Writes the figures to --json after every stage (a run cut short keeps what it measured), prints a
heartbeat line every 20 s (stage, rows embedded so far, RSS), and skips a one-GPU stage that
would end after --budget-s from the start, taken as twice the all-GPU stage (it says so). Do not pipe its output through a
filter that buffers (grep without --line-buffered): a run killed at its time limit then shows
nothing (the first 2×H200 attempt, RESULTS.md).

    HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1 PYTHONPATH=. \
        python3 benchmarks/bench_dedupe_gpus.py --rows 10000000 --model <fp16 MiniLM dir>
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dedupe import fragment_texts  # noqa: E402

from dataprep.dedupe.groups import group_and_keep  # noqa: E402
from dataprep.dedupe.semantic import semantic_pairs  # noqa: E402
from dataprep.embed import embed_texts, load_encoder, visible_devices  # noqa: E402

START = time.perf_counter()


def rss_gib() -> tuple[float, float]:
    """(resident now, peak so far) of this process, GiB."""
    with open("/proc/self/statm") as fh:
        now = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return now / 2**30, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Heartbeat:
    """Every `every` seconds, a line with the stage, the rows embedded so far (counted as chunks come
    back to this process, from threads or worker processes) and the RSS, so that a run cut short
    shows where it was."""

    def __init__(self, out: dict, every: float = 20.0) -> None:
        import threading

        from dataprep import embed

        self.stage, self.rows, self.out, self.every = "start", 0, out, every
        on_devices, workers_map = embed._encode_on_devices, embed._Workers.map

        def counted(results):
            for vecs, cut in results:
                self.rows += len(vecs)
                yield vecs, cut

        embed._encode_on_devices = lambda *a, **k: counted(on_devices(*a, **k))
        embed._Workers.map = lambda pool, *a, **k: counted(workers_map(pool, *a, **k))
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.every)
            print(f"[{time.perf_counter() - START:6.1f} s] ... {self.stage}: {self.rows:,} rows embedded so far; "
                  f"RSS {rss_gib()[0]:.1f} GiB", flush=True)


def sync(devices: list[str]) -> None:
    import torch

    for d in devices:
        if d.startswith("cuda"):
            torch.cuda.synchronize(d)


def warm_search(devices: list[str], dim: int, threshold: float) -> None:
    """Compile every configuration of the search kernel on every device (triton compiles per device;
    the kernel times the configurations once per GPU model and size and keeps the faster, so a
    second GPU would otherwise compile inside a timed search)."""
    import torch

    from dataprep.dedupe import search_kernel

    for d in devices:
        if not (d.startswith("cuda") and search_kernel.available(d)):
            continue
        x = torch.nn.functional.normalize(torch.randn(2 * search_kernel.GROUP_ROWS, dim, device=d), dim=1).half()
        for cfg in search_kernel.GPU_CONFIGS:
            try:
                search_kernel.kernel_pairs(x, threshold, config=cfg)
            except Exception as e:  # noqa: BLE001 - a configuration this GPU cannot run is skipped when searching too
                print(f"  warm-up: {search_kernel._name(cfg)} on {d}: {repr(e)[:120]}", flush=True)
        torch.cuda.synchronize(d)


def run(texts: list[str], devices: list[str], args, report: dict, out: dict, budget_left, beat, save) -> dict | None:
    """Embed, search and group `texts` on `devices`; the figures go into `report` (and --json) as they come."""
    import torch

    beat.stage = f"load + warm-up on {len(devices)}"

    enc = load_encoder(args.model, devices[0].split(":")[0], devices=devices, workers=args.workers)
    if enc.use_processes(len(texts)):  # the warm-up below must go the same way as the timed call
        enc.workers_pool()
    else:
        enc.models()
    warm = embed_texts(texts[:20_000], enc, batch_size=args.batch_size, use_cache=False)  # CUDA kernels, allocator, workers
    warm_search(devices, warm.shape[1], args.threshold)
    sync(devices)
    for d in devices:
        if d.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(d)
    n = len(texts)
    if not budget_left("embed"):
        return None
    beat.stage, beat.rows = f"embed on {len(devices)}", 0
    t = time.perf_counter()
    emb = embed_texts(texts, enc, batch_size=args.batch_size, use_cache=False)
    sync(devices)
    report["embed_s"] = round(time.perf_counter() - t, 2)
    report["embed_rows_per_s"] = round(n / report["embed_s"])
    say(f"  embed  {report['embed_s']:7.1f} s ({report['embed_rows_per_s']:,} rows/s, {enc.precision}, "
        f"batch {args.batch_size or 'auto'}, {'processes' if enc.use_processes(n) else 'threads'}, "
        f"{enc.stats['truncated']:,} truncated); RSS {rss_gib()[0]:.1f} GiB", out)
    save()
    enc.close()  # as dedupe does: the worker processes give their GPU memory back before the search
    if not budget_left("search"):
        return {"emb": emb}
    beat.stage = f"search on {len(devices)}"
    t = time.perf_counter()
    res = semantic_pairs(emb, args.threshold, devices=devices)
    sync(devices)
    report["search_s"] = round(time.perf_counter() - t, 2)
    report["pairs"] = len(res.a)
    report["search"] = {k: v for k, v in res.stats.items() if k in ("search_path", "part_rows", "tile")}
    say(f"  search {report['search_s']:7.1f} s ({len(res.a):,} pairs ≥ {args.threshold}, {res.stats})", out)
    save()
    beat.stage = f"group on {len(devices)}"
    t = time.perf_counter()
    groups = group_and_keep(n, res.a, res.b, res.score)
    report["group_s"] = round(time.perf_counter() - t, 2)
    report["groups"], report["removed"] = len(groups.sizes()), len(groups.removed)
    report["total_s"] = round(report["embed_s"] + report["search_s"] + report["group_s"], 2)
    report["peak_gpu_gib"] = {d: round(torch.cuda.max_memory_allocated(d) / 2**30, 2) for d in devices
                              if d.startswith("cuda")}
    report["rss_gib"], report["peak_rss_gib"] = (round(x, 1) for x in rss_gib())
    say(f"  group  {report['group_s']:7.1f} s ({report['groups']:,} groups, {report['removed']:,} rows removed)", out)
    say(f"  total  {report['total_s']:7.1f} s; peak GPU memory {report['peak_gpu_gib']} GiB; host RSS "
        f"{report['rss_gib']} GiB now, {report['peak_rss_gib']} GiB peak (process)", out)
    return {"emb": emb, "pairs": res.a.astype(np.int64) * n + res.b, "removed": np.sort(groups.removed)}


def compare(many: dict, one: dict, n: int, threshold: float, section: dict, out: dict) -> None:
    """The all-GPU run against the one-GPU run: vectors, pairs, kept rows."""
    check = section.setdefault("agreement", {})
    check["embeddings_max_abs_diff"] = float(np.abs(many["emb"] - one["emb"]).max())
    if "pairs" in many and "pairs" in one:
        differ = np.setxor1d(many["pairs"], one["pairs"])
        a, b = differ // n, differ % n
        cos = np.einsum("ij,ij->i", one["emb"][a], one["emb"][b])
        check["pairs_differ"] = int(len(differ))
        check["pairs_differ_max_dist_to_threshold"] = float(np.abs(cos - threshold).max()) if len(differ) else 0.0
        check["removed_differ"] = int(len(np.setxor1d(many["removed"], one["removed"])))
    say(f"agreement of the all-GPU and one-GPU runs: {check}", out)


def passes(texts: list[str], gpus: list[str], args, section: dict, out: dict, beat, save, estimate) -> None:
    """All GPUs, then GPU 0 alone, on `texts`; figures under `section`. `estimate(stage, gpus)` is a
    stage's expected seconds (None: unknown); a stage expected to end after --budget-s is skipped."""
    kept = {}
    for devices in [gpus, gpus[:1]] if len(gpus) > 1 else [gpus]:
        report = section.setdefault("runs", {}).setdefault(str(len(devices)), {})
        say(f"{len(texts):,} rows on {len(devices)} device(s) {devices}:", out)

        def budget_left(stage: str, report=report, k=len(devices)) -> bool:  # noqa: B008
            guess = estimate(stage, k)
            if guess is None or time.perf_counter() - START + guess <= args.budget_s:
                return True
            report[f"{stage}_skipped"] = f"~{guess:.0f} s expected, would pass --budget-s {args.budget_s:.0f}"
            say(f"  {stage} skipped: {report[f'{stage}_skipped']}", out)
            save()
            return False

        kept[len(devices)] = run(texts, devices, args, report, out, budget_left, beat, save)
        save()
    if len(kept) == 2 and all(kept.values()):
        compare(kept[len(gpus)], kept[1], len(texts), args.threshold, section, out)
        one, many = section["runs"]["1"], section["runs"][str(len(gpus))]
        section["scaling"] = {k: round(one[k] / many[k], 2) for k in ("embed_s", "search_s", "total_s") if k in one}
        say(f"{len(texts):,} rows: scaling on {len(gpus)} devices {section['scaling']}; all-GPU total "
            f"{many.get('total_s')} s (target for 10M rows on two GPUs: ≤ 300 s, ≥ 1.8x)", out)
    save()


def say(line: str, out: dict) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {line}", flush=True)
    out.setdefault("log", []).append(line)


def variants(value: str) -> list[tuple[str, int | None]]:
    """`threads:auto,processes:1024` → [("threads", None), ("processes", 1024)]."""
    out = []
    for item in filter(None, value.split(",")):
        workers, _, batch = item.partition(":")
        if workers not in ("auto", "threads", "processes") or not (batch in ("", "auto") or batch.isdigit()):
            raise argparse.ArgumentTypeError(f"{item!r}: write WORKERS:BATCH, WORKERS in auto/threads/processes, "
                                             "BATCH auto or a number")
        out.append((workers, int(batch) if batch.isdigit() else None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="texts a batch (default: auto, batches of up to 131,072 padded tokens on a GPU)")
    ap.add_argument("--workers", default="auto", choices=("auto", "threads", "processes", "best"),
                    help="embedding workers (auto: one process per GPU on several GPUs; best: the fastest of --variants)")
    ap.add_argument("--variants", type=variants, default=[],
                    help="WORKERS:BATCH,... (e.g. threads:auto,processes:auto,threads:1024): one calibration pass each")
    ap.add_argument("--save-texts", default=None, help="also write the generated texts here (parquet, column text)")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--calibrate-rows", type=int, default=1_000_000,
                    help="first the same passes on this prefix of the rows (0: none)")
    ap.add_argument("--budget-s", type=float, default=560, help="skip a one-GPU stage expected to end after this")
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "dedupe_gpus.json"))
    args = ap.parse_args()
    if args.workers == "best" and not (args.variants and 0 < args.calibrate_rows < args.rows):
        ap.error("--workers best picks among the calibration's --variants: give --variants and --calibrate-rows")
    import torch

    cuda = torch.cuda.is_available()
    gpus = visible_devices("cuda") if cuda else ["cpu", "cpu"]  # on a CPU: two copies, to check that it runs
    out = {"rows": args.rows, "threshold": args.threshold, "batch_size": args.batch_size or "auto",
           "workers": args.workers, "devices": gpus,
           "machine": f"{len(gpus)} x {torch.cuda.get_device_name(0)}, {os.cpu_count()} cores" if cuda else "CPU"}

    def save() -> None:
        Path(args.json).write_text(json.dumps(out, indent=1))

    beat = Heartbeat(out)
    beat.stage = "generate"
    t = time.perf_counter()
    texts, copies = fragment_texts(args.rows)
    out["generate_s"], out["copies"] = round(time.perf_counter() - t, 1), copies
    say(f"{len(texts):,} texts ({copies:,} edited copies) generated in {out['generate_s']} s; {out['machine']}", out)
    if args.save_texts:  # the same texts for another benchmark (bench_engine.py's near dedupe input)
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": texts}), args.save_texts)
    first = args.calibrate_rows if 0 < args.calibrate_rows < args.rows else 0
    if first:  # the same passes on a prefix first: every rate within a minute or two, whatever comes after
        calibration = out.setdefault("calibration", {"rows": first})
        for variant in args.variants or [(args.workers, args.batch_size)]:
            workers, batch = variant
            name = f"{workers}:{batch or 'auto'}"
            section = calibration.setdefault("variants", {}).setdefault(name, {}) if args.variants else calibration
            say(f"calibration, embedding workers {workers}, batch {batch or 'auto'}:", out)
            passes(texts[:first], gpus, argparse.Namespace(**{**vars(args), "workers": workers, "batch_size": batch}),
                   section, out, beat, save, lambda stage, k: None)
        if args.workers == "best":  # the full run embeds the way the calibration embedded fastest
            k = str(len(gpus))
            best = min(calibration["variants"].items(), key=lambda kv: kv[1]["runs"][k].get("embed_s", 1e9))[0]
            workers, batch = best.split(":")
            args.workers, args.batch_size = workers, None if batch == "auto" else int(batch)
            out["workers"], out["batch_size"] = args.workers, args.batch_size or "auto"  # an int or "auto", as above
            say(f"full run with the fastest calibration variant: {best}", out)
            save()

    def estimate(stage: str, k: int) -> float | None:
        """None (always run) for the all-GPU pass; for one GPU, twice the all-GPU pass's time."""
        ref = out.get("runs", {}).get(str(len(gpus)), {}).get(f"{stage}_s")
        return 2 * ref if k < len(gpus) and ref is not None else None

    passes(texts, gpus, args, out, out, beat, save, estimate)


if __name__ == "__main__":
    main()
