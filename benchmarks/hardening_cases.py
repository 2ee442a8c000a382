"""Issue #12's hardening cases, run through the CLI as a user would, against any checkout.

Each case runs `python -m dataprep ...` in a subprocess with `PYTHONPATH=<--repo>` (so the same
harness runs on an old commit and on main) in a fresh directory, and records what went wrong:

- traceback: "Traceback" on stdout or stderr;
- no one-line Error: a failed command did not print exactly one `Error:` line (validate: no
  `FILE:LINE:` problem lines);
- wrong exit: 0 where the input or option is bad (zero rows out included), non-zero where it is good;
- rows/fields lost: `in` is not the input's row count, `in != out + rejected`, or a content check
  failed (a text part keyed `value`, an ignored column such as a KTO `label`, U+2028 in JSONL,
  a duplicate CSV header, the user's own `source`/`row`, a DPO prompt shared by both sides, long
  text kept as windows, semantic dedupe that removes most of a non-English set, `-o` equal to the
  input destroying it, ...);
- left behind: the `-o` directory or any new hidden sibling (`.OUT.tmp-*`, `.OUT.old-*`,
  `.tokenize-work-*`, locks) after a failed or killed run, or after its rerun;
- rerun/cache wrong: a rerun differs from a clean run byte for byte, or "up to date" is trusted
  after a data file was deleted or truncated (or a row-fn edited), or a respelled path reruns;
- load: trl 1.16 does not take the output unchanged (packed `seq_lengths`, labels, a 0-row output
  that `load_from_disk`, `inspect` or `stats` cannot open).

A case using a CLI option or value the checkout lacks is "n/a" for that checkout, not a failure.
Families: malformed, options, recipes, real, kill, concurrent, fulldisk, rerun, trl.

    PYTHONPATH=. python benchmarks/hardening_cases.py --repo . --json out/harden_after.json
    python benchmarks/hardening_cases.py --repo /work/harden_before --json out/harden_before.json
    python benchmarks/hardening_cases.py --repo . --only malformed --match surrogate
    python benchmarks/hardening_cases.py --compare out/harden_before.json out/harden_after.json

Two cases run at a time (`--jobs`). The real-data family reads `../shared/data` (`--data`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PROBLEMS = ("traceback", "no_error_line", "wrong_exit", "lost", "left_behind", "rerun", "load")
HEADERS = ("tracebacks", "no one-line Error", "wrong exit", "rows/fields lost", "left behind", "rerun/cache wrong",
           "trl/load")
GOOD_SFT = [{"instruction": f"Say hi number {i}", "output": f"hi {i}"} for i in range(3)]
DATA_FILES = ("records.parquet", "records.jsonl", "rejects.jsonl", "removed.parquet", "pairs.parquet", "state.json",
              "dataset_info.json")


class NotApplicable(Exception):
    """The checkout lacks an option or value the case needs."""


def jsonl(rows: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---------------------------------------------------------------- running one case


class Ctx:
    """One case: its directory, the checkout's CLI, and the problems found."""

    help_cache: dict[tuple[str, str], str | None] = {}

    def __init__(self, repo: Path, tmp: Path, shared):
        self.repo, self.tmp, self.shared = repo, tmp, shared
        self.problems: dict[str, list[str]] = {}
        self.notes: list[str] = []

    def flag(self, kind: str, detail: str) -> None:
        assert kind in PROBLEMS, kind
        self.problems.setdefault(kind, []).append(detail[:300])

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(self.repo), TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
                   NO_COLOR="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("DATAPREP_CACHE", None)
        return env

    # -- what the checkout offers
    def help(self, command: str) -> str | None:
        key = (str(self.repo), command)
        if key not in self.help_cache:
            p = subprocess.run([sys.executable, "-m", "dataprep", *command.split(), "--help"], env=self.env(),
                               cwd=self.tmp, capture_output=True, text=True, timeout=120)  # not a checkout's cwd
            self.help_cache[key] = p.stdout if p.returncode == 0 else None
        return self.help_cache[key]

    def has(self, command: str, *needles: str) -> bool:
        text = self.help(command)
        return text is not None and all(n in text for n in needles)

    def require(self, command: str, *needles: str) -> None:
        if not self.has(command, *needles):
            raise NotApplicable(f"{command} lacks {', '.join(needles) or 'the command'}")

    # -- files
    def write(self, name: str, data: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return str(path)

    def entries(self) -> set[str]:
        return {p.name for p in self.tmp.iterdir()}

    # -- the CLI
    def argv(self, args: list[str]) -> list[str]:
        command = args[0]
        options = {a.split("=")[0] for a in args[1:] if a.startswith("--")}
        if self.help(command) is None:
            raise NotApplicable(f"no command {command}")
        missing = [o for o in sorted(options) if not re.search(re.escape(o) + r"\b", self.help(command) or "")]
        if missing:
            raise NotApplicable(f"{command} lacks {', '.join(missing)}")
        return [sys.executable, "-m", "dataprep", *args]

    def start(self, args: list[str], fsize: int | None = None) -> subprocess.Popen:
        def limit():
            os.setsid()
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        return subprocess.Popen(self.argv(args), cwd=self.tmp, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", preexec_fn=limit)

    def finish(self, proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.flag("wrong_exit", f"timed out after {timeout}s")
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if "Traceback" in out + err:
            tail = [line for line in (out + err).splitlines() if line.strip()][-1:]
            self.flag("traceback", f"{' '.join(proc.args[3:5])}: {tail[0] if tail else ''}")
        return done

    def dp(self, *args: str, fsize: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.finish(self.start(list(args), fsize), timeout)

    # -- expectations
    def error_lines(self, p: subprocess.CompletedProcess) -> list[str]:
        return [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("Error:")]

    def expect_fail(self, p: subprocess.CompletedProcess, before: set[str], validate: bool = False) -> None:
        """A non-zero exit, one `Error:` line, and nothing new in the directory."""
        if p.returncode == 0:
            self.flag("wrong_exit", f"exit 0: {last_line(p)}")
        elif validate:
            text = (p.stdout + p.stderr).strip()
            if not text or (len(self.error_lines(p)) != 1 and ".yaml" not in text):
                self.flag("no_error_line", f"rc {p.returncode}: {last_line(p)}")
        elif len(self.error_lines(p)) != 1:
            self.flag("no_error_line", f"rc {p.returncode}, {len(self.error_lines(p))} Error lines: {last_line(p)}")
        if p.returncode != 0:
            self.left_behind(before)

    def left_behind(self, before: set[str], allowed: tuple[str, ...] = ()) -> None:
        new = sorted(self.entries() - before - set(allowed))
        if new:
            self.flag("left_behind", ", ".join(new))

    def expect_ok(self, p: subprocess.CompletedProcess) -> bool:
        if p.returncode != 0:
            self.flag("wrong_exit", f"rc {p.returncode}: {last_line(p)}")
            return False
        return True

    def manifest(self, out: str) -> dict:
        path = self.tmp / out / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def check_counts(self, out: str, n_rows: int | None, rejected: int | None = None) -> dict:
        """`in` equals the input's rows, `in = out + rejected`, rejects.jsonl holds the rejects."""
        m = self.manifest(out)
        c = m.get("counts") or {}
        if not c:
            self.flag("lost", f"{out}: no counts in the manifest")
            return m
        if c["in"] != c["out"] + c["rejected"]:
            self.flag("lost", f"in {c['in']} != out {c['out']} + rejected {c['rejected']}")
        if n_rows is not None and c["in"] != n_rows:
            self.flag("lost", f"in {c['in']}, the input has {n_rows} rows")
        if rejected is not None and c["rejected"] != rejected:
            self.flag("lost", f"rejected {c['rejected']}, expected {rejected} ({c.get('rejected_by_reason')})")
        rej = self.tmp / out / "rejects.jsonl"
        if rej.is_file() and m.get("stage") == "convert":
            n = sum(1 for line in rej.read_text(encoding="utf-8").splitlines() if line.strip())
            if n != c["rejected"]:
                self.flag("lost", f"rejects.jsonl has {n} rows, the manifest {c['rejected']}")
        return m

    def records_text(self, out: str) -> str:
        """Every value of the records file, one a line (strings as they are), for content checks."""
        import pyarrow.parquet as pq

        path = self.tmp / out / "records.parquet"
        values: list[str] = []

        def walk(v):
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list | tuple):
                for x in v:
                    walk(x)
            elif v is not None:
                values.append(str(v).lower() if isinstance(v, bool) else str(v))
        walk(pq.read_table(path).to_pylist() if path.is_file() else [])
        return "\n".join(values)


def last_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip() and "%|" not in line]
    return lines[-1][:200] if lines else ""


def data_digest(path: Path) -> dict[str, str]:
    """sha256 of every data file of an output directory (manifest and reports hold timings)."""
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "report.html", "report.json")}


