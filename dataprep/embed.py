"""Sentence embeddings for semantic dedupe: model loading, device choice, batching, and a cache.

- `load_encoder(name, device)` loads any sentence-transformers model (`minilm` is packaged);
  on CUDA it runs in fp16. A bare `cuda` (or `auto` on a CUDA machine) means every visible GPU
  (`CUDA_VISIBLE_DEVICES` restricts them; `cuda:N` is one GPU): one model copy per GPU, and the
  length-sorted chunks of texts go to whichever copy is free: on several GPUs (from 500k texts),
  one worker process per GPU (each with its own GIL: the per-batch Python work of one process was the limit, 2 H200s
  embedded no faster than one on threads), else threads. Each chunk's vectors do not depend on
  which copy embedded it.
- Batches: on a GPU, by default as many length-sorted texts as fit in `AUTO_BATCH_TOKENS` padded
  tokens (short texts: thousands a batch; the Python cost of a forward is per batch; a model
  without a fast tokenizer: as many texts as long as its window); on CPU 64.
- `embed_texts(texts, encoder)` returns L2-normalised float32 vectors. sentence-transformers
  sorts each call's texts by length before batching, so batches carry little padding.
- The cache (`EmbeddingCache`) is keyed by (model, precision) and the xxh3-128 of each text, so
  re-running dedupe with another threshold, or on a file with a few new rows, only embeds what
  it has not seen. It lives in `$DATAPREP_CACHE/embeddings/<model key>/part-*.npz`.
- Texts longer than the model's window are truncated for embedding; they are counted (cheaply:
  only texts with more characters than the window has tokens can be longer), and the count
  is cached with the vectors.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import threading
import uuid
import weakref
from pathlib import Path

import numpy as np
import xxhash

from dataprep.errors import DataprepError
from dataprep.io import fingerprint
from dataprep.models import cache_dir, resolve_model


def pick_device(device: str = "auto") -> str:
    """`auto` → cuda if available, else mps, else cpu; an explicit device is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DataprepError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DataprepError("--device mps was asked for but is not available; use --device cpu or auto")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise DataprepError(f"unknown --device {device!r}; use auto, cuda, mps or cpu")
    return device


def visible_devices(device: str) -> list[str]:
    """Every visible GPU for a bare `cuda` (CUDA_VISIBLE_DEVICES restricts them), else `device` alone."""
    if device != "cuda":
        return [device]
    import torch

    return [f"cuda:{i}" for i in range(max(1, torch.cuda.device_count()))]


class Encoder:
    """A sentence-transformers model, loaded only when a text is not in the cache.

    `key` identifies its vectors (model files + precision): vectors with equal keys are
    interchangeable, so a rerun whose texts are all cached never loads the model. `devices`: the
    devices that embed, one model copy each (default: `visible_devices(device)`).
    """

    def __init__(self, name: str = "minilm", device: str = "auto", devices: list[str] | None = None,
                 workers: str = "auto") -> None:
        if workers not in WORKERS:
            raise DataprepError(f"unknown embedding workers {workers!r}; use one of {', '.join(WORKERS)}")
        self.name = name
        self.path = resolve_model(name)
        self.device_option, self.device = device, pick_device(device)
        self.devices = [pick_device(d) for d in devices] if devices else visible_devices(self.device)
        self.precision = "fp16" if self.devices[0].startswith("cuda") else "fp32"
        self.key = _model_key(self.path, self.precision)
        self.stats = {"truncated": 0, "embedded": 0, "cached": 0}
        self.load = functools.partial(_load, name, self.path, precision=self.precision)  # device -> model; picklable
        self.workers = workers
        self._models: list = []
        self._pool: _Workers | None = None

    def workers_pool(self) -> _Workers:
        """The worker processes (one per device), started on first use, kept until `close`."""
        if self._pool is None or not self._pool.procs:
            self._pool = _Workers(self.load, self.devices)
            weakref.finalize(self, self._pool.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, if any, and drop the model copies of this process (on CUDA their
        memory goes back to the driver), so what runs next (the search) has the GPUs' memory. The
        encoder stays usable: a later call loads what it needs again."""
        if self._pool is not None:
            self._pool.close()
        if self._models:
            self._models.clear()
            if any(d.startswith("cuda") for d in self.devices):
                import gc

                import torch

                gc.collect()  # a model (or its tokenizer cache) in a reference cycle would keep its tensors
                torch.cuda.empty_cache()

    def use_processes(self, texts: int) -> bool:
        """Whether `texts` new texts are embedded by one worker process per device: with `processes`,
        or `auto` with several CUDA devices and at least PROCESSES_FROM texts (or the workers already
        running): starting them (~5-10 s) costs more than they save on fewer."""
        several_gpus = len(self.devices) > 1 and self.devices[0].startswith("cuda")
        running = self._pool is not None and bool(self._pool.procs)
        return self.workers == "processes" or (self.workers == "auto" and several_gpus
                                               and (texts >= PROCESSES_FROM or running))

    @property
    def model(self):
        """The model on the first device."""
        if not self._models:
            self._models.append(self.load(self.devices[0]))
        return self._models[0]

    def models(self, most: int | None = None) -> list:
        """One model copy per device (on the first `most` devices only: fewer chunks than devices need
        fewer copies), loaded on first use."""
        self.model  # noqa: B018
        for device in self.devices[len(self._models) : most]:
            self._models.append(self.load(device))
        return self._models[:most]

    @property
    def max_tokens(self) -> int:
        """The model's window in tokens, read from its config when the model is not loaded yet."""
        config = Path(self.path) / "sentence_bert_config.json"
        if not self._models and config.is_file():
            value = json.loads(config.read_text()).get("max_seq_length")
            if value:
                return int(value)
        return int(self.model.max_seq_length or 512)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())


