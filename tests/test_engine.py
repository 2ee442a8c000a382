"""--engine ray gives the same output as --engine local: convert, tokenize and dedupe on real data,
on a real local Ray cluster (2 CPUs, started once for the session), also after a worker dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataprep.convert import convert
from dataprep.errors import DataprepError
from dataprep.tokenize import tokenize

REPO = Path(__file__).resolve().parents[1]
BAD = REPO / "tests" / "assets" / "sft_bad.jsonl"


def data_files(out: Path) -> dict[str, bytes]:
    """Every file of an output but its manifest, by name (the manifest holds timings)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def manifest(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    m.pop("timings")
    m["config"].pop("engine", None)
    return m


def assert_same(local: Path, ray: Path) -> None:
    assert data_files(local) == data_files(ray)
    assert manifest(local) == manifest(ray)


def test_convert_ray_equals_local(ray_cluster, shared_data, tmp_path):
    """Several batches from two sources, one of them with rejects: same records in the same order,
    same rejects, same manifest (counts, lengths, ignored columns, fingerprint)."""
    sources = [str(shared_data / "alpaca_en_demo.json"), str(BAD)]
    local = convert(sources, str(tmp_path / "local"), batch_rows=150)
    ray = convert(sources, str(tmp_path / "ray"), batch_rows=150, engine="ray")
    assert local.counts.n_in == 999 + 7 and local.counts.rejected == 5 and ray.counts == local.counts
    assert ray.fingerprint == local.fingerprint  # the engine does not change what the output is
    assert_same(tmp_path / "local", tmp_path / "ray")
    # the same fingerprint: a local rerun finds the ray output current
    assert convert(sources, str(tmp_path / "ray"), batch_rows=150).skipped


def test_tokenize_ray_equals_local(ray_cluster, shared_data, tmp_path, monkeypatch):
    """Chat records through SmolLM2's template, packed: byte-identical shards, rejects and state, on
    Ray and in --num-proc 2 worker processes (whose fork server preloads the tokenizer's module)."""
    from dataprep.tokenize import stage

    pools, in_processes = [], stage._in_processes
    monkeypatch.setattr(stage, "_in_processes", lambda *a, **kw: pools.append(kw["preload"]) or in_processes(*a, **kw))
    convert([str(shared_data / "glaive_toolcall_en_demo.json")], str(tmp_path / "records"), kind="chat", limit=120)
    opts = dict(max_len=1024, pack=True, batch_size=25, progress=False)
    local = tokenize(tmp_path / "records", tmp_path / "local", **opts)
    ray = tokenize(tmp_path / "records", tmp_path / "ray", engine="ray", **opts)
    assert local.counts.n_in == 120 and ray.counts == local.counts and ray.fingerprint == local.fingerprint
    assert ray.get("token_stats") == local.get("token_stats") and ray.get("packing") == local.get("packing")
    assert_same(tmp_path / "local", tmp_path / "ray")
    procs = tokenize(tmp_path / "records", tmp_path / "procs", num_proc=2, **opts)
    assert procs.counts == local.counts and procs.fingerprint == local.fingerprint
    assert_same(tmp_path / "local", tmp_path / "procs")
    assert pools == [("transformers.tokenization_utils_tokenizers",)] or pools == [("transformers.tokenization_utils_fast",)]


class DiesOnce:
    """A row-fn whose worker process dies the first time it runs (the marker file says it did)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.__qualname__ = "DiesOnce"  # convert names the row-fn in its config

    def __call__(self, row: dict) -> dict:
        if not self.marker.exists():
            self.marker.write_text("died once")
            os._exit(1)  # the worker process is killed mid-task, as by the OOM killer
        return {"instruction": row["instruction"], "input": row.get("input") or "", "output": row["output"]}


def test_ray_retries_a_task_whose_worker_died(ray_cluster, shared_data, tmp_path):
    marker, src = tmp_path / "marker", [str(shared_data / "alpaca_en_demo.json")]
    ray = convert(src, str(tmp_path / "ray"), batch_rows=300, row_fn=DiesOnce(marker), engine="ray")
    assert marker.read_text() == "died once"  # the failure did happen, on a Ray worker
    local = convert(src, str(tmp_path / "local"), batch_rows=300, row_fn=DiesOnce(marker))
    assert ray.counts == local.counts and ray.counts.n_out == 999
    assert_same(tmp_path / "local", tmp_path / "ray")


def test_bad_input_on_ray_is_the_same_one_line_error(ray_cluster, shared_data, tmp_path):
    """A DataprepError raised on a worker comes back as itself (not a Ray traceback), and nothing is written."""
    with pytest.raises(DataprepError, match="no column 'nope'"):
        convert([str(shared_data / "alpaca_en_demo.json")], str(tmp_path / "out"), choices=("nope",), engine="ray")
    assert not (tmp_path / "out").exists()


def test_unreachable_address_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dataprep", "convert", str(BAD), "-o", str(tmp_path / "o"), "--engine",
                        "ray", "--ray-address", "127.0.0.1:9"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Error: --ray-address 127.0.0.1:9: nothing answers" in r.stderr
    assert not (tmp_path / "o").exists()


def test_ray_not_installed_is_one_line(runner, monkeypatch, tmp_path):
    from dataprep.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    r = runner.invoke(cli, ["convert", str(BAD), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert r.exit_code == 1 and r.output.startswith("Error: --engine ray needs Ray Data")
    assert "pip install 'dataprep[ray]'" in r.output and not (tmp_path / "o").exists()


def test_dedupe_exact_and_near_on_ray_equal_local(ray_cluster, shared_data, tmp_path):
    """Shuffles by hash and by (band, bucket) find the same pairs, and the same rows go for the same
    kept rows, as local (english_to_latex.csv: one exact duplicate, near ones that chain at 0.5)."""
    from dataprep.dedupe import dedupe

    convert([str(shared_data / "english_to_latex.csv")], str(tmp_path / "latex"), template="latex")
    opts = dict(methods=("exact", "near"), keep="longest", near_threshold=0.5)
    local = dedupe(tmp_path / "latex", tmp_path / "local", **opts)
    ray = dedupe(tmp_path / "latex", tmp_path / "ray", engine="ray", **opts)
    assert local.counts.by_reason == {"exact": 1, "near": 11} and ray.counts == local.counts
    assert ray.fingerprint == local.fingerprint
    assert_same_dedupe(tmp_path / "local", tmp_path / "ray")


def assert_same_dedupe(local: Path, ray: Path) -> None:
    """The same kept records, removed rows (kept_id, score), pairs, and report but for its timings."""
    for name in ("records.parquet", "removed.parquet", "pairs.parquet"):
        assert (local / name).read_bytes() == (ray / name).read_bytes(), name
    reports = [json.loads((d / "report.json").read_text()) for d in (local, ray)]
    for r in reports:
        r.pop("timings")
    assert reports[0] == reports[1]


@pytest.mark.slow
def test_semantic_dedupe_embeds_in_ray_actors_with_the_local_answer(ray_cluster, shared_data, tmp_path):
    """Embedding runs in CPU actors (one MiniLM load each, the cache off so nothing is reused) and
    the search on the driver: the same pairs, removed rows and scores as local."""
    from dataprep.dedupe import dedupe

    convert([str(shared_data / "english_to_latex.csv")], str(tmp_path / "latex"), template="latex")
    opts = dict(methods=("semantic",), threshold=0.8, cache=False)
    local = dedupe(tmp_path / "latex", tmp_path / "local", **opts)
    ray = dedupe(tmp_path / "latex", tmp_path / "ray", engine="ray", **opts)
    assert local.counts.by_reason["semantic"] > 0 and ray.counts == local.counts
    for name in ("records.parquet", "removed.parquet", "pairs.parquet"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


def test_a_recipe_with_engine_ray_runs_end_to_end(ray_cluster, shared_data, tmp_path):
    """`engine: ray` at the top of a recipe applies to convert and tokenize (a stage may override it);
    the shards equal a local tokenize of the same records."""
    from dataprep.pipeline import run_recipe
    from dataprep.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nworkdir: {tmp_path / 'work'}\nengine: ray\n"
                      f"convert:\n  input: {shared_data / 'english_to_latex.csv'}\n  template: latex\n"
                      "tokenize:\n  max_len: 128\n  batch_size: 16\n")
    loaded = load_recipe(recipe)
    assert loaded.stage("convert").options["engine"] == loaded.stage("tokenize").options["engine"] == "ray"
    results = run_recipe(loaded)
    assert [r.stage for r in results] == ["convert", "tokenize"] and results[1].manifest.counts.n_in == 50
    tokenize(tmp_path / "work" / "convert", tmp_path / "local", max_len=128, progress=False)
    assert_same(tmp_path / "local", tmp_path / "work" / "tokenize")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: spark\nconvert:\n  input: x.csv\n")
    with pytest.raises(DataprepError, match=r"bad.yaml:1: engine: 'spark' is not one of local, ray"):
        load_recipe(bad)


class LogsSetups:
    """An actor setup that writes its process id to `log` (one line per setup) and returns `sum`."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self):
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return sum


def test_actors_set_up_once_each_not_once_per_batch(ray_cluster, tmp_path):
    """tokenize's Ray path: each actor loads its state (the tokenizer) once, then maps every batch it
    gets; results in input order."""
    from dataprep.engine import ray_map

    log = tmp_path / "setups.log"
    batches = [[i, i] for i in range(30)]
    assert list(ray_map(LogsSetups(log), lambda: iter(batches), actors=True)) == [2 * i for i in range(30)]
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 == ray_cluster.cluster_resources()["CPU"] and len(set(pids)) == len(pids)


def test_no_more_actors_than_batches(ray_cluster, tmp_path):
    """A pool starts at one actor per CPU, but a known number of batches caps it: one batch on the
    2-CPU cluster sets up one actor, not two (each would load its model or tokenizer)."""
    from dataprep.engine import ray_map

    log = tmp_path / "setups.log"
    assert list(ray_map(LogsSetups(log), lambda: iter([[3, 4]]), actors=True, batches=1)) == [7]
    assert len(log.read_text().split()) == 1


def test_batches_travel_with_their_frames_as_arrow_streams():
    """A batch or result holding polars frames comes back equal, dtypes included, its frames read in
    place from the block; a frame with a column of Python objects (which Arrow would hold as addresses)
    comes back with its objects."""
    import polars as pl

    from dataprep.engine import _cells, _values

    frame = pl.DataFrame({"text": ["a", None, "ü"], "n": [1, 2, 3], "ids": [[1], [], [2, 3]],
                          "meta": [{"k": 1}, {"k": None}, {"k": 3}]},
                         schema_overrides={"n": pl.Int16, "text": pl.Categorical})
    objects = pl.DataFrame({"v": [1, "x", [2]]}, schema={"v": pl.Object})
    block = _cells([{"records": frame, "rest": [frame.head(1), 7]}, "plain", objects])
    assert block.num_rows == 3 and block.column("frames")[0].as_buffer().size > 0 == block.column("frames")[1].as_buffer().size
    first, second, third = _values(block)
    assert first["records"].equals(frame) and first["records"].schema == frame.schema
    assert first["rest"][0].equals(frame.head(1)) and first["rest"][1] == 7
    assert second == "plain"
    assert third["v"].to_list() == [1, "x", [2]]


def many_groups() -> list[str]:
    """600 distinct texts of 9 words, and three without shingles ("", blank) or with one ("abc")."""
    import random

    rng = random.Random(5)
    return [" ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps", "zeta"]) for _ in range(8)) + f" {i}"
            for i in range(600)] + ["", "  ", "abc", "abc"]


