"""The tokenize stage: stream record batches through `tokenize_batch` (in worker processes with
`--num-proc`), optionally pack (dataprep.packing), and write a `datasets` save_to_disk
directory plus manifest.json and rejects.jsonl through the stage contract (dataprep.stage).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dataprep import io
from dataprep.engine import NOT_FINGERPRINTED, ray_map
from dataprep.errors import DataprepError
from dataprep.options import parse_options
from dataprep.records import IGNORE_INDEX, get_kind, kinds_with
from dataprep.stage import Manifest, Outcome, Rejects, Timer, TokenizerInfo, Workspace, run_stage, scan_records
from dataprep.tokenize import fidelity
from dataprep.tokenize.masks import choose_pad, plain_backend
from dataprep.tokenize.rows import (
    TokenizeOptions,
    arrow_batch,
    count_trainable,
    new_columns,
    on_mismatch_for,
    overflow_for,
    tokenize_batch,
)

WORK_SPLIT = ("num_proc", "batch_size", "allow_empty", *NOT_FINGERPRINTED)  # options that do not change what the output holds
CHAT_ONLY = ("reasoning", "split_turns", "tools_in_system")
# chat figures the row builder counts: extra --split-turns sequences and their tokens, rows whose tools went
# into the system turn (--tools-in-system), rows holding media references
CHAT_EVENTS = ("split_turns", "split_turn_tokens", "tools_in_system", "rows_with_media")
FIDELITY_KINDS = ("chat", "sft", "preference", "kto")  # kinds whose row builder runs the fidelity check (the manifest always says so)


def _read_batches(data: Path, columns: list[str], batch_size: int) -> Iterator[dict[str, list]]:
    """Record batches as column lists, streamed from parquet so memory stays bounded."""
    if data.suffix == ".parquet":
        import pyarrow.parquet as pq

        for rb in pq.ParquetFile(data).iter_batches(batch_size=batch_size, columns=columns):
            yield rb.to_pydict()
    else:
        frame = io.read_records(data)
        for part in frame.select(columns).iter_slices(batch_size):
            yield part.to_dict(as_series=False)


def _read_chat_template(path: str) -> str:
    """The text of a `--chat-template` file; a missing or unreadable one is a one-line error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise DataprepError(f"--chat-template {path}: {why}; give a readable UTF-8 Jinja file") from None


def _scan_input(path: str) -> tuple[Path, Manifest | None, str, list[str], int, list[str] | None]:
    """(data file, input manifest, kind, columns to read, row count, label names); validates early."""
    data, manifest, kind, columns = scan_records(path, "tokenize")
    n_rows = io.record_count(data)
    if kind is None:
        raise DataprepError(f"cannot tell the record kind from columns {sorted(columns)}; run `dataprep convert` first")
    entry = get_kind(kind, "tokenize")
    if entry.tokenize is None:
        raise DataprepError(f"record kind {kind!r} cannot be tokenized; tokenize takes {kinds_with(lambda k: k.tokenize)}")
    wanted = list(entry.reads) + [c for c in entry.reads_if_present if c in columns]
    missing = [c for c in wanted + ["source", "row"] if c not in columns]
    if missing:
        raise DataprepError(f"{data} lacks column(s) {', '.join(missing)} needed for kind {kind}; re-run `dataprep convert`")
    label_names = list(manifest.lineage.label_names) if manifest and manifest.lineage.label_names else None
    if kind == "classify" and not label_names:
        frame = io.read_records(data)
        label_names = sorted(frame["labels"].explode().drop_nulls().unique().to_list())
    return data, manifest, kind, sorted(set(wanted)) + ["source", "row"], n_rows, label_names


def _token_stats(lengths: np.ndarray, trainable: int) -> dict[str, Any]:
    if not len(lengths):
        return {"sequences": 0, "total": 0, "trainable": 0}
    p50, p95, p99 = (int(np.percentile(lengths, q, method="higher")) for q in (50, 95, 99))
    return {"sequences": int(len(lengths)), "total": int(lengths.sum()), "trainable": int(trainable),
            "length": {"min": int(lengths.min()), "p50": p50, "p95": p95, "p99": p99, "max": int(lengths.max()),
                       "mean": round(float(lengths.mean()), 1)}}