# ---------------------------------------------------------------- case builders

Case = tuple[str, str, Callable[[Ctx], None]]  # family, name, body
CASES: list[Case] = []


def case(family: str, name: str):
    def register(fn):
        CASES.append((family, name, fn))
        return fn
    return register


def add(family: str, name: str, fn: Callable[[Ctx], None]) -> None:
    CASES.append((family, name, fn))


def convert_case(filename: str, data: str | bytes, args: tuple = (), expect: str = "either", n_rows=None,
                 rejected=None, check: Callable[[Ctx], None] | None = None):
    """convert one file. expect: fail (clean failure), ok (exit 0 with the counts), either (one of them)."""
    def body(ctx: Ctx) -> None:
        path = ctx.write(filename, data)
        before = ctx.entries()
        p = ctx.dp("convert", path, "-o", "out", *args)
        if expect == "fail" or (expect == "either" and p.returncode != 0):
            ctx.expect_fail(p, before)
            return
        if ctx.expect_ok(p):
            ctx.check_counts("out", n_rows, rejected)
            ctx.left_behind(before, ("out",))
            if check:
                check(ctx)
    return body


def bad_command(args_fn: Callable[[Ctx], list[str]], validate: bool = False):
    def body(ctx: Ctx) -> None:
        args = args_fn(ctx)
        before = ctx.entries()
        ctx.expect_fail(ctx.dp(*args), before, validate=validate)
    return body


def contains(*needles: str, where: str = "records"):
    def check(ctx: Ctx) -> None:
        text = ctx.records_text("out") if where == "records" else json.dumps(ctx.manifest("out"), ensure_ascii=False)
        for n in needles:
            if n not in text:
                ctx.flag("lost", f"{n!r} not in the {where}")
    return check


def mentioned(column: str):
    """An unused column is kept, listed in the manifest, or the run stops naming it."""
    def check(ctx: Ctx) -> None:
        if column not in json.dumps(ctx.manifest("out")) and column not in ctx.records_text("out"):
            ctx.flag("lost", f"column {column!r} dropped without a word")
    return check


# ---------------------------------------------------------------- family: malformed inputs


