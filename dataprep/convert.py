"""Raw rows → canonical records (sft, chat, text, classify, preference) plus rejects.

`convert_frame` is the pure per-batch step: a polars frame with `source`/`row` columns in,
(records frame, reject dicts) out, no global state, so an engine can map it over
partitions. `convert` is the whole stage: stream the sources in batches through
`convert_frame`, append each batch to the records file, then write rejects and the
manifest, all inside one atomic output directory; skip when the fingerprint matches.

String work (templates, checks) is vectorised with polars expressions; nested data
(conversations, preference pairs, label lists) goes through small Python functions.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.io import sha256_path
from dataprep.records import KINDS, SCHEMAS
from dataprep.sources import frame_from_rows, iter_batches
from dataprep.stage import Manifest, Outcome, Rejects, Timer, Workspace, run_stage
from dataprep.templates import TEMPLATES, Template, get_template, prompt_expr

FORMATS = ("parquet", "jsonl")
PROVENANCE = ("source", "row")

# kind -> (required fields, optional fields) that a source must provide
KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sft": (("instruction", "output"), ("input",)),
    "chat": (("messages",), ("tools", "system")),
    "text": (("text",), ()),
    "classify": (("text", "labels"), ()),
    "preference": (("chosen", "rejected"), ("prompt", "input", "system")),
}

# canonical field -> source column names tried in order (case-insensitive) when not mapped
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "messages": ("messages", "conversations", "conversation"),
    "tools": ("tools", "functions"),
    "system": ("system", "system_prompt"),
    "text": ("text", "content", "document", "sentence", "comment_text"),
    "labels": ("labels", "label", "genres", "tags", "categories"),
    "prompt": ("prompt", "conversations", "messages", "question", "instruction"),
    "chosen": ("chosen", "response_chosen", "chosen_response"),
    "rejected": ("rejected", "response_rejected", "rejected_response"),
}

# sharegpt `from` and OpenAI `role` values -> our roles
ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "bot": "assistant",
    "function_call": "assistant",  # the call text stays the content, unchanged
    "system": "system",
    "observation": "tool", "tool": "tool", "function": "tool",
}


# ---------------------------------------------------------------------------------------
# column mapping
# ---------------------------------------------------------------------------------------

def resolve_columns(columns: list[str], kind: str, mapping: dict[str, str] | None = None,
                    template: Template | None = None) -> dict[str, str]:
    """canonical field -> source column: explicit `mapping` first, then the template's and the default names."""
    required, optional = KIND_FIELDS[kind]
    if kind == "sft" and template is not None and "instruction" not in template.fields():
        required, optional = ("output",), ("instruction", "input")
    fields = required + optional
    mapping = dict(mapping or {})
    listed = ", ".join(c for c in columns if c not in PROVENANCE)
    for field, column in mapping.items():
        if field not in fields:
            raise DataprepError(f"--map {field}=...: {kind} records have no field {field}; fields are {', '.join(fields)}")
        if column not in columns:
            raise DataprepError(f"--map {field}={column}: no column {column!r}; columns are: {listed}")
    lower = {c.lower(): c for c in reversed(columns) if c not in PROVENANCE}
    used = set(mapping.values())
    for field in fields:
        if field in mapping:
            continue
        names = (template.aliases.get(field, ()) if template else ()) + DEFAULT_ALIASES.get(field, (field,))
        found = next((lower[n.lower()] for n in names if n.lower() in lower and lower[n.lower()] not in used), None)
        if found is not None:
            mapping[field] = found
            used.add(found)
        elif field in required:
            guess = guess_kind(columns)
            hint = f" (these columns look like --kind {guess})" if guess and guess != kind else ""
            raise DataprepError(
                f"no column for {kind} field {field!r}; columns are: {listed}; pass --map {field}=COLUMN{hint}"
            )
    return mapping


def guess_kind(columns: list[str]) -> str | None:
    """The record kind a set of column names suggests, for error hints (never applied silently)."""
    names = {c.lower() for c in columns}
    if {"chosen", "rejected"} <= names:
        return "preference"
    if names & {"messages", "conversations", "conversation"}:
        return "chat"
    if names & set(DEFAULT_ALIASES["instruction"]) and names & set(DEFAULT_ALIASES["output"]):
        return "sft"
    if names & set(DEFAULT_ALIASES["text"]):
        return "classify" if names & set(DEFAULT_ALIASES["labels"]) else "text"
    return None