@pytest.mark.parametrize("keep", ["first", "longest", "shortest", "random"])
def test_exact_shuffle_on_ray_equals_local_on_many_groups(ray_cluster, keep):
    """Many groups in each shuffle part (the parts' steps group by sorting): groups of 1-5 texts equal
    once normalised, with pinned rows, give local's pairs, groups and kept rows under every policy."""
    import random

    import numpy as np

    from dataprep.dedupe import on_ray
    from dataprep.dedupe.exact import exact_pairs
    from dataprep.dedupe.groups import group_and_keep

    rng = random.Random(5)
    texts = [t if rng.random() < 0.7 else t.upper() for t in many_groups() for _ in range(rng.randint(1, 5))]
    rng.shuffle(texts)
    n, lengths = len(texts), [len(t) for t in texts]
    pinned = np.zeros(n, bool)
    pinned[rng.sample(range(n), 40)] = True
    a, b, _, groups = on_ray.exact_groups(texts, keep=keep, lengths=lengths, seed=3, pinned=pinned)
    la, lb, ls = exact_pairs(texts)
    local = group_and_keep(n, la, lb, ls, keep=keep, lengths=lengths, seed=3, transitive=True, pinned=pinned)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == sorted(zip(la.tolist(), lb.tolist(), strict=True))
    assert groups.keeper.tolist() == local.keeper.tolist() and groups.labels.tolist() == local.labels.tolist()
    assert len(np.unique(groups.keeper)) < n - 500  # many groups of several rows


