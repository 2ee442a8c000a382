"""The embedding layer: real MiniLM vectors, the cache by text hash, truncation counting, devices."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.embed import EmbeddingCache, embed_texts, load_encoder, pick_device, text_keys
from dataprep.errors import DataprepError


def test_pick_device_cpu_and_errors():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(DataprepError, match="unknown --device"):
        pick_device("tpu")


def test_cache_round_trip_and_lookup(tmp_path):
    cache = EmbeddingCache(tmp_path, "k")
    keys = text_keys(["a", "b", "c"])
    cache.add(keys[:2], np.eye(2, 3, dtype=np.float32), np.array([False, True]))
    (tmp_path / "k" / "part-torn.npz").write_bytes(b"not a zip")  # a torn write is ignored
    again = EmbeddingCache(tmp_path, "k")
    found, pos = again.lookup(keys)
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(again.vecs[pos[:2]], np.eye(2, 3))
    assert again.truncated[pos[:2]].tolist() == [False, True]


@pytest.mark.slow
def test_minilm_embeddings_cache_and_truncation(tmp_path):
    enc = load_encoder("minilm", "cpu")
    long_text = "word " * 400  # 400+ tokens, beyond MiniLM's 256-token window
    texts = ["A plane is taking off.", "An air plane is taking off.", "A man is playing a flute.", long_text,
             "A plane is taking off."]
    vecs = embed_texts(texts, enc, cache_root=tmp_path)
    assert vecs.shape == (5, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[4])  # the same text is embedded once
    assert vecs[0] @ vecs[1] > 0.9 > vecs[0] @ vecs[2]
    assert enc.stats == {"truncated": 1, "embedded": 4, "cached": 0}
    # a second encoder finds every vector in the cache and never loads the model
    enc2 = load_encoder("minilm", "cpu")
    again = embed_texts(texts[::-1], enc2, cache_root=tmp_path)
    np.testing.assert_array_equal(again, vecs[::-1])
    assert enc2.stats == {"truncated": 1, "embedded": 0, "cached": 4} and not enc2._models
    # a new text next to cached ones: only it is embedded
    enc3 = load_encoder("minilm", "cpu")
    embed_texts(texts + ["Something new."], enc3, cache_root=tmp_path)
    assert enc3.stats["embedded"] == 1 and enc3.stats["cached"] == 4


@pytest.mark.slow
def test_fast_encode_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from dataprep.embed import encode
    from dataprep.models import resolve_model

    model = SentenceTransformer(resolve_model("minilm"), device="cpu")
    texts = ["A man plays a guitar.", "", "short", "word " * 400, "서울은 한국의 수도입니다.", "A man plays a guitar."]
    ours = encode(model, texts, batch_size=4)
    theirs = model.encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (6, 384)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


@pytest.mark.slow
def test_truncation_flag_is_exact_at_the_window_edge():
    """A text of exactly the window (256 tokens with [CLS] and [SEP]) is whole; one more token is cut."""
    from dataprep.embed import encode_flagging_truncation

    model = load_encoder("minilm", "cpu").model
    texts = ["word " * 254, "word " * 255, "short", "word " * 600]
    assert [len(x) for x in model.tokenizer(texts, truncation=False, verbose=False)["input_ids"]] == [256, 257, 3, 602]
    vecs, truncated = encode_flagging_truncation(model, texts, batch_size=2)
    assert truncated.tolist() == [False, True, False, True] and vecs.shape == (4, 384)


def test_a_cache_that_cannot_be_written_is_skipped_with_its_reason(tmp_path, monkeypatch):
    """A full disk while caching must not abort the run: the vectors are still returned."""
    import errno

    import numpy as np

    from dataprep import embed

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    enc = embed.load_encoder("minilm", "cpu")
    vecs = embed.embed_texts(["a cat", "a dog"], enc, cache_root=tmp_path)
    assert vecs.shape == (2, enc.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert enc.stats["cache_error"].startswith("No space left on device")
    assert not list(tmp_path.rglob("*.npz"))  # no torn part left behind


def test_visible_devices_expands_a_bare_cuda_only(monkeypatch):
    import torch

    from dataprep.embed import visible_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_devices("cuda") == ["cuda:0", "cuda:1"]  # every GPU CUDA_VISIBLE_DEVICES leaves
    assert visible_devices("cuda:1") == ["cuda:1"] and visible_devices("cpu") == ["cpu"]
    assert load_encoder("minilm", "cpu").devices == ["cpu"]


def test_embedding_split_over_two_devices_equals_one(monkeypatch, tmp_path):
    """Two model copies ("cpu" twice stands for two GPUs) take the chunks as they come free; the
    vectors come back in input order, equal to one device's, and both copies did part of the work."""
    from dataprep import embed

    monkeypatch.setattr(embed, "CHUNK", 5)  # 23 unique texts: 5 chunks, so both copies get some
    texts = [f"row {i}: {'a short one' if i % 3 else 'a somewhat longer sentence about dedupe'} #{i % 7}"
             for i in range(23)] + ["row 0: a somewhat longer sentence about dedupe #0"]  # one repeat
    one = embed_texts(texts, load_encoder("minilm", "cpu"), use_cache=False)
    used = []
    forward = embed.forward
    monkeypatch.setattr(embed, "forward", lambda model, *a, **k: used.append(id(model)) or forward(model, *a, **k))
    two = load_encoder("minilm", "cpu", devices=["cpu", "cpu"])
    split = embed_texts(texts, two, use_cache=False)
    assert len(two._models) == 2 and len(used) == 5 and len(set(used)) == 2
    np.testing.assert_allclose(split, one, atol=1e-6)
    np.testing.assert_array_equal(split[0], split[-1])  # the repeat is embedded once, put back twice
    assert two.stats == {"truncated": 0, "embedded": 23, "cached": 0}