def malformed_cases() -> None:
    good = jsonl(GOOD_SFT).encode()
    # truncated JSONL and JSON arrays at many offsets (mid-line: the partial row is bad)
    for cut in range(5, len(good) - 1, max(1, len(good) // 14)):
        data = good[:cut]
        if data.endswith(b"\n"):
            continue
        n = data.count(b"\n") + 1
        add("malformed", f"truncated JSONL at byte {cut}", convert_case("a.jsonl", data, n_rows=n))
    arr = json.dumps(GOOD_SFT).encode()
    for cut in range(3, len(arr) - 1, max(1, len(arr) // 12)):
        add("malformed", f"truncated JSON array at byte {cut}", convert_case("a.json", arr[:cut], expect="fail"))
    bad_lines = ['{"instruction": "x", ', "{'instruction': 'x', 'output': 'y'}", '{"instruction": "x", "output": NaN}',
                 '{instruction: "x", "output": "y"}', '{"instruction": "x", "output": "y"}}', '[1, 2, 3]', '"a string"',
                 '42', 'null', 'true', '{"instruction": "x" "output": "y"}', '{"instruction": "x", "output": "y",}',
                 '\x00\x00\x00', '{"instruction": "\\x41", "output": "y"}', '{"a": 1}{"b": 2}', '<xml/>',
                 '{"instruction": "x", "output": "y"', '{"instruction": "x", "output": "\\u12"}']
    for i, line in enumerate(bad_lines):
        data = jsonl(GOOD_SFT[:1]) + line + "\n" + jsonl(GOOD_SFT[1:])
        add("malformed", f"bad JSONL line {i}: {line[:30]!r}", convert_case("a.jsonl", data, n_rows=4))
        add("malformed", f"bad JSON file {i}: {line[:30]!r}", convert_case("a.json", line, expect="fail"))
    # encodings
    add("malformed", "UTF-16 JSONL", convert_case("a.jsonl", jsonl(GOOD_SFT).encode("utf-16"), n_rows=3))
    add("malformed", "UTF-8 BOM JSONL", convert_case("a.jsonl", b"\xef\xbb\xbf" + good, expect="ok", n_rows=3))
    add("malformed", "latin-1 byte in one JSONL row",
        convert_case("a.jsonl", good + '{"instruction": "caf\xe9", "output": "y"}\n'.encode("latin-1"), n_rows=4))
    add("malformed", "invalid UTF-8 in JSON array", convert_case("a.json", b'[{"instruction": "\xff\xfe", "output": "y"}]'))
    add("malformed", "cp949 CSV without --encoding",
        convert_case("a.csv", "instruction,output\n안녕,하세요\n좋은,아침\n".encode("cp949"), expect="ok", n_rows=2,
                     check=contains("안녕")))
    add("malformed", "latin-1 CSV without --encoding",
        convert_case("a.csv", "instruction,output\ncafé,crème\n".encode("latin-1"), expect="ok", n_rows=1,
                     check=contains("café")))
    add("malformed", "binary garbage CSV", convert_case("a.csv", bytes(range(256)) * 40, expect="fail"))
    add("malformed", "binary garbage JSONL", convert_case("a.jsonl", bytes(range(256)) * 40, expect="fail"))
    add("malformed", "NUL bytes JSONL", convert_case("a.jsonl", b"\x00" * 500, expect="fail"))
    add("malformed", "truncated gzip", convert_case("a.jsonl.gz", gzip.compress(good * 50)[:40], expect="fail"))
    add("malformed", "gzip of JSONL", convert_case("a.jsonl.gz", gzip.compress(good), expect="ok", n_rows=3))
    # lone surrogates: the row is one reject, the run goes on
    for field in ("instruction", "output", "input"):
        for sur in ("\\ud800", "\\udfff", "\\ud800\\ud800"):
            row = '{"instruction": "a", "output": "b", "input": "c"}'.replace(f'"{field}": "', f'"{field}": "{sur}', 1)
            data = jsonl(GOOD_SFT[:1]) + row + "\n" + jsonl(GOOD_SFT[1:])
            add("malformed", f"lone surrogate {sur} in {field} (JSONL)",
                convert_case("a.jsonl", data, expect="ok", n_rows=4, rejected=1))
    for sur in ("\\ud800", "\\udc00"):
        data = "[" + ", ".join([json.dumps(GOOD_SFT[0]), '{"instruction": "a' + sur + '", "output": "b"}']) + "]"
        add("malformed", f"lone surrogate {sur} (JSON array)", convert_case("a.json", data, expect="ok", n_rows=2,
                                                                             rejected=1))
    chat_sur = '{"messages": [{"role": "user", "content": "hi\\ud800"}, {"role": "assistant", "content": "yo"}]}\n'
    chat_ok = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    add("malformed", "lone surrogate in chat content",
        convert_case("a.jsonl", chat_ok + chat_sur + chat_ok, ("--kind", "chat"), expect="ok", n_rows=3, rejected=1))
    add("malformed", "lone surrogate in text kind",
        convert_case("a.jsonl", '{"text": "ok"}\n{"text": "bad\\ud800"}\n{"text": "fine"}\n', ("--kind", "text"),
                     expect="ok", n_rows=3, rejected=1))
    add("malformed", "raw surrogate bytes ED A0 80", convert_case("a.jsonl", good + b'{"instruction": "\xed\xa0\x80",'
                                                                  b' "output": "y"}\n', n_rows=4))
    # deep nesting
    for depth in (100, 1000, 10_000, 100_000):
        nest = "[" * depth + "]" * depth
        add("malformed", f"nested array depth {depth} as JSON file", convert_case("a.json", nest, expect="fail"))
        row = '{"instruction": "a", "output": "b", "extra": ' + nest + "}"
        add("malformed", f"nested depth {depth} in an unused JSONL field",
            convert_case("a.jsonl", jsonl(GOOD_SFT) + row + "\n", n_rows=4))
        add("malformed", f"nested depth {depth} as output",
            convert_case("a.jsonl", jsonl(GOOD_SFT) + '{"instruction": "a", "output": ' + nest + "}\n", n_rows=4))
    # missing columns, per kind
    missing = {
        "sft without output": ("sft", '{"instruction": "a"}\n'),
        "sft without instruction": ("sft", '{"output": "a"}\n'),
        "chat without conversations": ("chat", '{"text": "a"}\n'),
        "text without text": ("text", '{"body2": "a"}\n'),
        "classify without labels": ("classify", '{"text": "a"}\n'),
        "preference without rejected": ("preference", '{"prompt": "a", "chosen": "b"}\n'),
        "kto without label": ("kto", '{"prompt": "a", "completion": "b"}\n'),
    }
    for name, (kind, line) in missing.items():
        def body(ctx, kind=kind, line=line):
            if kind == "kto":
                ctx.require("convert", "kto")
            convert_case("a.jsonl", line * 3, ("--kind", kind), expect="fail")(ctx)
        add("malformed", f"missing column: {name}", body)
    # wrong types in one row of three (the row is a reject or converted; never a traceback)
    for label, value in (("number", 5), ("list", [1, 2]), ("dict", {"a": 1}), ("null", None), ("bool", True),
                         ("empty", ""), ("list of str", ["a", "b"])):
        for field in ("instruction", "output"):
            row = {"instruction": "a", "output": "b", field: value}
            add("malformed", f"{field} is {label}",
                convert_case("a.jsonl", jsonl([GOOD_SFT[0], row, GOOD_SFT[1]]), n_rows=3))
    late = jsonl(GOOD_SFT * 400) + jsonl([{"instruction": "late", "output": 12345}])
    add("malformed", "output turns int after 1200 string rows", convert_case("a.jsonl", late, n_rows=1201))
    late2 = jsonl(GOOD_SFT * 400) + jsonl([{"instruction": "late", "output": "x", "new_col": [1, 2]}])
    add("malformed", "new column after 1200 rows", convert_case("a.jsonl", late2, n_rows=1201))
    for label, content in (("number", 5), ("null", None), ("dict", {"x": 1}), ("empty", "")):
        row = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "yo"}]}
        add("malformed", f"chat content is {label}",
            convert_case("a.jsonl", chat_ok + json.dumps(row) + "\n" + chat_ok, ("--kind", "chat"), n_rows=3))
    for label, msgs in (("unknown role", [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "b"}]),
                        ("no role key", [{"content": "a"}, {"role": "assistant", "content": "b"}]),
                        ("messages a string", "hello"), ("messages empty", []),
                        ("only a user turn", [{"role": "user", "content": "a"}])):
        add("malformed", f"chat {label}",
            convert_case("a.jsonl", chat_ok + json.dumps({"messages": msgs}) + "\n" + chat_ok, ("--kind", "chat"),
                         n_rows=3))
    for label, labels in (("dict", {"a": 1}), ("number", 3), ("null", None), ("empty list", [])):
        add("malformed", f"classify labels are {label}",
            convert_case("a.jsonl", jsonl([{"text": "a", "labels": "x"}, {"text": "b", "labels": labels},
                                           {"text": "c", "labels": "y"}]), ("--kind", "classify"), n_rows=3))
    # empty text and zero rows out
    add("malformed", "every row empty", convert_case("a.jsonl", '{"instruction": "", "output": ""}\n' * 3,
                                                      expect="fail"))
    add("malformed", "every row whitespace", convert_case("a.jsonl", '{"instruction": " ", "output": "\\n"}\n' * 3,
                                                           expect="fail"))
    add("malformed", "every answer empty", convert_case("a.jsonl", '{"instruction": "a", "output": ""}\n' * 3,
                                                         expect="fail"))
    add("malformed", "empty .txt", convert_case("a.txt", "", ("--kind", "text"), expect="fail"))
    add("malformed", "blank-lines .txt", convert_case("a.txt", "\n\n\n", ("--kind", "text"), expect="fail"))
    add("malformed", "empty JSON array", convert_case("a.json", "[]", expect="fail"))
    add("malformed", "header-only CSV", convert_case("a.csv", "instruction,output\n", expect="fail"))
    add("malformed", "empty text rows", convert_case("a.jsonl", '{"text": ""}\n' * 4, ("--kind", "text"),
                                                     expect="fail"))
    # huge rows
    big = "word " * 400_000
    add("malformed", "2 MB output in one row",
        convert_case("a.jsonl", jsonl(GOOD_SFT + [{"instruction": "long", "output": big}]), expect="ok", n_rows=4))
    add("malformed", "2 MB line in .txt", convert_case("a.txt", "short\n" + big + "\nend\n", ("--kind", "text"),
                                                       expect="ok", n_rows=3))
    add("malformed", "2 MB CSV cell", convert_case("a.csv", f'instruction,output\na,"{big}"\nb,c\n', expect="ok",
                                                   n_rows=2))
    # unknown keys, ignored columns, KTO label, own source/row
    add("malformed", "an unused column is listed",
        convert_case("a.jsonl", jsonl([dict(r, category_x="c") for r in GOOD_SFT]), expect="ok", n_rows=3,
                     check=mentioned("category_x")))
    add("malformed", "a KTO label column on sft data",
        convert_case("a.jsonl", jsonl([dict(r, label=i % 2 == 0) for i, r in enumerate(GOOD_SFT)]),
                     check=mentioned("label")))
    kto_rows = [{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 2 == 0} for i in range(4)]

    def kto_label(ctx):
        ctx.require("convert", "kto")
        convert_case("a.jsonl", jsonl(kto_rows), ("--kind", "kto"), expect="ok", n_rows=4)(ctx)
        if ctx.records_text("out").count("false") < 2:
            ctx.flag("lost", "the KTO label is not in the records")
    add("malformed", "KTO data keeps its label", kto_label)
    def own_columns(ctx):  # kept (--keep-columns) or listed as ignored, never overwritten unseen
        for column, value in (("source", "MYSRC0"), ("row", "1002")):
            if value not in ctx.records_text("out") and f"input_{column}" not in json.dumps(ctx.manifest("out")):
                ctx.flag("lost", f"the user's own {column!r} column was overwritten without a word")
    add("malformed", "own source/row columns",
        convert_case("a.jsonl", jsonl([dict(r, source=f"MYSRC{i}", row=1000 + i) for i, r in enumerate(GOOD_SFT)]),
                     expect="ok", n_rows=3, check=own_columns))
    add("malformed", "duplicate CSV header",
        convert_case("a.csv", "instruction,output,output\na,FIRST1,SECOND1\nb,FIRST2,SECOND2\n", n_rows=2,
                     check=lambda ctx: (contains("FIRST1")(ctx), mentioned("output_2")(ctx))))
    add("malformed", "duplicate CSV header (unused column)",
        convert_case("a.csv", "instruction,output,note,note\na,b,N1,N2\n", n_rows=1,
                     check=lambda ctx: (mentioned("note")(ctx), mentioned("note_2")(ctx))))
    # text parts keyed `value` (LLaMA-Factory v1)
    def parts(text):
        return [{"type": "text", "value": text}]
    both = [{"messages": [{"role": "user", "content": parts(f"USERV{i}")},
                          {"role": "assistant", "content": parts(f"ASSTV{i}")}]} for i in range(3)]
    user = [{"messages": [{"role": "user", "content": parts(f"USERV{i}")},
                          {"role": "assistant", "content": f"ASSTV{i}"}]} for i in range(3)]
    add("malformed", "text parts keyed value (both sides)",
        convert_case("a.jsonl", jsonl(both), ("--kind", "chat"), n_rows=3, rejected=0,
                     check=contains("USERV0", "ASSTV2")))
    add("malformed", "text parts keyed value (user side)",
        convert_case("a.jsonl", jsonl(user), ("--kind", "chat"), n_rows=3, rejected=0,
                     check=contains("USERV0", "USERV2")))
    add("malformed", "text parts keyed text",
        convert_case("a.jsonl", jsonl([{"messages": [{"role": "user", "content": [{"type": "text", "text": "UT"}]},
                                                     {"role": "assistant", "content": "A"}]}]), ("--kind", "chat"),
                     expect="ok", n_rows=1, check=contains("UT")))
    add("malformed", "capitalised roles",
        convert_case("a.jsonl", jsonl([{"messages": [{"role": "USER", "content": "CAPQ"},
                                                     {"role": "Assistant", "content": "CAPA"}]}] * 2),
                     ("--kind", "chat"), n_rows=2, rejected=0, check=contains("CAPQ")))
    # line separators
    for ch, label in (("\u2028", "U+2028"), ("\u2029", "U+2029"), ("\u0085", "U+0085")):
        rows = [{"instruction": f"a{ch}b", "output": f"x{ch}y"}] + GOOD_SFT
        add("malformed", f"{label} inside JSONL strings",
            convert_case("a.jsonl", jsonl(rows), expect="ok", n_rows=4, rejected=0, check=contains(f"x{ch}y")))
    for ch, label in (("\u2028", "U+2028"), ("\x0c", "form feed"), ("\u0085", "U+0085"), ("\x1c", "FS \\x1c"),
                      ("\r", "lone CR")):
        text = f"one\ntwo{ch}still two\nthree\nfour {ch} four\n"

        def check_rows(ctx, ch=ch):
            if f"two{ch}still two" not in ctx.records_text("out"):
                ctx.flag("lost", "a line was split at a separator that is not \\n")
        add("malformed", f"{label} inside a .txt line",
            convert_case("a.txt", text, ("--kind", "text"), expect="ok", n_rows=4, check=check_rows))
    add("malformed", "CRLF .txt", convert_case("a.txt", "a\r\nb\r\nc\r\n", ("--kind", "text"), expect="ok",
                                               n_rows=3))
    # CSV shapes
    add("malformed", "unclosed CSV quote", convert_case("a.csv", 'instruction,output\n"a,b\nc,d\n'))
    add("malformed", "ragged CSV (extra fields)", convert_case("a.csv", "instruction,output\na,b,c,d\ne,f\n", n_rows=2))
    add("malformed", "ragged CSV (short row)", convert_case("a.csv", "instruction,output\na\ne,f\n", n_rows=2))
    add("malformed", "CSV with empty header name", convert_case("a.csv", "instruction,,output\na,x,b\n", n_rows=1))
    add("malformed", "TSV with quotes", convert_case("a.tsv", 'instruction\toutput\n"a\tb"\tc\nd\te\n', n_rows=2))
    # inputs and outputs
    add("malformed", "missing input", bad_command(lambda ctx: ["convert", "nope.jsonl", "-o", "out"]))
    add("malformed", "input is a directory without data",
        bad_command(lambda ctx: ["convert", str((ctx.tmp / "d").mkdir() or ctx.tmp / "d"), "-o", "out"]))
    add("malformed", "unknown extension", convert_case("a.xyz", jsonl(GOOD_SFT), expect="fail"))
    add("malformed", "-o is a file", bad_command(lambda ctx: ["convert", ctx.write("a.jsonl", jsonl(GOOD_SFT)), "-o",
                                                              ctx.write("taken", "x")]))
    add("malformed", "-o under a file (unwritable parent)",
        bad_command(lambda ctx: ["convert", ctx.write("a.jsonl", jsonl(GOOD_SFT)), "-o",
                                 ctx.write("plain", "x") + "/out"]))
    add("malformed", "input is /dev/null", bad_command(lambda ctx: ["convert", "/dev/null", "-o", "out"]))
    for stage in ("tokenize", "dedupe", "filter", "split"):
        def same_out(ctx, stage=stage):
            src = ctx.tmp / "rec"
            shutil.copytree(ctx.shared["records"], src)
            digest = data_digest(src)
            extra = {"dedupe": ["--methods", "exact"], "filter": ["--min-chars", "1"], "split": ["--val", "0.34"]}
            p = ctx.dp(stage, str(src), "-o", str(src), *extra.get(stage, []))
            if data_digest(src) != digest:
                ctx.flag("lost", f"{stage} -o equal to its input changed the input (exit {p.returncode})")
            if p.returncode == 0:
                ctx.flag("wrong_exit", "exit 0 for -o equal to the input")
        add("malformed", f"{stage} -o equal to its input", same_out)

        def inside_out(ctx, stage=stage):
            src = ctx.tmp / "rec"
            shutil.copytree(ctx.shared["records"], src)
            digest = data_digest(src)
            extra = {"dedupe": ["--methods", "exact"], "filter": ["--min-chars", "1"], "split": ["--val", "0.34"]}
            p = ctx.dp(stage, str(src), "-o", str(src / "inner"), *extra.get(stage, []))
            if data_digest(src) != digest or p.returncode == 0:
                ctx.flag("wrong_exit" if data_digest(src) == digest else "lost",
                         f"-o inside the input: exit {p.returncode}")
        add("malformed", f"{stage} -o inside its input", inside_out)

    def around(ctx):
        src = ctx.tmp / "outer" / "rec"
        src.parent.mkdir()
        shutil.copytree(ctx.shared["records"], src)
        digest = data_digest(src)
        p = ctx.dp("tokenize", str(src), "-o", str(ctx.tmp / "outer"), "--force")
        if data_digest(src) != digest:
            ctx.flag("lost", f"tokenize -o around its input deleted the input (exit {p.returncode})")
        elif p.returncode == 0:
            ctx.flag("wrong_exit", "exit 0 for -o around the input")
    add("malformed", "tokenize -o around its input (--force)", around)
    # row-fn troubles
    for label, src in (("sys.exit()", "import sys\ndef f(row):\n    sys.exit()\n"),
                       ("raises per row", "def f(row):\n    raise ValueError(f'bad row {row}')\n"),
                       ("returns None", "def f(row):\n    return None\n"),
                       ("returns a list", "def f(row):\n    return [1]\n"),
                       ("syntax error", "def f(row:\n"),
                       ("SystemExit(0)", "def f(row):\n    raise SystemExit(0)\n")):
        def body(ctx, src=src, label=label):
            ctx.write("rowmod.py", src)
            path = ctx.write("a.jsonl", jsonl(GOOD_SFT))
            before = ctx.entries()
            p = ctx.dp("convert", path, "-o", "out", "--row-fn", str(ctx.tmp / "rowmod.py") + ":f")
            if p.returncode == 0:
                ctx.check_counts("out", 3)
                reasons = ctx.manifest("out").get("counts", {}).get("rejected_by_reason", {})
                if any("bad row" in k for k in reasons):
                    ctx.flag("lost", "the exception's text became a reject reason key (unbounded keys)")
            else:
                ctx.expect_fail(p, before)
        add("malformed", f"row-fn {label}", body)