# ---------------------------------------------------------------------------------------
# the pure per-batch conversion
# ---------------------------------------------------------------------------------------

def convert_frame(frame, kind: str, *, template: str | Template | None = None, mapping: dict[str, str] | None = None,
                  row_fn: Callable[[dict], dict] | None = None, label_names: list[str] | None = None,
                  label_sep: str = ","):
    """Convert one frame (with `source`/`row` columns) into canonical records of `kind`.

    Returns (records, rejects): a polars frame with the columns of records.SCHEMAS[kind] and
    a list of {source, row, reason, detail}. Every input row is in exactly one of them.
    Raises DataprepError for problems that concern the whole input (a missing column, an
    unknown template field).
    """
    import polars as pl

    if kind not in KINDS:
        raise DataprepError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    tmpl = _template_for(kind, template)
    rejects: list[dict] = []
    if row_fn is not None:
        frame, rejects = apply_row_fn(frame, row_fn, kind)
    if tmpl is not None:
        _check_template_fields(tmpl, frame.columns)
    cols = resolve_columns(frame.columns, kind, mapping, tmpl)
    work = frame.select([pl.col(src).alias(field) for field, src in cols.items()] + [pl.col(c) for c in PROVENANCE])
    if kind == "sft":
        records, more = _sft(work, frame, tmpl)
    elif kind == "text":
        records, more = _checked(work, ("text",))
    elif kind == "classify":
        records, more = _classify(work, label_names, label_sep)
    elif kind == "chat":
        records, more = _per_row(work, _chat_record, kind)
    else:
        records, more = _per_row(work, _preference_record, kind)
    return _cast(records, kind), rejects + more


def _check_template_fields(tmpl: Template, columns: list[str]) -> None:
    missing = sorted(tmpl.fields() - {"instruction", "input", "output"} - set(columns))
    if missing:
        listed = ", ".join(c for c in columns if c not in PROVENANCE)
        raise DataprepError(f"template field {{{missing[0]}}} is not a column; columns are: {listed}; "
                            "use {instruction}, {input}, {output} or a column name")


def _template_for(kind: str, template: str | Template | None) -> Template | None:
    if kind != "sft":
        if template is not None:
            raise DataprepError(f"--template applies to --kind sft only, not {kind}; drop --template")
        return None
    return get_template(template) or TEMPLATES["alpaca"]


def polars_schema(kind: str) -> dict:
    """records.SCHEMAS[kind] as polars dtypes (pl.from_arrow would import pandas, ~1.5 s)."""
    import polars as pl
    import pyarrow as pa

    def dtype(t: pa.DataType):
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pl.List(dtype(t.value_type))
        if pa.types.is_struct(t):
            return pl.Struct({t.field(i).name: dtype(t.field(i).type) for i in range(t.num_fields)})
        return {pa.string(): pl.String, pa.int64(): pl.Int64, pa.int32(): pl.Int32, pa.float32(): pl.Float32}[t]

    return {f.name: dtype(f.type) for f in SCHEMAS[kind]}


def _cast(records, kind: str):
    """Select and type the canonical columns exactly as records.SCHEMAS says."""
    schema = polars_schema(kind)
    return records.select(list(schema)).cast(schema)


def _no_reason():
    import polars as pl

    return pl.lit(None, dtype=pl.String)


def _as_text(frame, field: str):
    """(frame with `field` as String, reason expression): null → missing, blank → empty, non-string → non-string."""
    import polars as pl

    col = frame[field]
    if col.dtype == pl.String:
        reason = pl.when(pl.col(field).is_null()).then(pl.lit(f"missing {field}")).when(
            ~pl.col(field).str.contains(r"\S")).then(pl.lit(f"empty {field}")).otherwise(_no_reason())
        return frame, reason
    values = col.to_list()
    bad = [v is not None and not isinstance(v, str) for v in values]
    frame = frame.with_columns(
        pl.Series(field, [v if isinstance(v, str) else None for v in values], dtype=pl.String),
        pl.Series(f"_bad_{field}", bad, dtype=pl.Boolean),
    )
    reason = pl.when(pl.col(f"_bad_{field}")).then(pl.lit(f"non-string {field}")).when(
        pl.col(field).is_null()).then(pl.lit(f"missing {field}")).when(
        ~pl.col(field).str.contains(r"\S")).then(pl.lit(f"empty {field}")).otherwise(_no_reason())
    return frame, reason


