"""Engines: where a stage's per-batch function runs.

- `local` (the default): in this process (tokenize: also `--num-proc` worker processes).
- `ray`: on Ray Data. The stage's own batch reader runs as a Ray Data read task, the stage's own
  per-batch function (`convert_frame`, `tokenize_batch`, ...) runs in a pool of actors (one copy
  of the function's state, e.g. a tokenizer, per actor), and the results come back to the driver
  in input order (`preserve_order`), where the stage writes them exactly as `local` does. So
  the two engines give the same records, rejects and shards: there is no second copy of a stage.

A batch and its result travel as one pickled cell of a one-row Arrow block, so any batch type
(a polars frame, a dict of column lists) and any result (records plus rejects, counts, events) go
through Ray Data unchanged; the polars frames in them travel as Arrow IPC streams in a second cell,
read in place on the other side. A task that fails because its worker died is retried by Ray; a
DataprepError raised by the function (bad input) comes back as that error, one line.

`--ray-address` connects to a running cluster; without it a local cluster starts with the
command and stops after it. A cluster that is already up in this process (a test fixture, a
notebook) is used as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dataprep.errors import DataprepError
from dataprep.options import opt

ENGINES = ("local", "ray")
NOT_FINGERPRINTED = ("engine", "ray_address")  # where the work runs does not change the output
INSTALL = "pip install 'dataprep[ray]'"


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Where a stage's per-batch work runs (dataprep.options: CLI flags and recipe keys)."""

    engine: str = opt("local", "Run the per-batch work in this process (local) or on Ray Data (ray; needs "
                      f"{INSTALL}). Same output either way.", choices=ENGINES)
    ray_address: str | None = opt(None, "--engine ray: a running cluster to use (e.g. 10.0.0.5:6379, or auto); "
                                  "default: a local cluster started and stopped with the command.")


def ray_module():
    """`ray`, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the data extra lacks pandas/pyarrow pieces)
    except ImportError:
        raise DataprepError(f"--engine ray needs Ray Data, which is not installed: {INSTALL} "
                            "(or use --engine local)") from None
    return ray


@contextlib.contextmanager
def cluster(address: str | None = None) -> Iterator[Any]:
    """A Ray cluster for the duration of a command: the one already up in this process, the one at
    `address`, or a new local one (stopped at the end)."""
    ray = ray_module()
    _quiet_data()
    if ray.is_initialized():
        yield ray
        return
    if address:
        _check_reachable(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except Exception as exc:  # ConnectionError, ValueError, TimeoutError, ...: all mean "no cluster there"
        where = f"--ray-address {address}" if address else "a local Ray cluster"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataprepError(f"cannot start or reach {where} ({first}); start it with `ray start --head` and pass its "
                            "address, or drop --ray-address to start a local one") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port that does not answer is one line now, not minutes of Ray retrying to reach it."""
    import socket

    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DataprepError(f"--ray-address {address}: write HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DataprepError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the "
                            "cluster with `ray start --head` and pass its address, or drop --ray-address to start a "
                            "local one") from None


