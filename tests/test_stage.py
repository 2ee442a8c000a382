"""The stage contract (dataprep.stage): skip only when current, atomic outputs whose leftovers
the next run cleans, one writer per output, no output over an input, no silent empty output."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from dataprep.errors import DataprepError
from dataprep.io import OWNER
from dataprep.stage import Outcome, Rejects, read_manifest, run_stage


def toy_stage(out, rows=3, kept=None, inputs=(), force=False, allow_empty=False, calls=None):
    """A stage that writes data.txt with `kept` of `rows` rows (the rest rejected)."""
    kept = rows if kept is None else kept

    def build(ws):
        if calls is not None:
            calls.append(1)
        (ws.out / "data.txt").write_text("x\n" * kept)
        rejects = Rejects()
        for i in range(rows - kept):
            rejects.add("toy", i, "too short")
        return Outcome(rows, kept, {"note": "toy"}, rejects=rejects, lineage={"kind": "text"})

    return run_stage("toy", out, inputs=list(inputs), config={"rows": rows, "kept": kept}, build=build,
                     data_files=("data.txt",), force=force, allow_empty=allow_empty)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_manifest_counts_files_and_lineage(tmp_path):
    m = toy_stage(tmp_path / "o", rows=5, kept=3)
    on_disk = read_manifest(tmp_path / "o")
    assert on_disk.counts.to_json() == {"in": 5, "out": 3, "rejected": 2, "rejected_by_reason": {"too short": 2}}
    assert on_disk.files == {"data.txt": 6, "rejects.jsonl": (tmp_path / "o" / "rejects.jsonl").stat().st_size}
    assert on_disk.lineage.kind == "text" and on_disk.get("note") == "toy" and on_disk.fingerprint == m.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporaries, no lock file left


def test_skip_only_while_the_written_files_are_intact(tmp_path):
    calls: list = []
    toy_stage(tmp_path / "o", calls=calls)
    assert toy_stage(tmp_path / "o", calls=calls).skipped and len(calls) == 1
    (tmp_path / "o" / "data.txt").write_text("x\n")  # truncated
    assert not toy_stage(tmp_path / "o", calls=calls).skipped and len(calls) == 2
    (tmp_path / "o" / "rejects.jsonl").unlink()  # deleted
    assert not toy_stage(tmp_path / "o", calls=calls).skipped and len(calls) == 3
    assert toy_stage(tmp_path / "o", calls=calls, force=True).skipped is False and len(calls) == 4


def test_the_fingerprint_follows_contents_not_the_path_spelling(tmp_path, monkeypatch):
    from dataprep.convert import convert

    monkeypatch.chdir(tmp_path)
    Path("a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    first = convert(["a.jsonl"], "o", kind="text")
    again = convert(["./a.jsonl"], "o", kind="text")
    assert again.skipped and again.fingerprint == first.fingerprint
    Path("a.jsonl").write_text('{"text": "one"}\n{"text": "three"}\n')
    assert not convert(["a.jsonl"], "o", kind="text").skipped


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    stale, live = tmp_path / ".o.tmp-dead", tmp_path / ".o.tmp-live"
    for path, pid in ((stale, dead_pid()), (live, os.getppid())):
        path.mkdir()
        (path / OWNER).write_text(str(pid))
        (path / "half.parquet").write_bytes(b"x" * 100)
    foreign = tmp_path / ".o.tmp-notours"
    foreign.mkdir()  # no owner file: not dataprep's, never touched
    toy_stage(tmp_path / "o")
    assert not stale.exists() and live.exists() and foreign.exists()


def test_a_killed_force_swap_is_restored_on_the_next_run(tmp_path):
    calls: list = []
    toy_stage(tmp_path / "o", calls=calls)
    old = tmp_path / ".o.old-killed"
    old.mkdir()
    (old / OWNER).write_text(str(dead_pid()))
    os.replace(tmp_path / "o", old / "x")  # killed between the two renames: nothing at -o
    assert toy_stage(tmp_path / "o", calls=calls).skipped and len(calls) == 1  # put back, and still current
    assert (tmp_path / "o" / "data.txt").is_file() and not old.exists()


def test_one_writer_per_output(tmp_path):
    with open(tmp_path / ".o.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        with pytest.raises(DataprepError, match=r"^another dataprep run is writing .*/o now; wait for it"):
            toy_stage(tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["the input", "inside the input", "around the input"])
def test_an_output_equal_to_inside_or_around_an_input_is_refused(tmp_path, where):
    src = tmp_path / "data" / "in"
    src.mkdir(parents=True)
    (src / "rows.txt").write_text("keep me")
    out = {"the input": src, "inside the input": src / "sub", "around the input": tmp_path / "data"}[where]
    with pytest.raises(DataprepError, match=f"is {where} .* choose another -o"):
        toy_stage(out, inputs=[str(src)])
    assert (src / "rows.txt").read_text() == "keep me" and sorted(p.name for p in src.iterdir()) == ["rows.txt"]


def test_a_stage_output_inside_a_previous_stage_directory_is_refused(tmp_path):
    from dataprep.convert import convert
    from dataprep.dedupe import dedupe

    raw = tmp_path / "a.jsonl"
    raw.write_text('{"text": "one"}\n{"text": "two"}\n')
    convert([str(raw)], tmp_path / "conv", kind="text")
    for out in (tmp_path / "conv", tmp_path / "conv" / "dd"):
        with pytest.raises(DataprepError, match="choose another -o"):
            dedupe(tmp_path / "conv", out, methods=("exact",))
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["manifest.json", "records.parquet", "rejects.jsonl"]


def test_no_rows_out_is_an_error_unless_allowed(tmp_path):
    with pytest.raises(DataprepError, match=r"^toy: no rows left out of 4 \(too short: 4\); .* --allow-empty"):
        toy_stage(tmp_path / "o", rows=4, kept=0)
    assert list(tmp_path.iterdir()) == []
    m = toy_stage(tmp_path / "o", rows=4, kept=0, allow_empty=True)
    assert m.counts.n_out == 0 and (tmp_path / "o" / "data.txt").read_text() == ""


def test_tokenize_writes_byte_identical_directories(tmp_path):
    from dataprep.convert import convert
    from dataprep.tokenize import tokenize

    raw = tmp_path / "a.jsonl"
    raw.write_text("".join(json.dumps({"instruction": f"Say {i}", "output": str(i)}) + "\n" for i in range(20)))
    convert([str(raw)], tmp_path / "conv")
    for name in ("t1", "t2"):
        tokenize(tmp_path / "conv", tmp_path / name, max_len=64, progress=False)
    files = sorted(p.name for p in (tmp_path / "t1").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "t2").iterdir())
    for name in files:
        if name != "manifest.json":  # the manifest holds timings
            assert (tmp_path / "t1" / name).read_bytes() == (tmp_path / "t2" / name).read_bytes(), name


def test_allow_empty_outputs_load_and_inspect(tmp_path, runner):
    """Every row too long: an error naming the reason, unless --allow-empty, whose empty shards
    `datasets`, `dataprep stats` and `dataprep inspect` still read."""
    from datasets import load_from_disk

    from dataprep.cli import cli
    from dataprep.convert import convert

    raw = tmp_path / "a.jsonl"
    raw.write_text("".join(json.dumps({"instruction": "word " * 50, "output": "x"}) + "\n" for _ in range(3)))
    convert([str(raw)], tmp_path / "conv")
    args = ["tokenize", str(tmp_path / "conv"), "-o", str(tmp_path / "tok"), "--max-len", "8", "--overflow", "drop"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "no rows left out of 3 (too_long: 3)" in result.output
    assert not (tmp_path / "tok").exists()
    result = runner.invoke(cli, args + ["--allow-empty"])
    assert result.exit_code == 0, result.output
    assert len(load_from_disk(str(tmp_path / "tok"))) == 0
    for command in (["stats", str(tmp_path / "tok")], ["inspect", str(tmp_path / "tok")]):
        result = runner.invoke(cli, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.exception)
        assert "Traceback" not in result.output, result.output


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    import errno

    def build(ws):
        (ws.out / "part.bin").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(ws.out / "part.bin"))

    with pytest.raises(DataprepError, match=r"^toy: no space left on the device while writing .*/o; free some space"):
        run_stage("toy", tmp_path / "o", inputs=[], config={}, build=build)
    assert list(tmp_path.iterdir()) == []


def test_a_library_error_around_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """polars reports a full disk as its own ComputeError ending `(os error 28)`; a file-size
    limit (ulimit -f) is `(os error 27)`."""
    class ComputeError(Exception):
        pass

    for code, message in ((28, "no space left on the device"), (27, "a file reached the file-size limit")):
        def build(ws, code=code):
            (ws.out / "part.bin").write_bytes(b"x" * 10)
            raise ComputeError(f"parquet: File out of specification: underlying IO error: x (os error {code})")

        with pytest.raises(DataprepError, match=rf"^toy: {message} .*while writing .*/o"):
            run_stage("toy", tmp_path / "o", inputs=[], config={}, build=build)
        assert list(tmp_path.iterdir()) == []

    def unrelated(ws):
        raise ComputeError("a bug, not the disk")

    with pytest.raises(ComputeError):  # other library errors are not dressed up as disk errors
        run_stage("toy", tmp_path / "o", inputs=[], config={}, build=unrelated)


def test_a_dataprep_error_quoting_an_os_error_is_kept_as_it_is(tmp_path):
    """A one-line DataprepError that quotes a library's "(os error 2)" keeps its path and its fix
    (it was rewritten as a bare "No such file or directory")."""
    message = "cannot read records from /data/in.parquet (No such file or directory (os error 2)); check it"

    def build(ws):
        raise DataprepError(message)

    with pytest.raises(DataprepError) as err:
        run_stage("toy", tmp_path / "o", inputs=[], config={}, build=build)
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_without_a_message_is_one_line():
    from dataprep.errors import os_error_message

    assert os_error_message(OSError()) == "OSError; check the paths, free space, file-size limits and permissions"
    assert os_error_message(OSError(27, "File too large"), "out/x").startswith(
        "a file reached the file-size limit (ulimit -f) while writing out/x")


def test_an_os_error_outside_the_output_names_its_file_not_o():
    """The CLI's catch-all passes no `writing`: a full temporary directory or cache is not -o's fault."""
    from dataprep.errors import os_error_message

    assert os_error_message(OSError(28, "No space left on device", "/tmp/x")) == \
        "no space left on the device (/tmp/x); free some space"
    assert os_error_message(OSError(27, "File too large")) == "a file reached the file-size limit (ulimit -f); raise the limit"
    assert os_error_message(OSError(13, "Permission denied", "/hf/cache")) == \
        "permission denied (/hf/cache); check the permissions of that path"
    assert os_error_message(OSError(28, "No space left on device", "/o/part"), "/o") == \
        "no space left on the device while writing /o; free some space or choose another -o"


def test_a_temporary_that_cannot_be_marked_is_removed(tmp_path, monkeypatch):
    """A full disk can fail the owner mark of `.OUT.tmp-*` itself; unmarked, no later run would remove it."""
    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DataprepError, match="no space left"):
        toy_stage(tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_a_lock_a_killed_run_left_is_removed_even_when_the_output_is_current(tmp_path):
    toy_stage(tmp_path / "o")
    (tmp_path / ".o.lock").write_text("")  # kill -9 during a --force rerun: the lock stays
    assert toy_stage(tmp_path / "o").skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["convert", "tokenize"])
def test_a_killed_run_looks_incomplete_and_the_rerun_equals_a_clean_run(tmp_path, stage):
    """kill -9 in the middle of writing: nothing at -o looks complete; the next run removes the
    dead run's temporaries and writes what a clean run writes, byte for byte."""
    import signal
    import sys
    import time

    from dataprep.convert import convert
    from dataprep.tokenize import tokenize

    raw = tmp_path / "big.jsonl"
    with open(raw, "w") as fh:
        for i in range(200_000 if stage == "convert" else 20_000):
            fh.write(json.dumps({"instruction": f"Question {i}: " + "word " * 20, "output": f"answer {i}"}) + "\n")
    if stage == "convert":
        args, source = ["convert", str(raw), "--batch-rows", "5000", "-o", str(tmp_path / "out")], str(raw)
    else:
        convert([str(raw)], tmp_path / "records")
        args = ["tokenize", str(tmp_path / "records"), "--max-len", "128", "--batch-size", "200", "-o", str(tmp_path / "out")]
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.tmp-*/*")) and time.time() < deadline:  # writing has begun
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing that looks complete
    assert list(tmp_path.glob(".out.tmp-*")), "the kill came too late to test anything"
    if stage == "convert":
        convert([source], tmp_path / "out", batch_rows=5000)
        convert([source], tmp_path / "clean", batch_rows=5000)
    else:
        tokenize(tmp_path / "records", tmp_path / "out", max_len=128, batch_size=200, progress=False)
        tokenize(tmp_path / "records", tmp_path / "clean", max_len=128, batch_size=200, progress=False)
    assert not list(tmp_path.glob(".out.*")), "the dead run's temporaries are gone"
    names = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "out").iterdir())
    for name in names:
        if name != "manifest.json":  # it holds timings
            assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