def _checked(frame, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    """Split `frame` into rows whose text fields are valid and reject dicts; optional fields may be null."""
    import polars as pl

    reasons = []
    for field in required + optional:
        if field not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(field))
        frame, reason = _as_text(frame, field)
        if field in optional:  # a missing or blank optional field is fine; a wrong type is not
            reason = pl.when(pl.col(field).is_null() | (~pl.col(field).str.contains(r"\S"))).then(
                _no_reason()).otherwise(reason)
        reasons.append(reason)
    frame = frame.with_columns(pl.coalesce(reasons).alias("_reason"))
    return _split_rejects(frame)


def _split_rejects(frame):
    """(rows whose `_reason` is null, without helper columns; reject dicts for the others)."""
    import polars as pl

    helpers = [c for c in frame.columns if c.startswith("_")]
    if frame["_reason"].null_count() == frame.height:  # nothing rejected: skip copying every string
        return frame.drop(helpers), []
    bad = frame.filter(pl.col("_reason").is_not_null())
    detail = pl.col("_detail") if "_detail" in frame.columns else pl.lit(None, dtype=pl.String)
    rejects = [{"source": s, "row": r, "reason": why, "detail": d}
               for s, r, why, d in bad.select("source", "row", "_reason", detail).iter_rows()]
    return frame.filter(pl.col("_reason").is_null()).drop(helpers), rejects


def _sft(work, frame, tmpl: Template):
    """instruction/input/output → prompt (template, vectorised) and completion (prefix + output)."""
    import polars as pl

    required = ("instruction", "output") if "instruction" in tmpl.fields() else ("output",)
    good, rejects = _checked(work, required, tuple(f for f in ("instruction", "input") if f not in required))
    extra = sorted(tmpl.fields() - {"instruction", "input", "output"})
    if extra:  # raw source columns used by a custom template, matched back by provenance
        raw = frame.select([pl.col(c).cast(pl.String) for c in extra] + [pl.col(c) for c in PROVENANCE])
        good = good.join(raw, on=list(PROVENANCE), how="left", maintain_order="left")
    good = good.with_columns(pl.col("input").fill_null(""))
    records = good.with_columns(
        prompt_expr(tmpl, pl.col("input") != "").alias("prompt"),
        (pl.lit(tmpl.completion_prefix) + pl.col("output")).alias("completion")
        if tmpl.completion_prefix else pl.col("output").alias("completion"),
    )
    return records, rejects


# ---------------------------------------------------------------------------------------
# classify: labels from comma-separated strings, lists, or ids into a names file
# ---------------------------------------------------------------------------------------

def read_label_names(path: str) -> list[str]:
    """One label name a line (GoEmotions `emotions.txt`); line i is label id i."""
    p = Path(path)
    if not p.is_file():
        raise DataprepError(f"label names file {path} does not exist; pass a file with one label name a line")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataprepError(f"label names file {path} is empty; write one label name a line")
    return names