def _quiet_data() -> None:
    """Ray Data's progress bars and per-operator logs off: the stage prints its own summary."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False
    for name in ("ray", "ray.data", "ray._private"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # said because the stage's reader is one read task; it yields many blocks, which the map spreads
    warnings.filterwarnings("ignore", message=r"The maximum number of concurrent tasks", category=UserWarning)


# ---------------------------------------------------------------- mapping a batch function


@dataclasses.dataclass(frozen=True)
class _Failed:
    """A DataprepError raised on a worker, carried back to the driver as its message."""

    message: str


class _Columns:
    """A polars frame that Arrow cannot hold (a column of Python objects: mixed JSON types), carried
    as its columns and schema."""

    def __init__(self, frame) -> None:
        self.data, self.schema = frame.to_dict(as_series=False), dict(frame.schema)

    def frame(self):
        import polars as pl

        return pl.DataFrame(self.data, schema=self.schema)


def _is_frame(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("polars")


class _Pickler(pickle.Pickler):
    """Pickles a value with its polars frames written to `frames` as Arrow IPC streams, one after the
    other, which the other side reads in place. polars' own pickle re-encodes a frame: 160 ms to pickle
    and 90 ms to unpickle a 50,000-row, 42 MB batch, most of convert's time on Ray; the stream is one
    copy of the frame's Arrow buffers. A frame with a column of Python objects (which Arrow would
    hold as their addresses) is pickled as its columns."""

    def __init__(self, file, frames) -> None:
        super().__init__(file, protocol=5)
        self.frames = frames

    def persistent_id(self, obj):
        if not _is_frame(obj):
            return None
        import polars as pl
        import pyarrow as pa

        if pl.Object in obj.dtypes:
            return None
        table, start = obj.to_arrow(compat_level=pl.CompatLevel.newest()), self.frames.tell()  # string views: no conversion
        with pa.ipc.new_stream(self.frames, table.schema) as writer:
            writer.write_table(table)
        return start, self.frames.tell()  # streams are padded to 8 bytes: each starts aligned

    def reducer_override(self, obj):
        return (_Columns.frame, (_Columns(obj),)) if _is_frame(obj) else NotImplemented


COPIED_BELOW = 4 << 20  # frames read in place keep their whole block in memory; small ones (under this, or
# under an eighth of their value's frames) are copied out


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, frames) -> None:
        super().__init__(file)
        self.frames = frames

    def persistent_load(self, pid):
        import polars as pl
        import pyarrow as pa

        start, end = pid
        stream = self.frames.slice(start, end - start)
        if stream.size < max(COPIED_BELOW, self.frames.size // 8):  # a small frame (lengths, counts) may be
            # kept after the rest of its value is gone: read in place it would pin the whole block
            stream = pa.py_buffer(stream.to_pybytes())
        return pl.from_arrow(pa.ipc.open_stream(stream).read_all())


def _binary(buffers: list) -> Any:
    """A large_binary array of these Arrow buffers; one buffer is used as it is (no copy)."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.cumsum([0, *(b.size for b in buffers)], dtype=np.int64))
    data = buffers[0] if len(buffers) == 1 else pa.py_buffer(b"".join(memoryview(b) for b in buffers))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(buffers), [None, offsets, data])


def _cells(values: list[Any]):
    """A block of one row per value: its pickle, and its frames' IPC streams."""
    import pyarrow as pa

    payloads, frames = [], []
    for value in values:
        out, sink = io.BytesIO(), pa.BufferOutputStream()
        _Pickler(out, sink).dump(value)
        payloads.append(pa.py_buffer(out.getvalue()))
        frames.append(sink.getvalue())
    return pa.table({"payload": _binary(payloads), "frames": _binary(frames)})


def _slices(column) -> list:
    """The values of a large_binary column as views of its buffer (a pyarrow scalar would copy each)."""
    import numpy as np
    import pyarrow as pa

    out = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        ends = np.frombuffer(offsets, np.int64)[chunk.offset : chunk.offset + len(chunk) + 1].tolist()
        data = data or pa.py_buffer(b"")
        out += [data.slice(start, end - start) for start, end in zip(ends[:-1], ends[1:], strict=True)]
    return out


def _values(block) -> Iterator[Any]:
    """The values of a block of `_cells`, their frames read in place from the block."""
    for payload, frames in zip(_slices(block.column("payload")), _slices(block.column("frames")), strict=True):
        yield _Unpickler(io.BytesIO(payload), frames).load()


def _batches_as_blocks(read: Callable[[], Iterable[Any]]):
    """The read task: each batch the stage's reader yields becomes a one-row block."""
    try:
        for batch in read():
            yield _cells([batch])
    except DataprepError as exc:
        yield _cells([_Failed(str(exc))])