# ---------------------------------------------------------------- family: bad option values

BAD_OPTIONS = {
    "convert": {"--batch-rows": ["0", "-1", "lots", "1.5"], "--limit": ["-1", "lots"], "--kind": ["nope", ""],
                "--format": ["xml"], "--template": ["{nope} {instruction}", "nope-template"],
                "--map": ["nofield", "output=nope"], "--row-fn": ["nomodule_xyz:f", "justaname"],
                "--quote-char": ["ab", "é"], "--delimiter": ["ab", "::"], "--encoding": ["no-such-encoding"], "--label-names": ["missing.txt"],
                "--keep-columns": ["nope"], "--choice": ["nope1,nope2"], "--think": ["maybe"]},
    "dedupe": {"--near-threshold": ["-0.1", "1.5", "nan", "lots"], "--ngram": ["0", "-1", "lots"],
               "--num-perm": ["0", "-1", "lots"], "--threshold": ["1.5", "-2", "nan", "lots"],
               "--batch-size": ["0", "-1", "lots"], "--clusters": ["-1", "lots"], "--seed": ["lots"],
               "--methods": ["fuzzy", "exact,fuzzy", ""], "--keep": ["nope"], "--on": ["nofield"],
               "--sweep": ["lots", "1:0:0.1"], "--against": ["missing_eval.jsonl"], "--min-overlap": ["1.5", "-1"],
               "--against-ngram": ["0"], "--ngram-unit": ["byte"]},
    "tokenize": {"--max-len": ["0", "-1", "lots"], "--stride": ["-1", "lots"], "--num-shards": ["0", "-1", "lots"],
                 "--shard-size": ["lots", "0", "-5MB"], "--num-proc": ["0", "-1", "lots"],
                 "--batch-size": ["0", "-1", "lots"], "--overflow": ["nope"], "--train-on": ["nope"],
                 "--tokenizer": ["no-such-tokenizer-xyz", "@records"], "--chat-template": ["missing.jinja"],
                 "--seam": ["nope"]},
    "filter": {"--min-chars": ["-1", "lots", "nofield=3"], "--max-chars": ["lots"], "--lang": ["zz-not-a-lang"],
               "--lang-threshold": ["1.5", "-1"], "--quality-min-words": ["-1"], "--max-dup-line-frac": ["1.5"],
               "--pii": ["nope"], "--mean-word-length": ["lots", "5,1"], "--fields": ["nofield"],
               "--min-tokens": ["lots"]},
    "split": {"--val": ["1.5", "-0.1", "lots", "1"], "--test": ["1.5", "-0.1"], "--stratify": ["nofield"],
              "--group-by": ["nofield"], "--seed": ["lots"]},
    "mix": {"--rows": ["-1", "lots", "999"], "--weights": ["-1", "0", "lots"], "--seed": ["lots"]},
}
CSV_ONLY = ("--quote-char", "--delimiter", "--encoding")
EXTRA = {"dedupe": ["--methods", "exact,near"], "filter": ["--min-chars", "1"], "mix": ["--rows", "2"]}