def test_near_shuffle_on_ray_equals_local_on_many_buckets(ray_cluster):
    """Candidates from buckets of many sizes in each shuffle part, and texts without shingles (band -1):
    the same pairs, scores, borderline pairs and stats (candidates, no_shingles) as the local function."""
    from dataprep.dedupe import on_ray
    from dataprep.dedupe.minhash import near_pairs

    texts = many_groups()
    ray, local = on_ray.near_pairs(texts, 0.5), near_pairs(texts, 0.5)
    assert ray.a.tolist() == local.a.tolist() and ray.b.tolist() == local.b.tolist()
    assert ray.score.tolist() == local.score.tolist()
    assert [x.tolist() for x in ray.below] == [x.tolist() for x in local.below]
    assert ray.stats == local.stats
    assert len(local.a) > 100 and len(local.below[0]) == 50 and local.stats["no_shingles"] == 2
    assert (600, 601) not in zip(local.a.tolist(), local.b.tolist(), strict=True)  # "" and blank: never paired
    assert (602, 603) in zip(local.a.tolist(), local.b.tolist(), strict=True)  # "abc" twice: one shingle each


class ActorDiesMidRun:
    """tokenize's Ray actor setup (`_ray_actor`), whose process dies at its second batch, once: the
    marker file says it did, so the actor Ray starts again (and the batch it retries) run through."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, **kwargs):
        from dataprep.tokenize.stage import _ray_actor

        run, seen = _ray_actor(**kwargs), []

        def dies_once(batch):
            seen.append(1)
            if len(seen) == 2 and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                os._exit(1)  # the actor's process is killed mid-run, as by the OOM killer
            return run(batch)

        return dies_once


def test_ray_restarts_a_tokenize_actor_that_died(ray_cluster, shared_data, tmp_path, monkeypatch):
    """Issue #17: a tokenize actor killed mid-run is restarted and its batch retried (Ray Data's actor
    pool sets max_restarts and max_task_retries to -1 unless told otherwise): the run succeeds and its
    output equals the local engine's."""
    from dataprep.tokenize import stage

    convert([str(shared_data / "alpaca_en_demo.json")], str(tmp_path / "records"), limit=200)
    opts = dict(max_len=256, batch_size=20, progress=False)
    local = tokenize(tmp_path / "records", tmp_path / "local", **opts)
    marker = tmp_path / "marker"
    monkeypatch.setattr(stage, "_ray_actor", ActorDiesMidRun(marker))
    ray = tokenize(tmp_path / "records", tmp_path / "ray", engine="ray", **opts)
    assert marker.read_text().isdigit()  # an actor's process did die, on a Ray worker
    assert local.counts.n_in == 200 and ray.counts == local.counts and ray.fingerprint == local.fingerprint
    assert_same(tmp_path / "local", tmp_path / "ray")