class _Apply:
    """The map step: one actor holds `fn` (and what it closes over: a tokenizer, a template) and
    applies it to each batch."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, block):
        out = []
        for batch in _values(block):
            if isinstance(batch, _Failed):
                result = batch
            else:
                try:
                    result = self.fn(batch)
                except DataprepError as exc:
                    result = _Failed(str(exc))
            out.append(result)
        return _cells(out)


def _holding(setup: Callable[[], Callable[[Any], Any]]) -> type:
    """An `_Apply` class whose actors call `setup()` once (load a model) for the function they apply.
    It carries `setup` in its definition: sent once with the class, not as constructor arguments in
    the object store. (Ray Data still passes its own map function that way, so Ray 2.60's driver logs
    one `has constructor arguments in the object store` error line per actor: ray-project/ray#53727.)"""

    class Apply(_Apply):
        def __init__(self) -> None:
            super().__init__(setup())

    return Apply


def _source(read: Callable[[], Iterable[Any]]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class BatchSource(Datasource):
        """One read task running the stage's own reader (it streams: batches leave as they are read)."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(lambda: _batches_as_blocks(read), meta)]

    return BatchSource()


def actor_count(ray) -> int:
    """Map tasks at once: one per CPU of the cluster."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ray_map(fn: Callable[[Any], Any], read: Callable[[], Iterable[Any]], *, address: str | None = None,
            actors: bool = False, num_gpus: float = 0, batches: int | None = None) -> Iterator[Any]:
    """`fn(batch)` for each batch `read()` yields, in input order, computed on Ray Data.

    `read` runs in a Ray read task, `fn` in map tasks (one CPU each, as many at once as the cluster
    has CPUs). With `actors`, `fn` is a setup: each actor of a pool calls it once (to load a model)
    and applies the function it returns (`num_gpus` per actor: one actor per GPU; else one per CPU).
    Both must be picklable (closures are). A task whose worker dies is retried by Ray (Ray Data's default for tasks and actors). A
    DataprepError raised by either is raised here, with its message. `batches`: how many batches
    `read` yields, when known: no more workers than that (a small input on a big cluster does not
    start an actor per CPU, each loading its model or tokenizer).
    """
    with cluster(address) as ray, _one_batch_per_block():
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        n = actor_count(ray) if batches is None else max(1, min(actor_count(ray), batches))
        ds = ray.data.read_datasource(_source(read), num_cpus=0, override_num_blocks=1)  # a light reader
        if actors:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            ds = ds.map_batches(_holding(fn), batch_size=1, batch_format="pyarrow", num_gpus=num_gpus,
                                num_cpus=0 if num_gpus else 1,
                                compute=ActorPoolStrategy(min_size=1, max_size=min(gpus, n) if num_gpus else n,
                                                          initial_size=None if num_gpus else n))
        else:
            ds = ds.map_batches(_Apply(fn), batch_size=1, batch_format="pyarrow", num_cpus=1,
                                compute=TaskPoolStrategy(size=n))
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            for result in _values(block):
                if isinstance(result, _Failed):
                    raise DataprepError(result.message)
                yield result


@contextlib.contextmanager
def _one_batch_per_block():
    """Ray Data's settings for mapping batches: results in input order (so the output equals
    local's), and one batch per block: a read task otherwise merges its small
    blocks up to 128 MiB, and one map task would then get every batch, one after another."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.target_max_block_size
    ctx.execution_options.preserve_order, ctx.target_max_block_size = True, 1
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.target_max_block_size = saved


@contextlib.contextmanager
def sort_shuffle():
    """Ray Data's groupby by a sort-based shuffle: its default hash shuffle starts a pool of
    aggregator actors for every groupby, 5.5 s against 0.3 s for 1.26M rows on 2 CPUs (dedupe's
    shuffles and the grouping's rounds run one groupby after another)."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    saved, ctx.shuffle_strategy = ctx.shuffle_strategy, ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.shuffle_strategy = saved


def timed(results: Iterator[Any], timer, name: str) -> Iterator[Any]:
    """`results`, with the time spent waiting for each counted under `name` in the stage's timer."""
    while True:
        with timer(name):
            result = next(results, _END)
        if result is _END:
            return
        yield result


_END = object()