def _model_key(path: str, precision: str) -> str:
    root = Path(path)
    files = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return fingerprint({"path": str(root.resolve()), "files": files, "precision": precision, "text_key": TEXT_KEY})


def _load(name: str, path: str, device: str, precision: str = "fp32"):
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device)
    except Exception as exc:  # a directory that is not a sentence-transformers/transformers model
        raise DataprepError(f"cannot load embedding model {name!r} from {path}: {str(exc).splitlines()[0][:200]}") from None
    if precision == "fp16":
        model.half()
    return model


def load_encoder(name: str = "minilm", device: str = "auto", devices: list[str] | None = None,
                 workers: str = "auto") -> Encoder:
    """An encoder for a packaged name, local path or Hub id; fp16 on CUDA. The model loads lazily.
    `workers`: `threads`, `processes` (one per device) or `auto` (processes on several GPUs)."""
    return Encoder(name, device, devices, workers)


TEXT_KEY = "xxh3_128"  # in the cache's model key: vectors cached under sha256 keys (before) are not read


def text_keys(texts: list[str]) -> np.ndarray:
    """The 16-byte xxh3-128 of each text's UTF-8, as a numpy `S16` array (the cache key). One C call
    a text and one join: ~0.5 µs a row on a 2-core VM (sha256 in a list comprehension: ~0.85)."""
    return np.frombuffer(b"".join(map(xxhash.xxh3_128_digest, map(str.encode, texts))), dtype="S16")