def test_threads_load_no_more_model_copies_than_chunks_and_close_drops_them(monkeypatch):
    """Three devices but one chunk: one model copy is loaded, not three; two chunks: two. `close`
    drops the copies (the encoder loads again when asked)."""
    from dataprep import embed

    model = load_encoder("minilm", "cpu").model
    enc = load_encoder("minilm", "cpu", devices=["cpu", "cpu", "cpu"])
    loads = []
    enc.load = lambda device: loads.append(device) or model
    embed_texts(["one text", "another text"], enc, use_cache=False)
    assert loads == ["cpu"] and len(enc._models) == 1
    monkeypatch.setattr(embed, "CHUNK", 1)
    embed_texts(["a third text", "a fourth"], enc, use_cache=False)
    assert loads == ["cpu", "cpu"] and len(enc._models) == 2 and len(enc.models()) == 3
    enc.close()
    assert enc._models == []
    embed_texts(["a fifth text"], enc, use_cache=False)
    assert len(loads) == 4 and len(enc._models) == 1


def test_close_gives_cuda_memory_back_only_when_cuda_was_used(monkeypatch):
    import torch

    from dataprep.embed import Encoder

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    for devices, models, expected in [(["cuda:0", "cuda:1"], [object(), object()], [1]), (["cuda:0"], [], []),
                                      (["cpu"], [object()], [])]:
        enc = Encoder.__new__(Encoder)  # no model files or GPU needed: only what close does
        enc._pool, enc._models, enc.devices = None, list(models), devices
        emptied.clear()
        enc.close()
        assert enc._models == [] and emptied == expected, devices


def test_text_keys_are_xxh3_128_of_the_utf8_and_versioned_in_the_cache_key():
    import xxhash

    from dataprep import embed

    keys = text_keys(["a", "héllo", "a", ""])
    assert keys.dtype == np.dtype("S16") and keys[0] == keys[2] != keys[1]
    assert keys[1] == xxhash.xxh3_128_digest("héllo".encode())  # not sha256: vectors cached before are not read
    assert len(text_keys([])) == 0
    assert embed._model_key("/nowhere", "fp32") != embed.fingerprint({"path": "/nowhere", "files": [], "precision": "fp32"})