def parse_labels(value: Any, names: list[str] | None = None, sep: str = ",") -> tuple[list[str] | None, str | None]:
    """(label names, None) or (None, reject reason). Ids (ints or digit strings) index `names`."""
    if value is None:
        return None, "missing labels"
    if isinstance(value, str):
        tokens: list = [t.strip() for t in value.split(sep)]
    elif isinstance(value, (list, tuple)):
        tokens = [t.strip() if isinstance(t, str) else t for t in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        tokens = [value]
    else:
        return None, "non-string labels"
    labels: list[str] = []
    for t in tokens:
        if t == "" or t is None:
            continue
        if isinstance(t, bool) or not isinstance(t, (str, int)):
            return None, "non-string labels"
        if names is not None:
            if isinstance(t, int) or t.isdigit():
                i = int(t)
                if not 0 <= i < len(names):
                    return None, "unknown label id"
                t = names[i]
            elif t not in names:
                return None, "unknown label"
        t = str(t)
        if t not in labels:
            labels.append(t)
    return (labels, None) if labels else (None, "empty labels")


def _classify(work, label_names: list[str] | None, sep: str):
    import polars as pl

    good, rejects = _checked(work, ("text",))
    values = good["labels"].to_list()
    parsed = [parse_labels(v, label_names, sep) for v in values]
    good = good.with_columns(
        pl.Series("labels", [p[0] for p in parsed], dtype=pl.List(pl.String)),
        pl.Series("_reason", [p[1] for p in parsed], dtype=pl.String),
        # the raw labels of a rejected row, so the reject says which id or name was wrong
        pl.Series("_detail", [None if p[1] is None or v is None else repr(v)[:200] for p, v in zip(parsed, values, strict=True)],
                  dtype=pl.String),
    )
    good, more = _split_rejects(good)
    return good, rejects + more


# ---------------------------------------------------------------------------------------
# chat and preference: nested values, one Python call per row
# ---------------------------------------------------------------------------------------

class RowError(ValueError):
    """A row that cannot become a record; the message is the reject reason."""


def _per_row(work, make: Callable[[dict], dict], kind: str):
    import polars as pl
    from tqdm import tqdm

    fields = [c for c in work.columns if c not in PROVENANCE]
    out, rejects = [], []
    rows = work.iter_rows(named=True)
    for row in tqdm(rows, total=work.height, desc=f"convert {kind}", unit="row", disable=None, leave=False):
        try:
            rec = make({f: row[f] for f in fields})
        except RowError as exc:
            rejects.append({"source": row["source"], "row": row["row"], "reason": str(exc), "detail": None})
            continue
        out.append({**rec, "source": row["source"], "row": row["row"]})
    return pl.DataFrame(out, schema=polars_schema(kind)), rejects


def _maybe_json(value: Any, field: str) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RowError(f"{field} is not valid JSON") from None
    return value


def to_message(turn: Any) -> dict[str, str]:
    """{role, content} from a sharegpt {from, value} or OpenAI {role, content[, tool_calls]} turn."""
    if not isinstance(turn, dict):
        raise RowError("message is not an object")
    raw_role = turn.get("role", turn.get("from"))
    role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise RowError("unknown role")
    content = turn["content"] if "content" in turn else turn.get("value")
    if content is None and turn.get("tool_calls"):  # an OpenAI assistant turn that only calls tools
        content = json.dumps(turn["tool_calls"], ensure_ascii=False)
    if content is None:
        raise RowError("missing message content")
    if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)  # OpenAI content parts, text only
    if not isinstance(content, str):
        raise RowError("non-string message content")
    return {"role": role, "content": content}


def to_messages(value: Any, field: str = "messages") -> list[dict[str, str]]:
    value = _maybe_json(value, field)
    if value is None:
        raise RowError(f"missing {field}")
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{field} is not a list")
    if not value:
        raise RowError(f"empty {field}")
    return [to_message(t) for t in value]


def _with_system(messages: list[dict[str, str]], system: Any) -> list[dict[str, str]]:
    """Prepend a separate `system` column (LLaMA-Factory sharegpt) unless the turns start with one."""
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}] + messages
    return messages


def _chat_record(row: dict) -> dict:
    messages = _with_system(to_messages(row["messages"]), row.get("system"))
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise RowError("no assistant turn")
    return {"messages": messages, "tools": _tools_json(row.get("tools"))}


def _tools_json(tools: Any) -> str | None:
    if tools is None or (isinstance(tools, str) and not tools.strip()):
        return None
    if isinstance(tools, str):
        try:
            json.loads(tools)
        except json.JSONDecodeError:
            raise RowError("tools is not valid JSON") from None
        return tools
    return json.dumps(tools, ensure_ascii=False)


def _answer(value: Any, field: str) -> str | list[dict[str, str]]:
    """A preference side: plain text, one {from, value}/{role, content} turn (its text), or a transcript."""
    value = _maybe_json(value, field)
    if value is None:
        raise RowError(f"missing {field}")
    if isinstance(value, dict):
        return to_message(value)["content"]
    if isinstance(value, (list, tuple)):
        return to_messages(value, field)
    if not isinstance(value, str):
        raise RowError(f"non-string {field}")
    return value