class EmbeddingCache:
    """Vectors by text hash for one model key, stored as appended `part-*.npz` files."""

    def __init__(self, root: str | os.PathLike, model_key: str) -> None:
        self.dir = Path(root) / model_key
        self.keys = np.empty(0, dtype="S16")
        self.vecs: np.ndarray | None = None
        self.truncated = np.zeros(0, dtype=bool)
        self.error: str | None = None  # why vectors could not be written (a full disk): the run goes on without
        parts = sorted(self.dir.glob("part-*.npz")) if self.dir.is_dir() else []
        loaded = []
        for p in parts:
            try:
                with np.load(p) as z:
                    loaded.append((z["keys"], z["vecs"], z["truncated"]))
            except Exception:  # a torn or foreign file: ignore it, the vectors are recomputed
                continue
        if loaded:
            keys, vecs, truncated = (np.concatenate(part) for part in zip(*loaded, strict=False))
            self.keys, first = np.unique(keys, return_index=True)  # sorted, for searchsorted lookups
            self.vecs, self.truncated = vecs[first], truncated[first]

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, positions in self.vecs) for each key."""
        if self.vecs is None or len(keys) == 0:
            return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=np.int64)
        pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return self.keys[pos] == keys, pos

    def add(self, keys: np.ndarray, vecs: np.ndarray, truncated: np.ndarray) -> None:
        """Append new vectors atomically (write to a temp name, then rename). The cache only saves
        time: when it cannot be written (a full disk, no permission) it stops trying and says why."""
        if len(keys) == 0 or self.error:
            return
        name = f"part-{uuid.uuid4().hex}"
        tmp = self.dir / f".{name}.tmp.npz"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, keys=keys, vecs=vecs.astype(np.float32, copy=False), truncated=truncated)
            os.replace(tmp, self.dir / f"{name}.npz")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.error = f"{exc.strerror or exc} in {self.dir}"


CHUNK = 8192  # texts embedded (and cached) at a time: a killed run keeps what it finished
AUTO_BATCH_TOKENS = 131_072  # padded tokens a GPU batch holds when --batch-size is not given
CPU_BATCH = 64  # texts a CPU batch holds when --batch-size is not given
WORKERS = ("auto", "threads", "processes")
PROCESSES_FROM = 500_000  # new texts from which `auto` starts worker processes on several GPUs


def batch_limits(batch_size: int | None, device) -> tuple[int, int | None]:
    """(most texts, most padded tokens or None) a batch holds: `batch_size` texts when given; else on
    a GPU up to AUTO_BATCH_TOKENS tokens (a chunk at most), on CPU CPU_BATCH texts."""
    if batch_size:
        return int(batch_size), None
    if str(getattr(device, "type", device)).startswith("cuda"):
        return CHUNK, AUTO_BATCH_TOKENS
    return CPU_BATCH, None


def _encode_chunks(texts, first, todo, uniq_keys, truncated, encoder, cache, batch_size, progress,
                   engine: str = "local") -> np.ndarray:
    """The vectors of the unique texts (len(uniq_keys) × d; the rows `todo` filled, embedded longest
    first in chunks that are cached as they finish). On `engine` ray the chunks are embedded by Ray
    actors (dataprep.engine.ray_map, one model each). The matrix is made when the first chunk comes
    back: worker processes load the model, this process need not (to learn d)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    lengths = np.fromiter((len(texts[i]) for i in first[todo]), dtype=np.int64, count=len(todo))
    todo = todo[np.argsort(-lengths, kind="stable")]
    parts = [todo[start : start + CHUNK] for start in range(0, len(todo), CHUNK)]
    chunks = [[texts[i] for i in first[part]] for part in parts]
    if engine == "ray":
        results = _ray_encode(chunks, encoder, batch_size)
    elif encoder.use_processes(len(todo)):
        results = encoder.workers_pool().map(chunks, batch_size)
    else:
        results = _encode_on_devices(chunks, encoder.models(len(chunks)), batch_size)
    uniq_vecs, writes = None, []
    # the cache is written on a thread (file writes and the zip's CRC leave the GIL; ~1 µs a row here)
    with tqdm(total=len(todo), desc="embed", unit="text", disable=not progress) as bar, \
            ThreadPoolExecutor(1, thread_name_prefix="embed-cache") as writer:
        for part, (vecs, cut) in zip(parts, results, strict=True):
            if uniq_vecs is None:
                uniq_vecs = np.zeros((len(uniq_keys), vecs.shape[1]), dtype=np.float32)
            uniq_vecs[part], truncated[part] = vecs, cut
            if cache:
                writes.append(writer.submit(cache.add, uniq_keys[part], vecs, cut))
            bar.update(len(part))
    for write in writes:
        write.result()  # an OSError is the cache's own to report (cache.error); anything else is raised here
    return uniq_vecs