def test_auto_workers_are_processes_on_several_gpus_for_many_texts():
    from dataprep.embed import PROCESSES_FROM, Encoder

    enc = Encoder.__new__(Encoder)  # no model files needed: only the choice
    enc.workers, enc._pool = "auto", None
    enc.devices = ["cuda:0", "cuda:1"]
    assert enc.use_processes(PROCESSES_FROM) and not enc.use_processes(PROCESSES_FROM - 1)
    enc.devices = ["cuda:0"]
    assert not enc.use_processes(10**8)
    enc.devices, enc.workers = ["cuda:0", "cuda:1"], "threads"
    assert not enc.use_processes(10**8)


def test_batch_limits():
    from dataprep.embed import AUTO_BATCH_TOKENS, CHUNK, batch_limits

    assert batch_limits(1024, "cuda:0") == (1024, None)  # --batch-size given: that many texts, on any device
    assert batch_limits(None, "cuda:1") == (CHUNK, AUTO_BATCH_TOKENS)
    assert batch_limits(None, "cpu") == (64, None)


class _Spy:
    """A model that records the (rows, width) of every batch it embeds."""

    def __init__(self, model) -> None:
        self.m, self.shapes = model, []

    def __getattr__(self, name):
        return getattr(self.m, name)

    def __call__(self, features):
        self.shapes.append(tuple(features["input_ids"].shape))
        return self.m(features)


def test_token_budget_batches_hold_more_short_texts_and_give_the_same_vectors(monkeypatch):
    """A token budget (as on a GPU by default) packs the length-sorted texts: each batch holds at
    most budget // its longest row's tokens texts; the vectors equal fixed batches' (fp32 noise)."""
    from dataprep import embed

    model = load_encoder("minilm", "cpu").model
    texts = ["word " * 20, "a cat", "a dog sat", "word " * 9, "hi", "one two three four", "x"]
    fixed = embed.encode(model, texts, batch_size=2)
    monkeypatch.setattr(embed, "batch_limits", lambda batch_size, device: (100, 24))
    spy = _Spy(model)
    budget = embed.encode(spy, texts, batch_size=None)
    lengths = sorted((len(model.tokenizer(t)["input_ids"]) for t in texts), reverse=True)  # [22, 11, 6, 5, 4, 3, 3]
    assert lengths == [22, 11, 6, 5, 4, 3, 3]
    assert spy.shapes == [(1, 22), (2, 11), (4, 5)]  # 24 // 22 = 1 row; 24 // 11 = 2; 24 // 5 = 4 (the rest)
    np.testing.assert_allclose(budget, fixed, atol=1e-5)


class _SlowTokenizerModel:
    """A model without a fast tokenizer (no `backend_tokenizer`): `forward` falls back to `encode`,
    which records the batch size it is given. Tokens: one per word, plus [CLS] and [SEP]."""

    def __init__(self, device: str, window: int) -> None:
        import torch

        self.device, self.max_seq_length, self.batch_sizes = torch.device(device), window, []
        self.tokenizer = lambda texts, **kw: {"input_ids": [[0, *range(len(t.split())), 0] for t in texts]}

    def encode(self, texts, batch_size, **kw):
        self.batch_sizes.append(batch_size)
        return np.ones((len(texts), 3), np.float32) / np.sqrt(3)