_WORKER: dict[str, Any] = {}


def _one_tokenizer_thread() -> None:
    """In a worker process (--num-proc, a Ray actor: one CPU each): the Rust tokenizer on one thread.
    Its batch encode otherwise starts a thread per core in every worker, N workers x N threads on
    N cores. Read by the tokenizer at each batch, so setting it in the worker is enough."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _worker_init(tok, kind, opts, specials, label_names) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle: no traceback per worker
    _one_tokenizer_thread()
    _WORKER.update(tok=tok, kind=kind, opts=opts, specials=specials, label_names=label_names)


def _ray_actor(**kwargs):
    """A Ray actor's setup: its tokenize function, the tokenizer unpickled once for the actor's batches
    (a Ray task unpickles its function's tokenizer for every batch: 75 ms each for SmolLM2's)."""
    _one_tokenizer_thread()
    return functools.partial(_tokenize_one, **kwargs)


def _worker_run(batch):
    w = _WORKER
    return _tokenize_one(batch, w["tok"], w["kind"], w["opts"], w["specials"], w["label_names"])


def _tokenize_one(batch, tok, kind, opts, specials, label_names):
    """One batch through tokenize_batch, its shard columns as one Arrow batch: built where the batch
    was tokenized (a worker thread, process or Ray actor), and sent back as Arrow buffers, not as
    Python lists. Returns (Arrow batch, rows kept with a fidelity mismatch, rejects, events)."""
    kept: list[dict] = []
    cols, rejects, events = tokenize_batch(batch, tok, kind, opts, specials, label_names, kept)
    return arrow_batch(kind, cols), kept, rejects, events


@contextmanager
def _old_objects_frozen():
    """The cyclic garbage collector kept off the work while the batches run. The objects alive before
    them (imported modules, the tokenizer, ...) are frozen (`gc.freeze`): in a process that imported
    transformers, each full collection traversed them all, 0.3-0.5 s of a 2-3 s chat tokenize. And the
    young generation is collected every 20,000 allocations instead of 700 (0.1 s less of collections
    on 5,730 chat rows). Objects made by the batches are collected as before. The freeze is left alone
    when the caller froze objects itself; both are undone after."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 20_000), *threshold[1:])
    frozen = not gc.get_freeze_count()
    if frozen:
        gc.freeze()
    try:
        yield
    finally:
        if frozen:
            gc.unfreeze()
        gc.set_threshold(*threshold)


def _in_order(pool, fn, batches, ahead: int):
    """`fn` over `batches` on `pool` (an executor), the results in order. At most `ahead` batches are
    submitted and not yet yielded (memory stays bounded); an error in a batch is raised here, in order."""
    from collections import deque

    pending = deque()
    try:
        for b in batches:
            pending.append(pool.submit(fn, b))
            if len(pending) == ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _two_in_flight(fn, batches):
    """`fn` over `batches`, in order, two batches at a time on threads: while one is in the tokenizer's
    Rust encode (which releases the GIL and uses every core), the other's Python work (rendering, masks,
    Arrow columns) runs, so on a few cores neither waits for the other. At most two batches are read
    ahead."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2, thread_name_prefix="tokenize") as pool:
        yield from _in_order(pool, fn, batches, 2)


def _map_batches(read, tok, kind, opts, specials, label_names, num_proc: int, n_batches: int):
    """tokenize_batch over the `n_batches` batches `read()` yields, in order: on Ray Data with
    --engine ray, else in `num_proc` worker processes if > 1 (no more than there are batches), else here."""
    if opts.engine == "ray":
        setup = functools.partial(_ray_actor, tok=tok, kind=kind, opts=opts, specials=specials, label_names=label_names)
        yield from ray_map(setup, read, address=opts.ray_address, actors=True, batches=n_batches)
        return
    batches = read()
    num_proc = min(num_proc, n_batches)
    if num_proc <= 1:
        yield from _two_in_flight(functools.partial(_tokenize_one, tok=tok, kind=kind, opts=opts, specials=specials,
                                                    label_names=label_names), batches)
        return
    yield from _in_processes(_worker_run, batches, num_proc, init=_worker_init,
                             initargs=(tok, kind, opts, specials, label_names), preload=(type(tok).__module__,))


def _in_processes(fn, batches, num_proc: int, *, init, initargs, preload: tuple[str, ...] = ()):
    """`fn` over `batches`, in order, in `num_proc` worker processes, each set up by `init(*initargs)`;
    at most two batches a worker are read ahead. A worker that dies (the OOM killer) or cannot start
    is a DataprepError, not a pool that waits forever for the batch it took."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(num_proc, mp_context=_worker_context(preload), initializer=init,
                             initargs=initargs) as pool:
        try:
            yield from _in_order(pool, fn, batches, 2 * num_proc)
        except BrokenProcessPool:
            raise DataprepError(f"a --num-proc worker process died or could not start (out of memory? killed?); "
                                f"retry with fewer than {num_proc} workers, a smaller --batch-size, or without "
                                "--num-proc") from None