def _encode_on_devices(chunks: list[list[str]], models: list, batch_size: int):
    """(vectors, truncated) of each chunk, in order, from the models (one per device) side by side.

    Threads: a chunk is tokenized (Rust, outside the GIL) while the models embed earlier ones, then
    waits for a free model; at most two chunks per model are in flight. A chunk's vectors do not
    depend on which model embedded it (the same batches, padding and order on every device)."""
    import queue
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    free = queue.Queue()
    for model in models:
        free.put(model)

    def embed(chunk: list[str]):
        tokens = tokenize(models[0], chunk)  # before taking a model: tokenizing overlaps the others' forwards
        model = free.get()
        try:
            return forward(model, chunk, tokens, batch_size)
        finally:
            free.put(model)

    with ThreadPoolExecutor(2 * len(models), thread_name_prefix="embed") as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(embed, chunk))
            if len(pending) > 2 * len(models):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Workers:
    """One worker process per device (spawned: CUDA cannot be used in a forked child), each with the
    model loaded once and its own GIL, so the per-batch Python work (module calls, ids, padding) of
    one device no longer waits for the others'. Kept by the Encoder across `embed_texts` calls and
    stopped when it is closed or collected. Chunks go on one shared queue (whichever worker is free
    takes the next); inside a worker a thread tokenizes the next chunk while the model embeds this
    one. A chunk's vectors come back in a shared-memory block (through the result pipe they cost this
    process ~6 µs a row, more than the GPUs' time), the rest pickled; yielded in chunk order."""

    def __init__(self, load, devices: list[str]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.tasks, self.results, self.next = ctx.Queue(), ctx.Queue(), 0
        self.procs = [ctx.Process(target=_worker, args=(load, device, self.tasks, self.results), daemon=True,
                                  name=f"embed-{device}") for device in devices]
        for p in self.procs:
            p.start()

    def map(self, chunks: list[list[str]], batch_size: int | None):
        """(vectors, truncated) of each chunk, in order. A worker that fails or dies is a DataprepError
        (the pool is then closed)."""
        import queue

        first, self.next = self.next, self.next + len(chunks)
        for i, chunk in enumerate(chunks):
            self.tasks.put((first + i, chunk, batch_size))
        done: dict[int, tuple] = {}
        try:
            for want in range(first, first + len(chunks)):
                while want not in done:
                    try:
                        index, vecs, cut = self.results.get(timeout=1.0)
                    except queue.Empty:
                        dead = [p for p in self.procs if p.exitcode is not None]
                        if dead:
                            raise DataprepError(f"the embedding worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                                "rerun on one device (--device cuda:0), or, calling dataprep from a "
                                                "script, put its top-level code under `if __name__ == '__main__':` "
                                                "(workers are spawned and import it)") from None
                        continue
                    if vecs is None:
                        raise DataprepError(f"the embedding worker failed: {cut}")
                    done[index] = (_take_shared(*vecs), cut)
                yield done.pop(want)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self.tasks.cancel_join_thread()
        self.procs = []


def _worker(load, device: str, tasks, results) -> None:
    """A worker process: load the model on `device`; embed (index, texts, batch_size) tasks until None."""
    import queue

    try:
        model = load(device)
        tokenized: queue.Queue = queue.Queue(maxsize=2)

        def prefetch() -> None:  # tokenizing (Rust, outside the GIL) overlaps the forward of the chunk before
            try:
                while (item := tasks.get()) is not None:
                    tokenized.put((*item, tokenize(model, item[1])))
                tokenized.put(None)
            except BaseException as exc:  # noqa: BLE001 - raised by the loop below
                tokenized.put(exc)

        threading.Thread(target=prefetch, daemon=True).start()
        while (item := tokenized.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            index, texts, batch_size, tokens = item
            vecs, cut = forward(model, texts, tokens, batch_size)
            results.put((index, _put_shared(vecs), cut))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it as one line
        results.put((-1, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''} on {device}"))


def _put_shared(vecs: np.ndarray) -> tuple[str, tuple]:
    """Copy float32 `vecs` into a new shared-memory block; (its name, the shape). The reader unlinks it."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=max(vecs.nbytes, 1))
    np.ndarray(vecs.shape, np.float32, buffer=shm.buf)[:] = vecs
    shm.close()
    return shm.name, vecs.shape


def _take_shared(name: str, shape: tuple) -> np.ndarray:
    """The vectors `_put_shared` left in block `name`, copied out; the block is removed."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    try:
        view = np.ndarray(shape, np.float32, buffer=shm.buf)
        vecs = view.copy()
        del view
    finally:
        shm.close()
        shm.unlink()
    return vecs


def _ray_encode(chunks: list[list[str]], encoder: Encoder, batch_size: int):
    """(vectors, truncated) of each chunk, in order, from Ray actors that each load the model once:
    one GPU per actor when the cluster has GPUs (and --device allows), else CPU actors."""
    import functools

    from dataprep.engine import cluster, ray_map

    with cluster() as ray:
        gpus = 1 if encoder.device_option in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        factory = functools.partial(_chunk_encoder, encoder.name, "cuda" if gpus else "cpu", batch_size)
        yield from ray_map(factory, lambda: iter(chunks), actors=True, num_gpus=gpus, batches=len(chunks))


def _chunk_encoder(name: str, device: str, batch_size: int):
    """In a Ray actor: load the model once; return the function that embeds a chunk with it."""
    import functools

    return functools.partial(encode_flagging_truncation, load_encoder(name, device).model, batch_size=batch_size)


def encode(model, texts: list[str], batch_size: int | None = CPU_BATCH) -> np.ndarray:
    """L2-normalised float32 embeddings, as `model.encode(..., normalize_embeddings=True)` gives."""
    return encode_flagging_truncation(model, texts, batch_size)[0]


def encode_flagging_truncation(model, texts: list[str], batch_size: int | None = CPU_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised float32 embeddings, which texts exceeded the model's window and were cut).

    sentence-transformers tokenizes each batch through the Python tokenizer wrapper, which on a
    GPU costs far more than the model (measured on an H100: 3,654 rows/s, ~90% of it tokenizing).
    Here the Rust tokenizer encodes all texts in one parallel call, batches are length-sorted and
    padded with numpy, and the model's own modules (transformer, pooling, normalize) run on them.
    Models without a fast tokenizer fall back to `model.encode`.
    """
    return forward(model, texts, tokenize(model, texts), batch_size)


def tokenize(model, texts: list[str]):
    """(the Rust encodings cut to the model's window, their lengths, which texts were cut), or None
    for a model without a fast tokenizer (then `forward` runs `model.encode`)."""
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None or not texts:
        return None
    tok = _truncating_tokenizer(model, backend, int(model.max_seq_length or 512))
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: faster
    encodings = encode_batch(texts, add_special_tokens=True)  # all texts in one parallel Rust call
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    return encodings, lengths, np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)


def _flat_ids(encodings: list) -> np.ndarray:
    """The token ids of `encodings` end to end (a cut text's own ids: its overflowing parts are not
    among them). Each `.ids` list chained into one numpy array: 0.9 µs a row on a 2-core VM, where
    `Encoding.merge` (which clones every encoding in Rust) took 1.7 and a list per row ~9."""
    return np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64)


def forward(model, texts: list[str], tokens, batch_size: int | None = CPU_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """`encode_flagging_truncation` from the `tokenize` result. The vectors stay on the device until
    the last batch, so the GPU is never idle waiting for a copy back. Batches: `batch_limits`."""
    import torch

    most_rows, most_tokens = batch_limits(batch_size, model.device)
    if tokens is None:  # lengths unknown: a token budget holds texts as long as the window (a long window: few)
        window = int(model.max_seq_length or 512)
        vecs = model.encode(texts, batch_size=_batch_rows(most_rows, most_tokens, window), normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        full = model.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"] if texts else []
        return vecs, np.array([len(x) > window for x in full], dtype=bool)
    encodings, lengths, truncated = tokens
    order = np.argsort(-lengths, kind="stable")
    pad_id = model.tokenizer.pad_token_id or 0
    with_types = "token_type_ids" in model.tokenizer.model_input_names
    embedded = []
    with torch.inference_mode(), _fast_attention(model.device):
        start = 0
        while start < len(texts):
            width = int(lengths[order[start]])  # the longest of the batch: rows are longest first
            take = _batch_rows(most_rows, most_tokens, width)
            rows = order[start : start + take]
            start += take
            mask = np.arange(width)[None, :] < lengths[rows][:, None]  # rows longest first: the ids fill it in order
            batch = np.full((len(rows), width), pad_id, dtype=np.int64)
            batch[mask] = _flat_ids([encodings[i] for i in rows])
            input_ids = torch.from_numpy(batch).to(model.device, non_blocking=True)
            features = {"input_ids": input_ids,
                        "attention_mask": torch.from_numpy(mask).to(model.device, dtype=torch.long, non_blocking=True)}
            if with_types:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            emb = model(features)["sentence_embedding"]
            embedded.append(torch.nn.functional.normalize(emb.float(), dim=-1))
        vecs = torch.cat(embedded).cpu().numpy()
    out = np.empty_like(vecs)
    out[order] = vecs
    return out, truncated


def _batch_rows(most_rows: int, most_tokens: int | None, width: int) -> int:
    """Texts a batch of rows `width` tokens long holds within `batch_limits` (at least one)."""
    return most_rows if most_tokens is None else max(1, min(most_rows, most_tokens // max(width, 1)))


_SDPA_LOCK = threading.Lock()
_sdpa_users = [0, True]  # threads inside _fast_attention, the setting before the first of them


@contextlib.contextmanager
def _fast_attention(device):
    """On CUDA, keep SDPA off the cuDNN backend: it builds a plan per new shape, and every
    length-sorted batch has a new shape (the H100 profile showed ~2.8 ms CPU per attention call).
    The setting is global: it is restored when the last of the threads embedding side by side leaves."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        yield
        return
    with _SDPA_LOCK:
        if _sdpa_users[0] == 0:
            _sdpa_users[1] = torch.backends.cuda.cudnn_sdp_enabled()
            torch.backends.cuda.enable_cudnn_sdp(False)
        _sdpa_users[0] += 1
    try:
        yield
    finally:
        with _SDPA_LOCK:
            _sdpa_users[0] -= 1
            if _sdpa_users[0] == 0:
                torch.backends.cuda.enable_cudnn_sdp(_sdpa_users[1])


def _truncating_tokenizer(model, backend, max_len: int):
    """A copy of the model's Rust tokenizer that truncates at `max_len` and does not pad (settings
    are per object), made once per model and window (a copy costs ~20 ms; 10M rows are 1,200 chunks)."""
    from tokenizers import Tokenizer

    made = model.__dict__.setdefault("_dataprep_tokenizers", {})
    if max_len not in made:
        tok = Tokenizer.from_str(backend.to_str())
        tok.no_padding()
        tok.enable_truncation(max_len)
        made[max_len] = tok
    return made[max_len]


def default_cache_root() -> Path:
    return cache_dir() / "embeddings"


def _unique_in_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct keys in order of first appearance, where each first appears, each key's index
    among them): as np.unique, but in input order, so that distinct texts need no gather at the end."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], first[order], rank[inverse.reshape(-1)]


def embed_texts(
    texts: list[str],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    cache_root: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = False,
    engine: str = "local",
) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (n × d), reusing cached vectors by text hash.

    Adds to `encoder.stats`: embedded (new unique texts), cached (unique texts found in the
    cache) and truncated (unique texts longer than the model's window).
    """
    keys = text_keys(texts)
    uniq_keys, first, inverse = _unique_in_order(keys)
    cache = EmbeddingCache(cache_root or default_cache_root(), encoder.key) if use_cache else None
    found, pos = cache.lookup(uniq_keys) if cache else (np.zeros(len(uniq_keys), dtype=bool), None)
    todo = np.flatnonzero(~found)
    if found.all() and len(found):  # everything cached: the model is not even loaded
        uniq_vecs, truncated = cache.vecs[pos], cache.truncated[pos]
    else:
        truncated = np.zeros(len(uniq_keys), dtype=bool)
        uniq_vecs = None
        if len(todo):
            uniq_vecs = _encode_chunks(texts, first, todo, uniq_keys, truncated, encoder, cache, batch_size, progress,
                                       engine)
        if uniq_vecs is None:
            uniq_vecs = np.zeros((len(uniq_keys), encoder.dim), dtype=np.float32)
        if found.any():
            uniq_vecs[found], truncated[found] = cache.vecs[pos[found]], cache.truncated[pos[found]]
    encoder.stats["embedded"] += int(len(todo))
    encoder.stats["cached"] += int(found.sum())
    encoder.stats["truncated"] += int(truncated.sum())
    if cache is not None and cache.error:
        encoder.stats["cache_error"] = cache.error
    if not len(texts):
        return np.zeros((0, encoder.dim), dtype=np.float32)
    if len(uniq_vecs) == len(texts):  # every text distinct: in input order already, no copy (15 GB at 10M rows)
        return uniq_vecs
    return uniq_vecs[inverse]