def sleeps_a_second(batch):
    """A batch's work that takes 1 s and no CPU: returns when it ran, (start, end) on this host's clock."""
    import time

    start = time.time()
    time.sleep(1)
    return batch, start, time.time()


def sleeper():
    """An actor setup that returns `sleeps_a_second`."""
    return sleeps_a_second


def assert_overlapped(results, n: int) -> None:
    """`n` one-second batches came back in order and ran at once: most of them ran while another did
    (one at a time: none), and from the first batch's start (a pool's start-up is not part of it) to
    the last one's end took under the n seconds of one at a time. Two at a time would be n/2 s; Ray
    starts a task or actor call 0.1-0.5 s after a slot frees on this 2-core VM (benchmarks/RESULTS.md),
    hence the margin."""
    assert [r[0] for r in results] == list(range(n))
    runs = [(start, end) for _, start, end in results]
    alongside = sum(any(s2 < e1 and s1 < e2 for j, (s2, e2) in enumerate(runs) if j != i) for i, (s1, e1) in enumerate(runs))
    span = max(e for _, e in runs) - min(s for s, _ in runs)
    assert alongside > n // 2 and span < n - 0.5, f"{n} batches of 1 s took {span:.2f} s, {alongside} alongside another"


@pytest.mark.parametrize("actors", [False, True], ids=["tasks", "actors"])
def test_ray_map_runs_batches_at_once(ray_cluster, actors):
    """Issue #17: on the 2-CPU cluster, 6 batches of 1 s finish in 3-4 s, not 6 (tasks and actors)."""
    from dataprep.engine import ray_map

    fn = sleeper if actors else sleeps_a_second
    assert_overlapped(list(ray_map(fn, lambda: iter(range(6)), actors=actors)), 6)