def option_cases() -> None:
    for command, options in BAD_OPTIONS.items():
        for option, values in options.items():
            for value in values:
                def args(ctx, command=command, option=option, value=value):
                    value = ctx.shared["records"] if value == "@records" else value
                    if command == "convert" and option in CSV_ONLY:
                        first = [ctx.write("a.csv", "instruction,output\na,b\n")]
                    elif command == "convert":
                        first = [ctx.write("a.jsonl", jsonl(GOOD_SFT))]
                    else:
                        first = [ctx.shared["records"]]
                    extra = [a for a in EXTRA.get(command, []) if True]
                    if option in extra:
                        i = extra.index(option)
                        extra = extra[:i] + extra[i + 2:]
                    return [command, *first, "-o", "out", *extra, option, value]
                add("options", f"{command} {option} {value!r}", bad_command(args))
    add("options", "split --val 0.5 --test 0.5",
        bad_command(lambda ctx: ["split", ctx.shared["records"], "-o", "out", "--val", "0.5", "--test", "0.5"]))
    add("options", "tokenize --max-len 1", bad_command(lambda ctx: ["tokenize", ctx.shared["records"], "-o", "out",
                                                                    "--max-len", "1"]))

    def num_perm_zero(ctx):  # accepted before, and near then silently found nothing
        recs = ctx.write("dup.jsonl", jsonl([{"instruction": "the same words here", "output": "x"}] * 2))
        before = ctx.entries()
        ctx.expect_fail(ctx.dp("dedupe", recs, "-o", "out", "--methods", "near", "--num-perm", "0"), before)
    add("options", "dedupe --num-perm 0 on near duplicates", num_perm_zero)


# ---------------------------------------------------------------- family: recipes

RECIPES = {
    "non-UTF-8 recipe": "name: \xff\xfe\nconvert:\n  input: a.jsonl\n".encode("latin-1"),
    "duplicate keys": "name: a\nname: b\nconvert:\n  input: a.jsonl\n",
    "duplicate stage keys": "convert:\n  input: a.jsonl\nconvert:\n  input: b.jsonl\n",
    "tokenize max_len -1": "convert:\n  input: a.jsonl\ntokenize:\n  max_len: -1\n",
    "tokenize max_len 0": "convert:\n  input: a.jsonl\ntokenize:\n  max_len: 0\n",
    "tokenize max_len lots": "convert:\n  input: a.jsonl\ntokenize:\n  max_len: lots\n",
    "tokenize max_len true": "convert:\n  input: a.jsonl\ntokenize:\n  max_len: true\n",
    "tokenize max_len 1e999": "convert:\n  input: a.jsonl\ntokenize:\n  max_len: 1e999\n",
    "tokenize batch_size 0": "convert:\n  input: a.jsonl\ntokenize:\n  batch_size: 0\n",
    "tokenize num_shards 0": "convert:\n  input: a.jsonl\ntokenize:\n  num_shards: 0\n",
    "tokenize shard_size lots": "convert:\n  input: a.jsonl\ntokenize:\n  shard_size: lots\n",
    "dedupe num_perm 0": "convert:\n  input: a.jsonl\ndedupe:\n  methods: [near]\n  num_perm: 0\n",
    "dedupe threshold 1.5": "convert:\n  input: a.jsonl\ndedupe:\n  methods: [exact]\n  threshold: 1.5\n",
    "dedupe near_threshold -1": "convert:\n  input: a.jsonl\ndedupe:\n  near_threshold: -1\n",
    "dedupe methods fuzzy": "convert:\n  input: a.jsonl\ndedupe:\n  methods: [fuzzy]\n",
    "dedupe methods a string": "convert:\n  input: a.jsonl\ndedupe:\n  methods: 5\n",
    "convert batch_rows 0": "convert:\n  input: a.jsonl\n  batch_rows: 0\n",
    "convert kind nope": "convert:\n  input: a.jsonl\n  kind: nope\n",
    "convert unknown key": "convert:\n  input: a.jsonl\n  colour: blue\n",
    "unknown stage": "convert:\n  input: a.jsonl\nfrobnicate:\n  x: 1\n",
    "YAML syntax error": "convert:\n  input: [a.jsonl\n",
    "tab indentation": "convert:\n\tinput: a.jsonl\n",
    "empty recipe": "",
    "a list, not a mapping": "- convert\n- tokenize\n",
    "a scalar": "just words\n",
    "stage is a list": "convert:\n  - a.jsonl\n",
    "no convert input": "convert:\n  kind: sft\n",
    "split val 1.5": "convert:\n  input: a.jsonl\nsplit:\n  val: 1.5\n",
    "train lr -1": "convert:\n  input: a.jsonl\ntrain:\n  lr: -1\n",
    "train epochs 0": "convert:\n  input: a.jsonl\ntrain:\n  epochs: 0\n",
    "null stage": "convert:\n  input: a.jsonl\ntokenize: ~\ntrain:\n  epochs: [1]\n",
}


