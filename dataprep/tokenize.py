"""Canonical records -> token shards with exact training masks.

The mask comes from character positions, never from searching token ids: a record is
rendered to ONE string, tokenized ONCE, and every token that starts before the first
completion character (a token straddling the boundary counts as prompt) gets label -100.
So a template whose last word tokenizes differently alone and in context (`###답변:`,
`LaTeX:` + ` \\frac`, `### Response:\\n`) cannot shift the mask. Chat records are rendered
with the tokenizer's chat template and the assistant contents are found as character spans
in the rendered text; the end-of-turn token the template adds after an assistant turn is
trained on.

`tokenize_batch` is the per-batch work: a pure function of (batch, tokenizer, options), so
an engine can map it over partitions. `tokenize` is the stage: it streams record batches
through it, optionally packs (dataprep.packing), and writes a `datasets` save_to_disk
directory plus manifest.json and rejects.jsonl, atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from dataprep import io
from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX, infer_kind
from dataprep.stage import Manifest, Outcome, Rejects, Timer, Workspace, read_manifest, run_stage

OVERFLOW = ("truncate-prompt", "truncate", "drop", "error")
TRAIN_ON = ("all-assistant", "last-assistant")
# Existing special tokens that can serve as padding (never predicted by a chat model).
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<unk>")
ADDED_PAD = "<|pad|>"
# Tokens chat templates put right after an assistant message to end the turn; trained on, since
# the model must learn to emit them (a header such as <|im_start|> that follows is not).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")
REQUIRED = {
    "sft": ("prompt", "completion"),
    "chat": ("messages",),
    "text": ("text",),
    "classify": ("text", "labels"),
    "preference": ("prompt", "chosen", "rejected"),
}


@dataclass(frozen=True)
class TokenizeOptions:
    """What decides the token ids and labels (all of it goes into the fingerprint)."""

    max_len: int = 2048
    overflow: str = "truncate-prompt"
    train_on: str = "all-assistant"
    train_on_inputs: bool = False
    pack: bool = False

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW:
            raise DataprepError(f"--overflow {self.overflow!r} is not one of {', '.join(OVERFLOW)}")
        if self.train_on not in TRAIN_ON:
            raise DataprepError(f"--train-on {self.train_on!r} is not one of {', '.join(TRAIN_ON)}")
        if self.max_len < 2:
            raise DataprepError(f"--max-len {self.max_len} is too small; pass at least 2 (e.g. 2048)")


@dataclass(frozen=True)
class Specials:
    """The special-token ids the shards rely on, and how the pad id was chosen."""

    eos_id: int | None
    pad_id: int
    pad_token: str
    pad_source: str  # "tokenizer" | "existing special token" | "added (resize embeddings)"


# ---------------------------------------------------------------- special tokens


def choose_pad(tok) -> Specials:
    """Pick a pad id that is never EOS, so padding can never hide the EOS label (trl #976).

    Keeps the tokenizer's own pad if it differs from EOS; else reuses an existing special
    token the model never has to emit (SmolLM2: `<|endoftext|>`, id 0); adds `<|pad|>`
    only if nothing fits (the model's embeddings must then be resized: recorded).
    """
    eos = tok.eos_token_id
    if tok.pad_token_id is not None and tok.pad_token_id != eos:
        return Specials(eos, tok.pad_token_id, tok.pad_token, "tokenizer")
    vocab = tok.get_vocab()
    avoid = {eos, tok.bos_token_id}
    for name in PAD_CANDIDATES:
        if name in vocab and vocab[name] not in avoid:
            tok.pad_token = name
            return Specials(eos, vocab[name], name, "existing special token")
    tok.add_special_tokens({"pad_token": ADDED_PAD})
    return Specials(eos, tok.pad_token_id, ADDED_PAD, "added (resize embeddings)")


# ---------------------------------------------------------------- masks


def first_trained_token(enc, boundary: int, text_len: int) -> int:
    """Index of the first token that starts at or after character `boundary`.

    A token straddling the boundary starts before it, so it counts as prompt. Characters
    no token covers (e.g. whitespace a BERT tokenizer drops) are skipped.
    """
    for char in range(boundary, text_len):
        t = enc.char_to_token(char)
        if t is not None:
            return t + 1 if enc.token_to_chars(t)[0] < boundary else t
    return len(enc.ids)


def span_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """True for each token whose first character lies inside one of the (sorted) spans."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    mask = np.zeros(len(offsets), dtype=bool)
    for s, e in spans:
        mask |= (starts >= s) & (starts < e) & (ends > starts)
    return mask


def fit(ids: list[int], k: int, max_len: int, overflow: str, where: str = "a row") -> tuple[list[int], int, str | None]:
    """Apply the overflow policy to `ids` whose first `k` tokens are prompt.

    Returns (ids, k, event) where event is None, a truncation kind, or "too_long" (drop).
    """
    n = len(ids)
    if n <= max_len:
        return ids, k, None
    if overflow == "drop":
        return ids, k, "too_long"
    if overflow == "error":
        raise DataprepError(
            f"{where} has {n} tokens, more than --max-len {max_len}; raise --max-len or pass --overflow "
            "truncate-prompt|truncate|drop"
        )
    if overflow == "truncate":
        return ids[:max_len], min(k, max_len), "truncated_end"
    if n - k <= max_len:  # truncate-prompt: cut the prompt from the left, keep the completion whole
        return ids[n - max_len :], k - (n - max_len), "truncated_prompt"
    # The completion alone is too long: keep the prompt's end (at most half the budget, so the
    # answer stays conditioned on its question) and cut the completion's end.
    kept = min(k, max_len // 2)
    return ids[k - kept : k - kept + max_len], kept, "truncated_completion"


def _labels(ids: list[int], k: int, train_on_inputs: bool) -> list[int]:
    return list(ids) if train_on_inputs else [IGNORE_INDEX] * k + ids[k:]


def _with_eos(ids: list[int], eos_id: int | None) -> list[int]:
    return ids + [eos_id] if eos_id is not None and (not ids or ids[-1] != eos_id) else ids


def encode_batch(tok, texts: list[str], add_special_tokens: bool) -> list:
    """The fast tokenizer's own batch encode (both cores), with any padding or truncation saved in
    tokenizer.json switched off (sentence-transformers tokenizers pad and cut at 128 there)."""
    backend = tok.backend_tokenizer
    if backend.padding is not None:
        backend.no_padding()
    if backend.truncation is not None:
        backend.no_truncation()
    return backend.encode_batch(texts, add_special_tokens=add_special_tokens)


def prompt_completion_ids(
    tok, prompts: list[str], completions: list[str], eos_id: int | None, add_special_tokens: bool = True
) -> list[tuple[list[int], int]]:
    """(ids, k) per row: `prompt + completion` tokenized once, k = number of prompt tokens.

    EOS is appended after the completion unless the ids already end with it; it is trained on.
    """
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    encs = encode_batch(tok, texts, add_special_tokens)
    out = []
    for enc, p, text in zip(encs, prompts, texts, strict=True):
        k = first_trained_token(enc, len(p), len(text))
        out.append((_with_eos(enc.ids, eos_id), k))
    return out


# ---------------------------------------------------------------- chat rendering


def end_of_turn_tokens(tok) -> list[str]:
    """The end-of-turn tokens this tokenizer has (EOS included)."""
    vocab = tok.get_vocab()
    return [t for t in dict.fromkeys([tok.eos_token, *END_OF_TURN]) if t and t in vocab]


def render_chat(
    tok, messages: list[dict], tools: str | None, train_on: str, turn_ends: list[str] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text and the character spans to train on (assistant contents plus
    the template's end-of-turn token right after each). Raises ValueError if an assistant
    content cannot be found in the rendered text (the template rewrote it)."""
    kwargs = {}
    if tools:
        try:
            kwargs["tools"] = json.loads(tools)
        except json.JSONDecodeError:
            pass
    text = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    turn_ends = end_of_turn_tokens(tok) if turn_ends is None else turn_ends
    spans, cursor = [], 0
    for m in messages:
        content = m["content"] or ""
        start = text.find(content, cursor)
        if start < 0 and content.strip():
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            if m["role"] == "assistant":
                raise ValueError("assistant content not found in the chat-template rendering")
            continue
        end = start + len(content)
        cursor = end
        if m["role"] == "assistant":
            turn_end = next((t for t in turn_ends if text.startswith(t, end)), "")
            spans.append((start, end + len(turn_end)))
    if train_on == "last-assistant":
        spans = spans[-1:]
    return text, spans


# ---------------------------------------------------------------- the per-batch work


def tokenize_batch(
    batch: dict[str, list],
    tok,
    kind: str,
    opts: TokenizeOptions,
    specials: Specials,
    label_names: list[str] | None = None,
) -> tuple[dict[str, list], list[dict[str, Any]], Counter]:
    """Tokenize one batch of records (columns as lists). Pure: no state beyond its arguments.

    Returns (shard columns, rejects as {source,row,reason,detail}, event counts).
    """
    handler = {"sft": _sft_rows, "text": _sft_rows, "chat": _chat_rows, "classify": _classify_rows,
               "preference": _preference_rows}[kind]
    return handler(batch, tok, kind, opts, specials, label_names)


def _new_columns(kind: str) -> dict[str, list]:
    if kind == "preference":
        return {k: [] for k in ("prompt_input_ids", "chosen_input_ids", "chosen_labels", "rejected_input_ids",
                                "rejected_labels", "length")}
    return {"input_ids": [], "labels": [], "length": []}


def _reject(rejects: list, batch, i: int, reason: str, detail: str) -> None:
    rejects.append({"source": batch["source"][i], "row": batch["row"][i], "reason": reason, "detail": detail})


def _add_causal(cols, rejects, events, batch, i, ids: list[int], labels: list[int], event: str | None) -> None:
    """Add one row, already through `fit`, to `cols`; or record why it is rejected: too long
    (--overflow drop), or nothing left to train on."""
    if event:
        events[event] += 1
    if event == "too_long":
        return _reject(rejects, batch, i, "too_long", f"{len(ids)} tokens")
    if all(x == IGNORE_INDEX for x in labels):
        return _reject(rejects, batch, i, f"no trainable tokens after {event}" if event else "no trainable tokens",
                       f"{len(ids)} tokens")
    cols["input_ids"].append(list(ids))
    cols["labels"].append(labels)
    cols["length"].append(len(ids))


def _where(batch, i: int) -> str:
    return f"{batch['source'][i]} row {batch['row'][i]}"


def _sft_rows(batch, tok, kind, opts, specials, label_names):
    cols, rejects, events = _new_columns(kind), [], Counter()
    if kind == "text":
        prompts, completions = [""] * len(batch["text"]), [t or "" for t in batch["text"]]
    else:
        prompts, completions = [p or "" for p in batch["prompt"]], [c or "" for c in batch["completion"]]
    for i, (ids, k) in enumerate(prompt_completion_ids(tok, prompts, completions, specials.eos_id)):
        ids, k, event = fit(ids, k, opts.max_len, opts.overflow, _where(batch, i))
        _add_causal(cols, rejects, events, batch, i, ids, _labels(ids, k, opts.train_on_inputs), event)
    return cols, rejects, events


def _chat_rows(batch, tok, kind, opts, specials, label_names):
    cols, rejects, events = _new_columns(kind), [], Counter()
    rendered, keep = [], []
    tools = batch.get("tools") or [None] * len(batch["messages"])
    turn_ends = end_of_turn_tokens(tok)
    for i, (msgs, tl) in enumerate(zip(batch["messages"], tools, strict=True)):
        try:
            text, spans = render_chat(tok, msgs, tl, opts.train_on, turn_ends)
        except Exception as exc:  # a template may raise on roles it does not support
            _reject(rejects, batch, i, "chat template failed", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            continue
        if specials.eos_id is not None and not text.rstrip().endswith(tok.eos_token):
            text += tok.eos_token
            spans.append((len(text) - len(tok.eos_token), len(text)))
        rendered.append((text, spans))
        keep.append(i)
    encs = encode_batch(tok, [t for t, _ in rendered], add_special_tokens=False)
    for i, (_, spans), enc in zip(keep, rendered, encs, strict=True):
        mask = span_mask(enc.offsets, spans)
        ids = enc.ids
        # Only the leading prompt is cut by truncate-prompt; k = tokens before the first trained one.
        k = int(mask.argmax()) if mask.any() else len(ids)
        fitted, k2, event = fit(ids, k, opts.max_len, opts.overflow, _where(batch, i))
        offset = k - k2 if event in ("truncated_prompt", "truncated_completion") else 0  # tokens cut on the left
        kept = mask[offset : offset + len(fitted)]
        labels = list(fitted) if opts.train_on_inputs else [t if m else IGNORE_INDEX for t, m in zip(fitted, kept, strict=True)]
        _add_causal(cols, rejects, events, batch, i, fitted, labels, event)
    return cols, rejects, events


def _classify_rows(batch, tok, kind, opts, specials, label_names):
    cols, rejects, events = _new_columns(kind), [], Counter()
    index = {name: j for j, name in enumerate(label_names or [])}
    encs = encode_batch(tok, [t or "" for t in batch["text"]], add_special_tokens=True)
    special_ids = set(tok.all_special_ids)
    for i, (enc, names) in enumerate(zip(encs, batch["labels"], strict=True)):
        unknown = [n for n in names or [] if n not in index]
        if unknown:
            _reject(rejects, batch, i, "unknown label", ", ".join(unknown))
            continue
        ids = enc.ids
        if len(ids) > opts.max_len:  # classify has no prompt: every truncating policy cuts the end
            _, _, event = fit(ids, 0, opts.max_len, opts.overflow, _where(batch, i))
            if event == "too_long":
                events[event] += 1
                _reject(rejects, batch, i, "too_long", f"{len(ids)} tokens")
                continue
            events["truncated_end"] += 1
            # keep the closing special token ([SEP]) the encoder was trained with
            ids = ids[: opts.max_len - 1] + ids[-1:] if ids[-1] in special_ids else ids[: opts.max_len]
        hot = [0.0] * len(index)
        for n in names or []:
            hot[index[n]] = 1.0
        cols["input_ids"].append(ids)
        cols["labels"].append(hot)
        cols["length"].append(len(ids))
    return cols, rejects, events


def _preference_rows(batch, tok, kind, opts, specials, label_names):
    cols, rejects, events = _new_columns(kind), [], Counter()
    use_chat = bool(tok.chat_template) and "messages" in batch
    prompts = [
        tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) if use_chat and m else (p or "")
        for p, m in zip(batch["prompt"], batch.get("messages") or [None] * len(batch["prompt"]), strict=True)
    ]
    chosen = prompt_completion_ids(tok, prompts, [c or "" for c in batch["chosen"]], specials.eos_id, not use_chat)
    rejected = prompt_completion_ids(tok, prompts, [r or "" for r in batch["rejected"]], specials.eos_id, not use_chat)
    for i, ((cids, ck), (rids, rk)) in enumerate(zip(chosen, rejected, strict=True)):
        where = _where(batch, i)
        c, r = fit(cids, ck, opts.max_len, opts.overflow, where), fit(rids, rk, opts.max_len, opts.overflow, where)
        for _, _, ev in (c, r):
            if ev:
                events[ev] += 1
        untrained = not opts.train_on_inputs and (c[1] >= len(c[0]) or r[1] >= len(r[0]))
        if "too_long" in (c[2], r[2]) or untrained:
            event = c[2] or r[2]
            reason = "too_long" if "too_long" in (c[2], r[2]) else f"no trainable tokens{f' after {event}' if event else ''}"
            _reject(rejects, batch, i, reason, f"chosen {len(cids)}, rejected {len(rids)} tokens")
            continue
        cols["prompt_input_ids"].append(c[0][: c[1]])
        cols["chosen_input_ids"].append(c[0])
        cols["chosen_labels"].append(_labels(c[0], c[1], opts.train_on_inputs))
        cols["rejected_input_ids"].append(r[0])
        cols["rejected_labels"].append(_labels(r[0], r[1], opts.train_on_inputs))
        cols["length"].append(max(len(c[0]), len(r[0])))
    return cols, rejects, events


# ---------------------------------------------------------------- the stage


def _arrow_batch(kind: str, cols: dict[str, list]) -> pa.RecordBatch:
    lists = pa.list_(pa.int32())
    types = {"length": pa.int32(), "labels": pa.list_(pa.float32()) if kind == "classify" else lists}
    return pa.record_batch({k: pa.array(v, types.get(k, lists)) for k, v in cols.items()})


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


def _scan_input(path: str) -> tuple[Path, Manifest | None, str, list[str], int, list[str] | None]:
    """(data file, input manifest, kind, columns to read, row count, label names); validates early."""
    data = io.find_data_file(path)
    manifest = read_manifest(data.parent)
    columns, n_rows = io.record_columns(data), io.record_count(data)
    kind = (manifest.get("kind") if manifest else None) or infer_kind(columns)
    if kind is None:
        raise DataprepError(f"cannot tell the record kind from columns {sorted(columns)}; run `dataprep convert` first")
    if kind not in REQUIRED:
        raise DataprepError(f"record kind {kind!r} cannot be tokenized; expected one of {', '.join(REQUIRED)}")
    wanted = list(REQUIRED[kind]) + [c for c in ("tools", "messages") if c in columns and kind in ("chat", "preference")]
    missing = [c for c in wanted + ["source", "row"] if c not in columns]
    if missing:
        raise DataprepError(f"{data} lacks column(s) {', '.join(missing)} needed for kind {kind}; re-run `dataprep convert`")
    label_names = manifest.get("label_names") if manifest else None
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


def _worker_init(tok, kind, opts, specials, label_names) -> None:
    _WORKER.update(tok=tok, kind=kind, opts=opts, specials=specials, label_names=label_names)


def _worker_run(batch):
    w = _WORKER
    return tokenize_batch(batch, w["tok"], w["kind"], w["opts"], w["specials"], w["label_names"])


def _map_batches(batches, tok, kind, opts, specials, label_names, num_proc: int):
    """tokenize_batch over the batches, in order; in `num_proc` worker processes if > 1."""
    if num_proc <= 1:
        for b in batches:
            yield tokenize_batch(b, tok, kind, opts, specials, label_names)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fork after the Rust tokenizer ran can deadlock
    with ctx.Pool(num_proc, _worker_init, (tok, kind, opts, specials, label_names)) as pool:
        yield from pool.imap(_worker_run, batches, chunksize=1)


def tokenize(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: str = "smollm2-135m",
    max_len: int = 2048,
    overflow: Literal["truncate-prompt", "truncate", "drop", "error"] = "truncate-prompt",
    train_on: Literal["all-assistant", "last-assistant"] = "all-assistant",
    train_on_inputs: bool = False,
    pack: bool = False,
    num_shards: int | None = None,
    shard_size: str | None = None,
    num_proc: int = 1,
    batch_size: int = 1000,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Tokenize the records at `path` (a convert/dedupe output dir or a records file) into `out`.

    Returns the manifest; its `skipped` is True when an up-to-date output was kept.
    """
    from tqdm.auto import tqdm

    from dataprep import models

    opts = TokenizeOptions(max_len, overflow, train_on, train_on_inputs, pack)
    if num_shards is not None and shard_size is not None:
        raise DataprepError("pass either --num-shards or --shard-size, not both")
    timer = Timer()
    with timer("scan"):
        data, in_manifest, kind, columns, n_rows, label_names = _scan_input(str(path))
        tok_path = models.resolve_model(tokenizer)
        tok = models.load_tokenizer(tok_path)
        tok_fp = models.tokenizer_fingerprint(tok)
        if kind in ("sft", "chat", "text", "preference") and tok.eos_token_id is None:
            raise DataprepError(f"tokenizer {tokenizer} has no EOS token; pick a causal-LM tokenizer for kind {kind}")
        if pack and kind in ("preference", "classify"):
            raise DataprepError(f"--pack works for sft, chat and text records, not {kind}; drop --pack")
        if kind == "chat" and not tok.chat_template:
            raise DataprepError(f"tokenizer {tokenizer} has no chat template; chat records need one")
        specials = choose_pad(tok)
    chat_template = tok.chat_template if isinstance(tok.chat_template, str) else None
    tok_info = {"name": tokenizer, "path": tok_path, "fingerprint": tok_fp, "files_sha256": tokenizer_files_hash(tok_path),
                "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest() if chat_template else None}
    config = {**asdict(opts), "tokenizer": tok_info["name"], "tokenizer_fingerprint": tok_fp, "kind": kind,
              "label_names": label_names, "num_shards": num_shards, "shard_size": shard_size}

    def build(ws: Workspace) -> Outcome:
        rejects, events = Rejects(), Counter()
        lengths, trainable = array("i"), 0  # 4 bytes a row: the only per-row state kept in memory
        timer, rows_file, writer = ws.timer, ws.scratch / "rows.arrow", None
        bar = tqdm(total=n_rows, desc="tokenize", unit="row", disable=not progress, leave=False)
        with bar, timer("tokenize"):  # the bar is cleared before an error is printed
            batches = _read_batches(data, columns, batch_size)
            for cols, rej, ev in _map_batches(batches, tok, kind, opts, specials, label_names, num_proc):
                rb = _arrow_batch(kind, cols)
                writer = writer or pa.ipc.new_stream(str(rows_file), rb.schema)
                writer.write_batch(rb)
                rejects.extend(rej)
                events.update(ev)
                lengths.extend(cols["length"])
                trainable += _count_trainable(kind, cols)
                bar.update(len(cols["length"]) + len(rej))
            if writer is None:  # no batches at all: an empty input
                rb = _arrow_batch(kind, _new_columns(kind))
                writer = pa.ipc.new_stream(str(rows_file), rb.schema)
            writer.close()
        lengths_np = np.asarray(lengths, dtype=np.int64)
        packing_info = None
        if pack:
            with timer("pack"):
                rows_file, packing_info = _pack_file(rows_file, lengths_np, max_len, ws.scratch)
        with timer("write"):
            shards = _save_shards(rows_file, ws.out, num_shards, shard_size)
        details = dict(
            kind=kind, tokenizer=tok_info, packed=pack, max_len=max_len,
            pad_token_id=specials.pad_id, eos_token_id=specials.eos_id,
            pad_policy={"pad_token": specials.pad_token, "pad_token_id": specials.pad_id,
                        "source": specials.pad_source, "resize_embeddings": specials.pad_source.startswith("added"),
                        "vocab_size": len(tok), "eos_label_kept": True},
            label_names=label_names, shards=shards, events=dict(events),
            template=generation_template(kind, in_manifest),
            prompt_template=upstream_template(in_manifest),
            token_stats=_token_stats(lengths_np, packing_info["trainable"] if pack else trainable),
            packing=packing_info,
            columns=list(_new_columns(kind)) + (["position_ids", "seq_lens"] if pack else []),
        )
        return Outcome(n_rows, len(lengths), details, rejects=rejects)

    return run_stage("tokenize", out, inputs=[str(data)], config=config, build=build, data_files=("state.json",),
                     force=force)


def generation_template(kind: str, in_manifest: Manifest | None) -> str | None:
    """How to render a bare prompt at generation time like the training rows were: "chat" for chat
    records, else convert's no-input template as a format string with `{prompt}` (None if unknown)."""
    if kind == "chat":
        return "chat"
    template = upstream_template(in_manifest)
    text = template.get("without_input") if isinstance(template, dict) else None
    if kind != "sft" or not isinstance(text, str) or "{instruction}" not in text:
        return None
    return text.replace("{instruction}", "{prompt}")


def upstream_template(manifest: Manifest | None, depth: int = 3) -> Any:
    """convert's prompt template, from the input manifest or, through stages that do not carry
    it (dedupe), from the manifests of their inputs."""
    if not manifest or depth == 0:
        return None
    template = manifest.config.get("template")
    if template is not None:
        return template
    for inp in manifest.inputs:
        path = Path(str(inp.get("path", "")))
        found = upstream_template(read_manifest(path if path.is_dir() else path.parent), depth - 1)
        if found is not None:
            return found
    return None


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


def _count_trainable(kind: str, cols: dict[str, list]) -> int:
    if kind == "classify":
        return sum(cols["length"])
    key = "chosen_labels" if kind == "preference" else "labels"
    return sum(len(x) - x.count(IGNORE_INDEX) for x in cols[key])


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
    if num_shards is not None:
        num_shards = max(1, min(num_shards, len(ds))) if len(ds) else 1
    ds.save_to_disk(str(out), num_shards=num_shards, max_shard_size=shard_size)
    return sorted(p.name for p in out.glob("data-*.arrow"))