def test_num_proc_workers_run_batches_at_once():
    """tokenize's --num-proc 2 pool: 6 batches of 1 s finish in about 3 s, not 6."""
    from dataprep.tokenize.stage import _in_processes

    assert_overlapped(list(_in_processes(sleeps_a_second, iter(range(6)), 2, init=None, initargs=())), 6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is used on Linux only")
def test_num_proc_workers_start_with_the_preloaded_modules_imported():
    """Issue #17: on Linux the workers are forked from a server that imported the tokenizer's module
    once; a spawned worker imported it itself (transformers 5.17 imported torch with the tokenizer:
    88 s before 16 workers were ready). In a fresh process: the fork server starts once a process."""
    code = ("import sys; from dataprep.tokenize.stage import _in_processes; from tests.test_engine import imported; "
            "print(list(_in_processes(imported, iter(['tabnanny'] * 2), 2, init=None, initargs=(), "
            "preload=('tabnanny',))), 'tabnanny' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[True,", "True]", "False"]  # in each worker, never in this process


def imported(name: str) -> bool:
    return name in sys.modules


def dies_on_three(batch: int) -> int:
    if batch == 3:
        os._exit(1)  # as the OOM killer would end it
    return batch


def test_a_num_proc_worker_that_dies_is_a_one_line_error_not_a_hang():
    """multiprocessing.Pool replaced a dead worker and waited forever for the batch it held; the
    command must stop with one line instead. In a subprocess, so a regression fails on the timeout."""
    code = ("from dataprep.errors import DataprepError; from dataprep.tokenize.stage import _in_processes; "
            "from tests.test_engine import dies_on_three\n"
            "try:\n    print(list(_in_processes(dies_on_three, iter(range(8)), 2, init=None, initargs=())))\n"
            "except DataprepError as e:\n    print('error:', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("error: a --num-proc worker process died or could not start"), out.stdout