def _worker_context(preload: tuple[str, ...]):
    """On Linux, workers forked from a fork server that imported the `preload` modules once (this
    process itself is never forked: a fork after the Rust tokenizer ran can deadlock). A spawned
    worker imports them itself: transformers 5.17 imports torch when a tokenizer is unpickled, 5.9 s
    a worker on the 16-core GPU host, and 16 workers doing it at once were all ready only after 88 s.
    Only third-party modules go there: the server imports them from its own default sys.path (before
    Python 3.13), so our own code comes to each worker the usual way, from this process's path.
    Elsewhere (macOS, where forking a process that imported such libraries is unsafe; Windows) spawned."""
    import multiprocessing as mp
    import sys

    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))  # read when the server starts: once a process
        return ctx
    return mp.get_context("spawn")


def tokenize(path: str | os.PathLike, out: str | os.PathLike, *, force: bool = False, progress: bool = True,
             **options: Any) -> Manifest:
    """Tokenize the records at `path` (a convert/dedupe output dir or a records file) into `out`.
    `options` are the fields of TokenizeOptions (tokenizer, max_len, overflow, train_on, ...).

    Returns the manifest; its `skipped` is True when an up-to-date output was kept.
    """
    from tqdm.auto import tqdm

    from dataprep import models

    opts = parse_options(TokenizeOptions, options, "tokenize")
    tokenizer, max_len, pack, num_shards, shard_size = opts.tokenizer, opts.max_len, opts.pack, opts.num_shards, opts.shard_size
    num_proc, batch_size = opts.num_proc, opts.batch_size
    if num_shards is not None and shard_size is not None:
        raise DataprepError("pass either --num-shards or --shard-size, not both")
    timer = Timer()
    with timer("scan"):
        data, in_manifest, kind, columns, n_rows, label_names = _scan_input(str(path))
        tok_path = models.resolve_model(tokenizer)
        tok = models.load_tokenizer(tok_path)
        if opts.chat_template:
            tok.chat_template = _read_chat_template(opts.chat_template)
        tok_fp = models.tokenizer_fingerprint(tok)
        entry = get_kind(kind)
        if entry.chat_template and not tok.chat_template:
            raise DataprepError(f"tokenizer {tokenizer} has no chat template; {kind} records need one: pick a chat "
                                "model's tokenizer (e.g. smollm2-135m)")
        if entry.causal and tok.eos_token_id is None and not (entry.encoder and tok.mask_token_id is not None):
            raise DataprepError(f"tokenizer {tokenizer} has no EOS token; pick a causal-LM tokenizer for kind {kind}")
        if pack and not entry.packable:
            raise DataprepError(f"--pack works for {kinds_with(lambda k: k.packable)} records, not {kind}; drop --pack")
        specials = choose_pad(tok)
        if getattr(tok, "backend_tokenizer", None) is not None:
            plain_backend(tok)  # before batches share it across threads (_two_in_flight)
        opts = replace(opts, overflow=overflow_for(kind, opts.overflow), on_mismatch=on_mismatch_for(kind, opts.seam, opts.on_mismatch))
        _check_overflow(kind, opts)
    chat_template = tok.chat_template if isinstance(tok.chat_template, str) else None
    tok_files = {"files_sha256": tokenizer_files_hash(tok_path),
                 "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest() if chat_template else None}
    split_only = () if opts.overflow == "split" else ("stride",)  # stride changes nothing else: not fingerprinted
    split_only += () if kind == "chat" else CHAT_ONLY  # nor the chat options for other kinds
    split_only += () if kind == "sft" else ("seam",)  # nor the seam outside sft
    split_only += () if kind in FIDELITY_KINDS else ("on_mismatch",)  # nor the fidelity check's option where it does not run
    split_only += ("chat_template",) if opts.chat_template is None else ()  # the template is in the tokenizer fingerprint
    config = {**{k: v for k, v in asdict(opts).items() if k not in WORK_SPLIT + split_only}, "tokenizer_fingerprint": tok_fp,
              "kind": kind, "label_names": label_names}
    facts = {"kind": kind, "label_names": label_names, "max_len": max_len, "packed": pack,
             "tokenizer": TokenizerInfo(tokenizer, tok_fp, tok_path, specials.pad_id, specials.eos_id)}

    def build(ws: Workspace) -> Outcome:
        rejects, events, kept_mismatched = Rejects(), Counter(), []
        lengths, trainable, records_out = array("i"), 0, 0  # 4 bytes a row: the only per-row state kept in memory
        timer, rows_file, writer = ws.timer, ws.scratch / "rows.arrow", None
        bar = tqdm(total=n_rows, desc="tokenize", unit="row", disable=not progress, leave=False)
        with bar, timer("tokenize"), _old_objects_frozen():  # the bar is cleared before an error is printed
            read = functools.partial(_read_batches, data, columns, batch_size)
            for rb, kept_mm, rej, ev in _map_batches(read, tok, kind, opts, specials, label_names, num_proc,
                                                             -(-n_rows // batch_size)):
                kept_mismatched.extend(kept_mm)
                writer = writer or pa.ipc.new_stream(str(rows_file), rb.schema)
                writer.write_batch(rb)
                rejects.extend(rej)
                events.update(ev)
                lengths.frombytes(rb.column("length").cast(pa.int32()).to_numpy().tobytes())
                trainable += count_trainable(kind, rb)
                # records kept (a split text is one record, so is a conversation split into turns)
                kept = rb.num_rows - ev.get("windows", 0) - ev.get("split_turns", 0)
                records_out += kept
                bar.update(kept + len(rej))
            if writer is None:  # no batches at all: an empty input
                rb = arrow_batch(kind, new_columns(kind))
                writer = pa.ipc.new_stream(str(rows_file), rb.schema)
            writer.close()
        lengths_np = np.asarray(lengths, dtype=np.int64)
        fid = fidelity.summary(events)
        chat_facts = {k: int(events.pop(k, 0)) for k in CHAT_EVENTS} if kind == "chat" else None
        packing_info = None
        if pack and chat_facts and chat_facts["rows_with_media"]:
            raise DataprepError(f"{chat_facts['rows_with_media']} row(s) hold media references, which packed shards do not "
                                "carry; drop --pack for multimodal rows")
        if pack:
            with timer("pack"):
                rows_file, packing_info = _pack_file(rows_file, lengths_np, max_len, ws.scratch)
        with timer("write"):
            shards = _save_shards(rows_file, ws.out, num_shards, shard_size)
            if kept_mismatched:  # --on-mismatch warn: the rows kept with a mismatch, for `inspect --fidelity`
                with open(ws.out / fidelity.KEPT_FILE, "w", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept_mismatched)
        details = dict(
            tokenizer_files=tok_files,
            pad_policy={"pad_token": specials.pad_token, "pad_token_id": specials.pad_id,
                        "source": specials.pad_source, "resize_embeddings": specials.pad_source.startswith("added"),
                        "vocab_size": len(tok), "eos_label_kept": True},
            shards=shards, events=dict(events),
            token_stats=_token_stats(lengths_np, packing_info["trainable"] if pack else trainable),
            packing=packing_info,
            columns=[c for c in new_columns(kind) if not pack or c != "media"] + (
                ["position_ids", "seq_lengths"] if pack else []),
        )
        if chat_facts is not None:
            details["chat"] = chat_facts
        if kind in FIDELITY_KINDS or fid["checked"] or fid["mismatched"]:
            details["fidelity"] = fid
        return Outcome(n_rows, records_out, details, rejects=rejects, lineage=facts)

    return run_stage("tokenize", out, inputs=[str(data)], config=config, build=build, data_files=("state.json",),
                     allow_empty=opts.allow_empty,
                     force=force, upstream=in_manifest)


def _check_overflow(kind: str, opts: TokenizeOptions) -> None:
    """--overflow split is for text; --stride goes with it and stays below --max-len."""
    if opts.overflow == "split" and kind != "text":
        raise DataprepError(f"--overflow split is for text records, not {kind}; pick truncate-prompt, truncate, drop or error")
    if opts.stride and opts.overflow != "split":
        raise DataprepError(f"--stride applies to text records split into windows (--overflow split), not to {kind} "
                            f"records with --overflow {opts.overflow}; drop --stride")
    if opts.stride >= opts.max_len:
        raise DataprepError(f"--stride {opts.stride} must be below --max-len {opts.max_len}")


tokenize.config_class = TokenizeOptions  # the options' one declaration: CLI, recipes, Python (dataprep.options)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "vocab.txt",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "added_tokens.json")


def tokenizer_files_hash(path: str) -> str | None:
    """sha256 over the tokenizer's own files in `path` (not the model weights next to them)."""
    files = [Path(path) / f for f in TOKENIZER_FILES if (Path(path) / f).is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _pack_file(rows_file: Path, lengths: np.ndarray, max_len: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """Pack the tokenized rows into `max_len` bins; returns the packed file and packing figures."""
    import pyarrow.compute as pc

    from dataprep.packing import PACKED_SCHEMA, pack, packed_table, packing_efficiency

    with pa.memory_map(str(rows_file)) as src:
        table = pa.ipc.open_stream(src).read_all()
        bins, algorithm = pack(lengths.tolist(), max_len)
        packed_file = work / "packed.arrow"
        trainable = 0  # recounted: packing masks the first label of every sequence
        with pa.ipc.new_stream(str(packed_file), PACKED_SCHEMA) as writer:
            step = 1000  # bins per write, so the packed copy is built in bounded pieces
            for start in range(0, len(bins), step):
                part = packed_table(table, bins[start : start + step])
                trainable += int(np.count_nonzero(pc.list_flatten(part.column("labels")).to_numpy() != IGNORE_INDEX))
                writer.write_table(part)
    eff = packing_efficiency(lengths.tolist(), len(bins), max_len)
    return packed_file, {"bins": len(bins), "sequences": int(len(lengths)), "capacity": max_len,
                         "efficiency": round(eff, 5), "algorithm": algorithm,
                         "lower_bound_bins": -(-int(lengths.sum()) // max_len), "trainable": trainable}


def _save_shards(rows_file: Path, out: Path, num_shards: int | None, shard_size: str | None) -> list[str]:
    """Write the rows as a `datasets` save_to_disk directory; returns the shard file names."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    ds = Dataset.from_file(str(rows_file))
    if num_shards is not None or not len(ds):  # an empty dataset still gets one (empty) shard, so it loads
        num_shards = max(1, min(num_shards or 1, len(ds))) if len(ds) else 1
    ds.save_to_disk(str(out), num_shards=num_shards, max_shard_size=shard_size)
    shards = sorted(p.name for p in out.glob("data-*.arrow"))
    _stable_state(out / "state.json", shards)
    return shards


def _stable_state(state_file: Path, shards: list[str]) -> None:
    """`datasets` writes a random `_fingerprint` into state.json; make it a hash of the shards, so
    two identical runs write byte-identical directories."""
    state = json.loads(state_file.read_text())
    h = hashlib.sha256()
    for name in shards:  # read in chunks: a shard is up to --shard-size (500 MB by default)
        h.update(name.encode() + b"\0")
        io.hash_file_into(h, state_file.parent / name)
    state["_fingerprint"] = h.hexdigest()[:16]
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