def _preference_record(row: dict) -> dict:
    chosen, rejected = _answer(row["chosen"], "chosen"), _answer(row["rejected"], "rejected")
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        messages, chosen, rejected = split_shared_prompt(chosen, rejected)
    else:
        prompt = _maybe_json(prompt, "prompt")
        messages = to_messages(prompt, "prompt") if isinstance(prompt, (list, tuple)) else None
        if messages is None:
            if not isinstance(prompt, str):
                raise RowError("non-string prompt")
            extra = row.get("input")
            if isinstance(extra, str) and extra.strip():  # alpaca-style pairs: instruction + "\n" + input
                prompt = f"{prompt}\n{extra}"
            messages = [{"role": "user", "content": prompt}]
        chosen, rejected = _last_text(chosen, "chosen"), _last_text(rejected, "rejected")
    messages = _with_system(messages, row.get("system"))
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise RowError("no user turn in prompt")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RowError(f"empty {name}")
    if chosen == rejected:
        raise RowError("chosen equals rejected")
    return {"prompt": users[-1], "messages": messages, "chosen": chosen, "rejected": rejected}


def _last_text(side: str | list[dict[str, str]], name: str) -> str:
    if isinstance(side, str):
        return side
    if len(side) != 1 or side[0]["role"] != "assistant":
        raise RowError(f"{name} is not one assistant turn")
    return side[0]["content"]


HUMAN, ASSISTANT = "Human:", "Assistant:"