def test_a_model_without_a_fast_tokenizer_gets_a_bounded_batch_size():
    """With no --batch-size on a GPU, `model.encode` gets as many texts as fit in the token budget at
    the model's full window (lengths are not known), not a whole chunk; on CPU 64; a given size as is."""
    from dataprep import embed

    texts = ["one two three", "a b c d e f g h", "x"]  # 5, 10 and 3 tokens
    for device, window, batch_size, expected in [("cuda:0", 8192, None, embed.AUTO_BATCH_TOKENS // 8192),  # 16
                                                 ("cuda:0", 512, None, 256), ("cpu", 8192, None, 64),
                                                 ("cuda:0", 8192, 1000, 1000), ("cuda:0", 10**6, None, 1)]:
        model = _SlowTokenizerModel(device, window)
        vecs, cut = embed.encode_flagging_truncation(model, texts, batch_size=batch_size)
        assert model.batch_sizes == [expected], (device, window, batch_size)
        assert vecs.shape == (3, 3) and cut.tolist() == [False, False, False]
    model = _SlowTokenizerModel("cpu", 8)  # the truncation count: texts with more tokens than the window
    assert embed.encode_flagging_truncation(model, texts)[1].tolist() == [False, True, False]


def test_worker_processes_give_one_devices_vectors(monkeypatch):
    """One worker process per device (spawned; two "cpu" processes stand for two GPUs): the chunks
    come back in input order, equal to the in-process vectors."""
    from dataprep import embed

    monkeypatch.setattr(embed, "CHUNK", 4)  # 11 unique texts: 3 chunks over the two workers
    texts = [f"row {i}: {'short' if i % 2 else 'a longer sentence about semantic dedupe'}" for i in range(11)]
    one = embed_texts(texts + texts[:2], load_encoder("minilm", "cpu"), use_cache=False)
    two = load_encoder("minilm", "cpu", devices=["cpu", "cpu"], workers="processes")
    assert two.use_processes(1) and not load_encoder("minilm", "cpu", devices=["cpu", "cpu"]).use_processes(10**7)
    split = embed_texts(texts + texts[:2], two, use_cache=False)
    np.testing.assert_allclose(split, one, atol=1e-6)
    assert two.stats == {"truncated": 0, "embedded": 11, "cached": 0} and not two._models  # none in this process
    workers = two.workers_pool().procs
    again = embed_texts(texts[::-1], two, use_cache=False)  # the same workers take a second call
    assert two.workers_pool().procs == workers and all(p.is_alive() for p in workers)
    np.testing.assert_allclose(again, one[:11][::-1], atol=1e-6)
    two.close()
    assert all(p.exitcode is not None for p in workers)


def test_a_failing_worker_process_is_one_error_line():
    import functools

    from dataprep import embed

    load = functools.partial(embed._load, "broken", "/nonexistent/model")
    with pytest.raises(DataprepError, match=r"embedding worker failed: DataprepError: cannot load embedding model "
                                            r"'broken'.* on cpu"):
        list(embed._Workers(load, ["cpu"]).map([["a text"]], None))
    with pytest.raises(DataprepError, match="unknown embedding workers"):
        load_encoder("minilm", "cpu", workers="fibers")


def test_a_worker_process_that_dies_is_one_error_line_naming_its_exit_code():
    """A worker killed without a word (the OOM killer, a crash in CUDA: here os._exit(3) while loading)
    sends no result: the pool notices the exit code, says it in one line and is emptied."""
    from dataprep import embed

    pool = embed._Workers(_die_while_loading, ["cpu"])
    with pytest.raises(DataprepError, match=r"embedding worker embed-cpu died \(exit code 3\); rerun on one device"):
        list(pool.map([["a text"]], None))
    assert pool.procs == []


def _die_while_loading(device: str):
    import os

    os._exit(3)


def test_unique_keys_in_order_of_first_appearance():
    from dataprep.embed import _unique_in_order

    uniq, first, inverse = _unique_in_order(np.array([b"b", b"a", b"b", b"c", b"a"], dtype="S16"))
    assert uniq.tolist() == [b"b", b"a", b"c"] and first.tolist() == [0, 1, 3]
    assert inverse.tolist() == [0, 1, 0, 2, 1]
    uniq, first, inverse = _unique_in_order(np.array([b"z", b"y"], dtype="S16"))  # all distinct: the identity
    assert inverse.tolist() == [0, 1] and first.tolist() == [0, 1]


@pytest.mark.slow
def test_a_worker_whose_tokenizer_fails_reports_it():
    """An error in a worker's tokenizing thread comes back as one line instead of a hang."""
    from dataprep import embed

    pool = embed._Workers(_model_with_a_broken_tokenizer, ["cpu"])
    with pytest.raises(DataprepError, match="embedding worker failed: TypeError: .* on cpu"):
        list(pool.map([["a text"]], None))
    assert not pool.procs


def _model_with_a_broken_tokenizer(device: str):
    """MiniLM whose Rust tokenizer cannot be copied (`_truncating_tokenizer` calls to_str: TypeError)."""
    model = load_encoder("minilm", "cpu").model
    model.tokenizer.backend_tokenizer.to_str = None
    return model