def recipe_cases() -> None:
    for name, text in RECIPES.items():
        def validate(ctx, text=text):
            ctx.write("a.jsonl", jsonl(GOOD_SFT))
            path = ctx.write("r.yaml", text)
            before = ctx.entries()
            ctx.expect_fail(ctx.dp("validate", path), before, validate=True)
        add("recipes", f"validate: {name}", validate)

        def run(ctx, text=text):
            ctx.write("a.jsonl", jsonl(GOOD_SFT))
            path = ctx.write("r.yaml", text)
            before = ctx.entries()
            ctx.expect_fail(ctx.dp("run", path, "--workdir", str(ctx.tmp / "work"), "--until", "tokenize"), before,
                            validate=True)
        add("recipes", f"run: {name}", run)

    def workdir_file(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.write("work", "a file")
        path = ctx.write("r.yaml", f"workdir: {ctx.tmp / 'work'}\nconvert:\n  input: {ctx.tmp / 'a.jsonl'}\n")
        before = ctx.entries()
        ctx.expect_fail(ctx.dp("run", path, "--until", "convert"), before)
    add("recipes", "run: workdir is a file", workdir_file)

    def workdir_flag_file(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.write("work", "a file")
        path = ctx.write("r.yaml", f"convert:\n  input: {ctx.tmp / 'a.jsonl'}\n")
        before = ctx.entries()
        ctx.expect_fail(ctx.dp("run", path, "--workdir", str(ctx.tmp / "work"), "--until", "convert"), before)
    add("recipes", "run: --workdir is a file", workdir_flag_file)

    def good_recipe(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        path = ctx.write("r.yaml", f"convert:\n  input: {ctx.tmp / 'a.jsonl'}\ntokenize:\n  max_len: 64\n")
        ok = ctx.expect_ok(ctx.dp("validate", path))
        if ok:
            ctx.expect_ok(ctx.dp("run", path, "--workdir", str(ctx.tmp / "work"), "--until", "tokenize"))
    add("recipes", "a good recipe validates and runs (control)", good_recipe)


# ---------------------------------------------------------------- family: real data


def count_rows(path: Path, no_header: bool = False, delimiter: str | None = None) -> int:
    if path.suffix == ".json":
        return len(json.loads(path.read_text(encoding="utf-8")))
    if path.suffix == ".jsonl":
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    with open(path, newline="", encoding="utf-8") as fh:
        if delimiter == "\t":
            n = sum(1 for line in fh if line.strip())
        else:
            n = sum(1 for _ in csv.reader(fh))
    return n - (0 if no_header else 1)


REAL = {  # name -> (file, convert args, count_rows kwargs)
    "alpaca_en": ("alpaca_en_demo.json", [], {}),
    "alpaca_zh": ("alpaca_zh_demo.json", [], {}),
    "identity": ("identity.json", [], {}),
    "c4 text": ("c4_demo.jsonl", ["--kind", "text"], {}),
    "dpo_en preference": ("dpo_en_demo.json", ["--kind", "preference"], {}),
    "glaive toolcall chat": ("glaive_toolcall_en_demo.json", ["--kind", "chat"], {}),
    "english_to_latex": ("english_to_latex.csv", ["--template", "latex"], {}),
    "anime classify": ("anime_with_synopsis.csv", ["--kind", "classify", "--map", "text=synopsis", "--map",
                                                   "labels=Genres"], {}),
    "ko_alpaca": ("ko_alpaca_1040.json", ["--template", "ko-alpaca"], {}),
    "goemotions dev classify": ("goemotions/dev.tsv", ["--kind", "classify", "--no-header", "--map",
                                                       "text=column_1", "--map", "labels=column_2", "--label-names",
                                                       "@goemotions/emotions.txt"], {"no_header": True,
                                                                                     "delimiter": "\t"}),
    "stsb dev text": ("stsb/sts-dev.csv", ["--kind", "text", "--no-header", "--delimiter", "\t", "--quote-char",
                                           "none", "--map", "text=column_6"], {"no_header": True, "delimiter": "\t"}),
    "stsb train (ragged rows) text": ("stsb/sts-train.csv", ["--kind", "text", "--no-header", "--delimiter", "\t",
                                                             "--quote-char", "none", "--map", "text=column_6"],
                                      {"no_header": True, "delimiter": "\t"}),
    "goemotions emotions.txt text": ("goemotions/emotions.txt", ["--kind", "text"], {}),
}


RAGGED = ("stsb/sts-dev.csv", "stsb/sts-train.csv")  # rows with extra fields: a reject or a one-line refusal


def real_cases(data: Path) -> None:
    for name, (file, args, kw) in REAL.items():
        def conv(ctx, file=file, args=args, kw=kw, tokenize=False, dedupe=False):
            path = data / file
            args = [str(data / a[1:]) if a.startswith("@") else a for a in args]
            n = count_rows(path, **kw) if path.suffix != ".txt" else len(path.read_text().rstrip("\n").split("\n"))
            before = ctx.entries()
            p = ctx.dp("convert", str(path), "-o", "out", *args)
            if p.returncode != 0 and file in RAGGED:  # a clean refusal of a malformed file is right too
                ctx.expect_fail(p, before)
                ctx.notes.append(f"refused: {last_line(p)}")
                return
            if not ctx.expect_ok(p):
                return
            m = ctx.check_counts("out", n)
            ctx.left_behind(before, ("out",))
            ignored = m.get("ignored_columns")
            if ignored is None and m.get("stage") == "convert" and file.endswith((".json", ".jsonl", ".csv")):
                ctx.notes.append("no ignored_columns in the manifest")
            if tokenize:
                t = ctx.dp("tokenize", "out", "-o", "tok", "--max-len", "256")
                if ctx.expect_ok(t):
                    ctx.check_counts("tok", m["counts"]["out"])
            if dedupe:
                d = ctx.dp("dedupe", "out", "-o", "dd", "--methods", "exact,near")
                if ctx.expect_ok(d):
                    ctx.check_counts("dd", m["counts"]["out"])
        add("real", f"convert {name}", conv)
        if file.endswith((".json", ".jsonl")) or "latex" in file:
            add("real", f"convert + tokenize {name}",
                lambda ctx, conv=conv: conv(ctx, tokenize=True))
            add("real", f"convert + dedupe exact,near {name}",
                lambda ctx, conv=conv: conv(ctx, dedupe=True))

    for name, file, template in (("ko_alpaca_1040", "ko_alpaca_1040.json", "ko-alpaca"),
                                 ("alpaca_zh_demo", "alpaca_zh_demo.json", "alpaca")):
        def default_dedupe(ctx, file=file, template=template):
            ctx.dp("convert", str(data / file), "--template", template, "-o", "rec")
            before = ctx.entries()
            p = ctx.dp("dedupe", "rec", "-o", "dd", "--no-progress")
            if p.returncode != 0:
                ctx.expect_fail(p, before)  # refusing a model that cannot read the data is right
                return
            c = ctx.manifest("dd")["counts"]
            if c["rejected"] > 0.05 * c["in"]:
                ctx.flag("lost", f"default dedupe removed {c['rejected']} of {c['in']} rows "
                                 f"({c['rejected_by_reason']})")
        add("real", f"default dedupe (semantic, MiniLM) of {name}", default_dedupe)

    def dpo_shared_prompt(ctx):
        ctx.dp("convert", str(data / "dpo_en_demo.json"), "--kind", "preference", "--limit", "120", "-o", "rec")
        p = ctx.dp("tokenize", "rec", "-o", "tok", "--max-len", "96")
        if not ctx.expect_ok(p):
            return
        from datasets import load_from_disk

        ds = load_from_disk(str(ctx.tmp / "tok"))
        differ = 0
        for r in ds:
            if "chosen_labels" not in r:
                break
            a = [t for t, lab in zip(r["chosen_input_ids"], r["chosen_labels"], strict=True) if lab == -100]
            b = [t for t, lab in zip(r["rejected_input_ids"], r["rejected_labels"], strict=True) if lab == -100]
            differ += a != b
        if differ:
            ctx.flag("lost", f"{differ} of {len(ds)} pairs: chosen and rejected conditioned on different prompts")
    add("real", "dpo_en tokenize --max-len 96: one prompt per pair", dpo_shared_prompt)

    def multi_turn_pref(ctx):
        rows = [{"conversations": [{"from": "human", "value": f"FIRSTQ{i}"}, {"from": "gpt", "value": "mid"},
                                   {"from": "human", "value": "second q"}],
                 "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}
                for i in range(2)]
        ctx.dp("convert", ctx.write("p.json", json.dumps(rows)), "--kind", "preference", "-o", "out")
        if "FIRSTQ0" not in ctx.records_text("out"):
            ctx.flag("lost", "the first turn of a multi-turn preference prompt is gone")
    add("real", "multi-turn preference keeps the whole conversation", multi_turn_pref)

    def c4_windows(ctx):
        ctx.dp("convert", str(data / "c4_demo.jsonl"), "--kind", "text", "--limit", "60", "-o", "rec")
        full = ctx.dp("tokenize", "rec", "-o", "full", "--max-len", "100000", "--overflow", "truncate")
        if full.returncode != 0:
            full = ctx.dp("tokenize", "rec", "-o", "full", "--max-len", "100000")
        short = ctx.dp("tokenize", "rec", "-o", "short", "--max-len", "128")
        if ctx.expect_ok(full) and ctx.expect_ok(short):
            total = ctx.manifest("full")["token_stats"]["total"]
            kept = ctx.manifest("short")["token_stats"]["total"]
            if kept < 0.95 * total:
                ctx.flag("lost", f"tokenize --max-len 128 kept {kept} of {total} tokens of c4 text")
    add("real", "c4 long text at --max-len 128 keeps its tokens", c4_windows)


# ---------------------------------------------------------------- families: kill, concurrent, full disk, rerun

STAGES = {  # stage -> (input builder, args)
    "convert": (lambda ctx: ctx.shared["big_jsonl"], []),
    "tokenize": (lambda ctx: ctx.shared["mid_records"], ["--max-len", "128"]),
    "dedupe": (lambda ctx: ctx.shared["big_records"], ["--methods", "exact,near", "--no-progress"]),
}


def clean_run(ctx: Ctx, stage: str, name: str = "clean") -> dict[str, str]:
    src, args = STAGES[stage]
    p = ctx.dp(stage, src(ctx), "-o", name, *args)
    ctx.expect_ok(p)
    return data_digest(ctx.tmp / name)


def wait_for_temporary(ctx: Ctx, proc: subprocess.Popen, before: set[str], timeout: float = 60) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if any(n.startswith(".") for n in ctx.entries() - before):
            return True
        time.sleep(0.02)
    return False


def kill_cases() -> None:
    for stage in STAGES:
        for delay in (0.0, 0.3, 1.0, 2.5):
            for force in (False, True):
                def body(ctx, stage=stage, delay=delay, force=force):
                    clean = clean_run(ctx, stage)
                    src, args = STAGES[stage]
                    if force:
                        ctx.expect_ok(ctx.dp(stage, src(ctx), "-o", "out", *args))
                    before = ctx.entries() - {"out"}
                    proc = ctx.start([stage, src(ctx), "-o", "out", *args, *(["--force"] if force else [])])
                    seen = wait_for_temporary(ctx, proc, before | {"out"})
                    time.sleep(delay)
                    killed = proc.poll() is None
                    if killed:
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    if not killed:
                        ctx.notes.append(f"finished before the kill (temporary seen: {seen})")
                    out = ctx.tmp / "out"
                    if out.is_dir() and (out / "manifest.json").is_file() and data_digest(out) != clean:
                        ctx.flag("lost", "a killed run left an output that looks complete but differs")
                    p = ctx.dp(stage, src(ctx), "-o", "out", *args)
                    if ctx.expect_ok(p) and data_digest(out) != clean:
                        ctx.flag("rerun", "the rerun after the kill differs from a clean run")
                    ctx.left_behind(before, ("out",))
                add("kill", f"kill -9 {stage}{' --force rerun' if force else ''} {delay}s after its temporary", body)


def concurrent_cases() -> None:
    for stage in STAGES:
        for writers in (2, 3):
            def body(ctx, stage=stage, writers=writers):
                clean = clean_run(ctx, stage)
                src, args = STAGES[stage]
                before = ctx.entries()
                procs = [ctx.start([stage, src(ctx), "-o", "out", *args]) for _ in range(writers)]
                results = [ctx.finish(p) for p in procs]
                ok = [r for r in results if r.returncode == 0]
                for r in results:
                    if r.returncode != 0 and len(ctx.error_lines(r)) != 1:
                        ctx.flag("no_error_line", f"rc {r.returncode}: {last_line(r)}")
                if not ok:
                    ctx.flag("wrong_exit", "every writer failed")
                if data_digest(ctx.tmp / "out") != clean:
                    ctx.flag("lost", "the output of concurrent writers differs from a clean run")
                ctx.left_behind(before, ("out",))
            add("concurrent", f"{writers} writers of one {stage} -o", body)


def fulldisk_cases() -> None:
    for stage in STAGES:
        for limit in (0, 4096, 65_536, 1_000_000):
            def body(ctx, stage=stage, limit=limit):
                src, args = STAGES[stage]
                source = src(ctx)
                before = ctx.entries()
                p = ctx.dp(stage, source, "-o", "out", *args, fsize=limit)
                if p.returncode == 0:
                    ctx.notes.append(f"fit in {limit} bytes a file")
                    if not (ctx.tmp / "out" / "manifest.json").is_file():
                        ctx.flag("lost", "exit 0 without a manifest")
                    return
                ctx.expect_fail(p, before)
            add("fulldisk", f"{stage} with files capped at {limit} bytes (ulimit -f)", body)


def rerun_cases() -> None:
    for stage in STAGES:
        data_file = {"convert": "records.parquet", "tokenize": "data-00000-of-00001.arrow",
                     "dedupe": "records.parquet"}[stage]

        def identical(ctx, stage=stage):
            first = clean_run(ctx, stage, "a")
            second = clean_run(ctx, stage, "b")
            if first != second:
                diff = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
                ctx.flag("rerun", f"two identical runs differ in {', '.join(diff)}")
        add("rerun", f"{stage}: two identical runs are byte-identical", identical)

        def forced(ctx, stage=stage):
            first = clean_run(ctx, stage, "a")
            src, args = STAGES[stage]
            ctx.expect_ok(ctx.dp(stage, src(ctx), "-o", "a", *args, "--force"))
            if data_digest(ctx.tmp / "a") != first:
                ctx.flag("rerun", "a --force rerun differs")
        add("rerun", f"{stage}: --force rerun is byte-identical", forced)

        for damage in ("deleted", "truncated"):
            def damaged(ctx, stage=stage, damage=damage, data_file=data_file):
                clean = clean_run(ctx, stage, "a")
                target = ctx.tmp / "a" / data_file
                if damage == "deleted":
                    target.unlink()
                else:
                    target.write_bytes(target.read_bytes()[:100])
                src, args = STAGES[stage]
                p = ctx.dp(stage, src(ctx), "-o", "a", *args)
                if ctx.expect_ok(p) and data_digest(ctx.tmp / "a") != clean:
                    ctx.flag("rerun", f"'up to date' after {data_file} was {damage}: {last_line(p)}")
            add("rerun", f"{stage}: rerun after {data_file} was {damage}", damaged)

    def respelled(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out"))
        p = ctx.dp("convert", "./a.jsonl", "-o", "out")
        if "up to date" not in (p.stdout + p.stderr).lower():
            ctx.flag("rerun", "a.jsonl then ./a.jsonl redid the work")
    add("rerun", "convert a.jsonl then ./a.jsonl is skipped", respelled)

    def input_edit(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out"))
        ctx.write("a.jsonl", jsonl(GOOD_SFT + [{"instruction": "NEWROW", "output": "n"}]))
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out"))
        if "NEWROW" not in ctx.records_text("out"):
            ctx.flag("rerun", "an edited input was not reconverted")
    add("rerun", "convert after the input was edited", input_edit)

    def rowfn_edit(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        fn = "def f(row):\n    return {{'instruction': row['instruction'], 'output': '{}'}}\n"
        ctx.write("rowmod.py", fn.format("FIRSTVERSION"))
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out", "--row-fn", "rowmod.py:f"))
        time.sleep(0.05)
        ctx.write("rowmod.py", fn.format("SECONDVERSION"))
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out", "--row-fn", "rowmod.py:f"))
        if "SECONDVERSION" not in ctx.records_text("out"):
            ctx.flag("rerun", "'up to date' after the row-fn's module was edited")
    add("rerun", "convert after the --row-fn module was edited", rowfn_edit)

    def imported_edit(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.write("helper_mod.py", "VALUE = 'FIRSTVERSION'\n")
        ctx.write("rowmod2.py", "import helper_mod\ndef f(row):\n    return {'instruction': row['instruction'], "
                                "'output': helper_mod.VALUE}\n")
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out", "--row-fn", "rowmod2.py:f"))
        ctx.write("helper_mod.py", "VALUE = 'SECONDVERSION'\n")
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "out", "--row-fn", "rowmod2.py:f"))
        if "SECONDVERSION" not in ctx.records_text("out"):
            ctx.flag("rerun", "'up to date' after a module the row-fn imports was edited")
    add("rerun", "convert after a module imported by the row-fn was edited", imported_edit)


# ---------------------------------------------------------------- family: trl 1.16


def trl_cases() -> None:
    def collate(ctx: Ctx, out: str, padding_free: bool) -> None:
        from datasets import load_from_disk
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        ds = load_from_disk(str(ctx.tmp / out))
        rows = [dict(ds[i]) for i in range(min(4, len(ds)))]
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(rows)
        if padding_free:
            ours_pos = [p for r in rows for p in r.get("position_ids") or range(len(r["input_ids"]))]
            if batch["position_ids"][0].tolist() != ours_pos:
                ctx.flag("load", "trl's padding-free collator does not see our sequence boundaries "
                                 f"(columns {sorted(rows[0])})")
            ours_lab = [lab for r in rows for lab in r["labels"]]
            if batch["labels"][0].tolist() != ours_lab:
                ctx.flag("load", "trl's labels differ from ours")
        else:
            for i, r in enumerate(rows):
                if batch["labels"][i].tolist()[:len(r["labels"])] != r["labels"]:
                    ctx.flag("load", f"trl's labels differ from ours in row {i}")

    def sft(ctx, pack):
        ctx.dp("convert", str(ctx.shared["data"] / "alpaca_en_demo.json"), "--limit", "40", "-o", "rec")
        p = ctx.dp("tokenize", "rec", "-o", "tok", "--max-len", "256", *(["--pack"] if pack else []))
        if ctx.expect_ok(p):
            collate(ctx, "tok", padding_free=pack)
    add("trl", "trl collator takes unpacked sft shards (labels ours)", lambda ctx: sft(ctx, False))
    add("trl", "trl padding-free collator takes packed shards (boundaries ours)", lambda ctx: sft(ctx, True))

    def dpo_layout(ctx):
        ctx.dp("convert", str(ctx.shared["data"] / "dpo_en_demo.json"), "--kind", "preference", "--limit", "8",
               "-o", "rec")
        p = ctx.dp("tokenize", "rec", "-o", "tok", "--max-len", "128")
        if not ctx.expect_ok(p):
            return
        if not (ctx.repo / "dataprep" / "trl_layout.py").is_file():  # (the venv's editable install would find main's)
            ctx.flag("load", "no trl 1.16 preference layout offered: the user re-slices prompt/chosen/rejected by hand")
            return
        code = ("import sys\nfrom dataprep.trl_layout import trl_preference\n"
                "ds = trl_preference(sys.argv[1])\n"
                "assert {'prompt_ids', 'chosen_ids', 'rejected_ids'} <= set(ds.column_names), ds.column_names\n")
        q = subprocess.run([sys.executable, "-c", code, str(ctx.tmp / "tok")], env=ctx.env(), cwd=ctx.tmp, capture_output=True,
                           text=True)
        if q.returncode != 0:
            ctx.flag("load", f"no trl 1.16 preference layout (prompt_ids/chosen_ids/rejected_ids): {last_line(q)}")
    add("trl", "preference shards in trl 1.16's prompt_ids/chosen_ids/rejected_ids layout", dpo_layout)

    def opens(ctx):  # inspect and stats of 0 rows: a summary or one Error: line, never a traceback
        for command in (["inspect", "tok", "--no-color"], ["stats", "tok", "--plot", "lengths.png"]):
            r = ctx.dp(*command)
            if r.returncode != 0 and len(ctx.error_lines(r)) != 1:
                ctx.flag("load", f"{command[0]} of a 0-row output: rc {r.returncode} {last_line(r)}")

    def empty_output(ctx):
        ctx.write("a.jsonl", jsonl(GOOD_SFT))
        ctx.dp("convert", "a.jsonl", "-o", "rec")
        allow = ["--allow-empty"] if ctx.has("tokenize", "--allow-empty") else []
        p = ctx.dp("tokenize", "rec", "-o", "tok", "--max-len", "8", "--overflow", "drop", *allow)
        if p.returncode != 0:
            if not allow:
                ctx.expect_fail(p, ctx.entries())
            return
        if not allow:
            ctx.flag("wrong_exit", "tokenize of 0 rows out exited 0")
        code = "import sys, datasets\nprint(len(datasets.load_from_disk(sys.argv[1])))\n"
        q = subprocess.run([sys.executable, "-c", code, str(ctx.tmp / "tok")], env=ctx.env(), cwd=ctx.tmp, capture_output=True,
                           text=True)
        if q.returncode != 0:
            ctx.flag("load", f"load_from_disk of a 0-row output failed: {last_line(q)}")
        opens(ctx)
    add("trl", "a 0-row tokenize output loads, inspects and stats", empty_output)

    def empty_convert(ctx):
        ctx.write("a.jsonl", '{"instruction": "", "output": ""}\n')
        if not ctx.has("convert", "--allow-empty"):
            raise NotApplicable("convert lacks --allow-empty")
        ctx.expect_ok(ctx.dp("convert", "a.jsonl", "-o", "rec", "--allow-empty"))
        p = ctx.dp("tokenize", "rec", "-o", "tok", "--allow-empty")
        if ctx.expect_ok(p):
            opens(ctx)
    add("trl", "--allow-empty chain of 0 rows loads", empty_convert)


# ---------------------------------------------------------------- shared inputs, running, reporting


class Shared:
    """Inputs several cases read (never written by them), each built on first use: small and
    larger records, a big JSONL, and the real data directory."""

    def __init__(self, repo: Path, base: Path, data: Path):
        self.repo, self.base, self.data = repo, base, data
        self.built: dict[str, str] = {}
        self.lock = threading.Lock()
        base.mkdir(parents=True, exist_ok=True)

    def __getitem__(self, key: str):
        if key == "data":
            return self.data
        with self.lock:
            if key not in self.built:
                self.built[key] = self._build(key)
            return self.built[key]

    def _build(self, key: str) -> str:
        ctx = Ctx(self.repo, self.base, {})
        name = {"records": "small.jsonl", "mid_records": "mid.jsonl"}.get(key, "big.jsonl")
        if not (self.base / name).is_file():
            rows = json.loads((self.data / "alpaca_en_demo.json").read_text(encoding="utf-8")) if key != "records" else []
            content = {"small.jsonl": GOOD_SFT, "mid.jsonl": rows * 3,  # big: ~20k rows, 17 MB
                       "big.jsonl": [dict(r, instruction=f"{r['instruction']} #{i}") for i, r in enumerate(rows * 20)]}
            ctx.write(name, jsonl(content[name]))
        if key == "big_jsonl":
            return str(self.base / name)
        p = ctx.dp("convert", str(self.base / name), "-o", key)
        if p.returncode != 0:
            raise RuntimeError(f"cannot build the shared input {key}: {last_line(p)}")
        return str(self.base / key)


def run_case(repo: Path, root: Path, shared: Shared, index: int, c: Case) -> dict:
    family, name, body = c
    tmp = root / f"case{index:04d}"
    tmp.mkdir()
    ctx = Ctx(repo, tmp, shared)
    start = time.time()
    status = "ran"
    try:
        body(ctx)
    except NotApplicable as exc:
        status, ctx.notes = "n/a", [str(exc)]
    except Exception as exc:  # a harness failure is reported, not hidden
        status, ctx.notes = "harness error", [f"{type(exc).__name__}: {exc}"]
    shutil.rmtree(tmp, ignore_errors=True)
    return {"family": family, "case": name, "status": status, "problems": ctx.problems, "notes": ctx.notes,
            "seconds": round(time.time() - start, 2)}


def summarize(results: list[dict]) -> str:
    families = list(dict.fromkeys(r["family"] for r in results))
    head = ["family", "cases", "n/a", *HEADERS, "cases with a problem"]
    rows = []
    for fam in [*families, "all"]:
        rs = [r for r in results if fam in ("all", r["family"])]
        ran = [r for r in rs if r["status"] == "ran"]
        rows.append([fam, str(len(rs)), str(len(rs) - len(ran)),
                     *[str(sum(1 for r in ran if p in r["problems"])) for p in PROBLEMS],
                     str(sum(1 for r in ran if r["problems"]))])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    errors = [r for r in results if r["status"] == "harness error"]
    if errors:
        lines.append(f"\n{len(errors)} harness errors: " + "; ".join(f"{r['case']}: {r['notes']}" for r in errors))
    return "\n".join(lines)


def compare(before_json: str, after_json: str) -> str:
    """The before/after table of two `--json` files: per family, each problem column `before → after`
    (n/a cases of the older checkout are left out of its counts and listed)."""
    runs = [json.loads(Path(p).read_text()) for p in (before_json, after_json)]
    head = ["family", "cases", "n/a (before)", *HEADERS, "cases with a problem"]
    lines = [f"before: {runs[0]['repo']} @ {runs[0]['commit']}; after: {runs[1]['repo']} @ {runs[1]['commit']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    families = list(dict.fromkeys(r["family"] for r in runs[1]["results"]))
    for fam in [*families, "all"]:
        picked = [[r for r in run["results"] if fam in ("all", r["family"])] for run in runs]
        ran = [[r for r in rs if r["status"] == "ran"] for rs in picked]
        cells = [" → ".join(str(sum(1 for r in rs if p in r["problems"])) for rs in ran) for p in PROBLEMS]
        with_problem = " → ".join(str(sum(1 for r in rs if r["problems"])) for rs in ran)
        lines.append(f"| {fam} | {len(picked[1])} | {len(picked[0]) - len(ran[0])} | {' | '.join(cells)} | "
                     f"{with_problem} |")
    for label, run in zip(("before", "after"), runs, strict=True):
        errors = [r["case"] for r in run["results"] if r["status"] == "harness error"]
        if errors:
            lines.append(f"\nharness errors ({label}): {'; '.join(errors)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(HERE), help="the checkout to test (PYTHONPATH of the CLI)")
    ap.add_argument("--data", default=str(HERE / ".." / "shared" / "data"))
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--only", help="comma list of families")
    ap.add_argument("--match", action="append", help="only cases whose name contains this (repeatable)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--problems", action="store_true", help="also print every case with a problem")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"),
                    help="print the before/after table of two --json files and exit")
    a = ap.parse_args()
    if a.compare:
        print(compare(*a.compare))
        return
    data = Path(a.data).resolve()
    malformed_cases()
    option_cases()
    recipe_cases()
    real_cases(data)
    kill_cases()
    concurrent_cases()
    fulldisk_cases()
    rerun_cases()
    trl_cases()
    cases = [c for c in CASES if (not a.only or c[0] in a.only.split(",")) and (not a.match or any(m in c[1] for m in a.match))]
    if a.list:
        for fam, n in Counter(c[0] for c in cases).items():
            print(f"{fam}: {n}")
        print(f"all: {len(cases)}")
        return
    repo = Path(a.repo).resolve()
    with tempfile.TemporaryDirectory(prefix="hardening-") as root_name:
        root = Path(root_name)
        shared = Shared(repo, root / "shared", data)
        results: list[dict] = []
        start = time.time()
        with ThreadPoolExecutor(a.jobs) as pool:
            futures = [pool.submit(run_case, repo, root, shared, i, c) for i, c in enumerate(cases)]
            for i, f in enumerate(futures):
                results.append(f.result())
                r = results[-1]
                mark = "n/a" if r["status"] == "n/a" else ",".join(r["problems"]) or "ok"
                print(f"[{i + 1}/{len(cases)}] {r['family']}: {r['case']}: {mark} ({r['seconds']}s)", flush=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{repo} @ {commit}: {len(results)} cases in {time.time() - start:.0f}s\n")
    print(summarize(results))
    if a.problems:
        for r in results:
            if r["problems"]:
                print(f"- {r['family']}: {r['case']}: {r['problems']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"repo": str(repo), "commit": commit, "results": results}, indent=1,
                                           ensure_ascii=False))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