def split_shared_prompt(chosen, rejected) -> tuple[list[dict[str, str]], str, str]:
    """Full transcripts → (prompt messages, chosen reply, rejected reply); the shared beginning is the prompt.

    Message lists share leading turns and differ in one final assistant turn. Strings in the
    `\\n\\nHuman: ...\\n\\nAssistant: ...` form share text up to the last `Assistant:` marker.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise RowError("chosen and rejected share no prompt")
        return chosen[:n], _last_text(chosen[n:], "chosen"), _last_text(rejected[n:], "rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        cut = chosen.rfind(ASSISTANT, 0, n)
        if cut < 0:
            raise RowError("chosen and rejected share no prompt")
        cut += len(ASSISTANT)
        return _transcript_messages(chosen[:cut]), chosen[cut:].strip(), rejected[cut:].strip()
    raise RowError("chosen and rejected are of different shapes")


def _transcript_messages(text: str) -> list[dict[str, str]]:
    """`Human: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:` → user/assistant messages (last, empty, dropped)."""
    import re

    parts = re.split(r"(?:^|\n\n)(Human|Assistant):", text)
    messages = []
    for who, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if who == "Human" else "assistant", "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    if not messages:
        raise RowError("chosen and rejected share no prompt")
    return messages


# ---------------------------------------------------------------------------------------
# --row-fn: a user function, row dict → canonical fields
# ---------------------------------------------------------------------------------------

def load_row_fn(spec: str) -> Callable[[dict], dict]:
    """`module:function` (importable from the working directory) or `path/to/file.py:function`."""
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise DataprepError(f"--row-fn {spec}: write it as module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise DataprepError(f"--row-fn {spec}: file {module_name} does not exist; check the path")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except DataprepError:
        raise
    except Exception as exc:  # the user's module failed to import
        raise DataprepError(f"--row-fn {spec}: cannot import {module_name}: {exc}; check the module") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise DataprepError(f"--row-fn {spec}: {module_name} has no function {func_name}; check the name")
    return fn


def row_fn_file(spec: str) -> str | None:
    """The source file of a row function (its hash goes into the fingerprint), if it can be found."""
    module_name = spec.rpartition(":")[0]
    if module_name.endswith(".py"):
        return module_name
    found = importlib.util.find_spec(module_name)
    return found.origin if found and found.origin and Path(found.origin).is_file() else None


def apply_row_fn(frame, fn: Callable[[dict], dict], kind: str, batch_size: int = 1000):
    """Call `fn` on every row, in batches; exceptions and bad results become rejects.

    Returns (frame of the canonical fields fn returned + source/row, rejects).
    """
    import polars as pl
    from tqdm import tqdm

    required, optional = KIND_FIELDS[kind]
    fields = set(required + optional)
    out, provenance, rejects = [], [], []
    inputs = [c for c in frame.columns if c not in PROVENANCE]
    with tqdm(total=frame.height, desc="row-fn", unit="row", disable=None, leave=False) as bar:
        for batch in frame.iter_slices(batch_size):
            for row in batch.iter_rows(named=True):
                reason = None
                try:
                    rec = fn({c: row[c] for c in inputs})
                except Exception as exc:  # the user's code: any failure is this row's reject
                    reason = f"row-fn error: {str(exc) or type(exc).__name__}"[:200]
                else:
                    if not isinstance(rec, dict):
                        reason = f"bad row-fn result: {type(rec).__name__}, not a dict"
                    elif set(rec) - fields:
                        reason = f"bad row-fn result: unknown field {sorted(set(rec) - fields)[0]}"
                if reason:
                    rejects.append({"source": row["source"], "row": row["row"], "reason": reason, "detail": None})
                else:
                    out.append(rec)
                    provenance.append((row["source"], row["row"]))
            bar.update(batch.height)
    result = frame_from_rows(out, "row-fn output")
    result = result.with_columns(
        [pl.lit(None, dtype=pl.String).alias(f) for f in required if f not in result.columns]
        + [pl.Series("source", [p[0] for p in provenance], dtype=pl.String),
           pl.Series("row", [p[1] for p in provenance], dtype=pl.Int64)]
    )
    return result, rejects


# ---------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------

def convert(sources: str | list[str], out: str, *, kind: str = "sft", template: str | None = None,
            mapping: dict[str, str] | None = None, row_fn: str | Callable | None = None, fmt: str = "parquet",
            force: bool = False, label_names: str | None = None, label_sep: str = ",", batch_rows: int = 50_000,
            limit: int | None = None, **reader_options: Any) -> Manifest:
    """Convert `sources` into canonical records of `kind` in directory `out`.

    Writes OUT/records.parquet (or .jsonl), OUT/rejects.jsonl and OUT/manifest.json
    atomically (dataprep.stage), and returns the manifest. Works in batches of `batch_rows` rows (CSV and Parquet
    are also read in batches), so memory does not grow with the input. If OUT already holds a conversion with the same
    fingerprint (inputs' contents, options, version) the work is skipped and the existing
    manifest is returned with `skipped` set, unless `force`. `limit` reads only the first
    `limit` rows of the input (to try a recipe on a slice); the rest is not read at all.
    """
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if kind not in KINDS:
        raise DataprepError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise DataprepError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    tmpl = _template_for(kind, template)
    fn = load_row_fn(row_fn) if isinstance(row_fn, str) else row_fn
    names = read_label_names(label_names) if label_names else None
    if label_names and kind != "classify":
        raise DataprepError("--label-names applies to --kind classify only; drop it")
    for p in sources:
        if not str(p).startswith("hub:") and not Path(p).exists():
            raise DataprepError(f"input {p} does not exist; check the path")
    config = _config(kind, tmpl, mapping, row_fn, fmt, label_names, label_sep, reader_options)
    if limit is not None:
        config["limit"] = limit

    def build(ws: Workspace) -> Outcome:
        batches = iter_batches([str(p) for p in sources], batch_rows=batch_rows, **reader_options)
        if limit is not None:
            batches = _first_rows(batches, limit)
        summary = _convert_batches(batches, ws.out / f"records.{fmt}", kind, ws.timer, template=tmpl, mapping=mapping,
                                   row_fn=fn, label_names=names, label_sep=label_sep)
        if summary.n_in == 0:
            raise DataprepError(f"{', '.join(map(str, sources))}: no rows to convert; check the input (and --no-header)")
        rejects = Rejects()
        rejects.extend(summary.rejects)
        details: dict[str, Any] = {"kind": kind, "format": fmt, "columns": list(SCHEMAS[kind].names)}
        if kind == "classify":
            details["label_names"] = names or sorted(summary.labels)
            details["label_counts"] = {name: summary.labels.get(name, 0) for name in details["label_names"]}
        details["length_stats"] = summarize_lengths(summary.lengths)
        return Outcome(summary.n_in, summary.n_out, details, rejects=rejects)

    return run_stage("convert", out, inputs=[str(p) for p in sources], config=config, build=build,
                     data_files=(f"records.{fmt}",), force=force)


def _first_rows(batches, limit: int):
    """The batches cut to `limit` rows in all."""
    left = limit
    for batch in batches:
        yield batch.head(left)
        left -= batch.height
        if left <= 0:  # stop before the next batch (or file) is read
            return


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
    """Options for reading sources (see sources.read_table); a recipe's convert section may set them."""

    delimiter: str | None = None
    encoding: str | None = None
    has_header: bool = True
    quote_char: str | None = "auto"
    split: str | None = None


convert.config_class = ReaderOptions  # recipe schema for **reader_options (dataprep.recipe)


@dataclasses.dataclass
class _Summary:
    """What the batches add up to: row counts, rejects, text lengths, label frequencies."""

    n_in: int = 0
    n_out: int = 0
    rejects: list[dict] = dataclasses.field(default_factory=list)
    lengths: list = dataclasses.field(default_factory=list)
    labels: Counter = dataclasses.field(default_factory=Counter)


def _convert_batches(batches, path: Path, kind: str, timer: Timer, **options: Any) -> _Summary:
    """Convert and write batch by batch, so memory stays bounded by the batch size."""
    from tqdm import tqdm

    summary = _Summary()
    writer = RecordWriter(path, kind)
    with writer, tqdm(desc=f"convert {kind}", unit="row", disable=None, leave=False) as bar:
        while True:
            with timer("read"):
                frame = next(batches, None)
            if frame is None:
                break
            with timer("convert"):
                records, rejects = convert_frame(frame, kind, **options)
                summary.lengths.append(records.select(**length_exprs(kind)))
                if kind == "classify":
                    summary.labels.update(records["labels"].explode().drop_nulls().to_list())
            with timer("write"):
                writer.write(records)
            summary.n_in += frame.height
            summary.n_out += records.height
            summary.rejects.extend(rejects)
            bar.update(frame.height)
    return summary


class RecordWriter:
    """Appends record batches to OUT/records.parquet (one row group per batch) or records.jsonl."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        self.schema = SCHEMAS[kind]
        self._parquet = None
        self._fh = None

    def __enter__(self) -> RecordWriter:
        if self.path.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self.path, self.schema)
        else:
            self._fh = open(self.path, "wb")
        return self

    def write(self, records) -> None:
        if self._parquet is not None:
            self._parquet.write_table(records.to_arrow().cast(self.schema))
        elif records.height:
            records.write_ndjson(self._fh)

    def __exit__(self, *exc: Any) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._fh is not None:
            self._fh.close()


STAT_COLUMNS = {"sft": ("prompt", "completion"), "text": ("text",), "classify": ("text",),
                "preference": ("prompt", "chosen", "rejected")}


def length_exprs(kind: str) -> dict:
    """Per-record lengths to summarise: characters of the text columns; chat: turns and characters."""
    import polars as pl

    if kind == "chat":
        return {"turns": pl.col("messages").list.len(),
                "chars": pl.col("messages").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()}
    return {c: pl.col(c).str.len_chars() for c in STAT_COLUMNS[kind]}


def summarize_lengths(frames: list) -> dict[str, dict[str, float]]:
    """min, mean, p50, p95, max of each length column, to help choose a max length before tokenizing."""
    import polars as pl

    lengths = pl.concat(frames) if frames else pl.DataFrame()
    if lengths.height == 0:
        return {}
    return {name: {"min": int(lengths[name].min()), "mean": round(float(lengths[name].mean()), 1),
                   "p50": float(lengths[name].quantile(0.5)), "p95": float(lengths[name].quantile(0.95)),
                   "max": int(lengths[name].max())} for name in lengths.columns}


def _config(kind, tmpl, mapping, row_fn, fmt, label_names, label_sep, reader_options) -> dict:
    config: dict[str, Any] = {"kind": kind, "format": fmt, "mapping": dict(sorted((mapping or {}).items())),
                              "reader": {k: v for k, v in sorted(reader_options.items()) if v is not None}}
    if tmpl is not None:
        config["template"] = tmpl.as_config()
    if row_fn is not None:
        spec = row_fn if isinstance(row_fn, str) else f"{row_fn.__module__}:{row_fn.__qualname__}"
        path = row_fn_file(spec) if isinstance(row_fn, str) else getattr(sys.modules.get(row_fn.__module__), "__file__", None)
        config["row_fn"] = {"name": spec, "sha256": sha256_path(path) if path else None}
    if kind == "classify":
        config["label_sep"] = label_sep
        if label_names:
            config["label_names"] = {"path": label_names, "sha256": sha256_path(label_names)}
    return config
