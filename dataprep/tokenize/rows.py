"""The row builder of each record kind: `tokenize_batch` turns one batch of records (columns as
lists) into shard columns, rejects and overflow events. Pure: no state beyond its arguments,
so an engine can map it over partitions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dataprep.engine import EngineOptions
from dataprep.options import opt
from dataprep.records import IGNORE_INDEX, get_kind, load_function
from dataprep.stage import OutputOptions
from dataprep.tokenize import fidelity
from dataprep.tokenize.fidelity import ON_MISMATCH
from dataprep.tokenize.masks import (
    OVERFLOW,
    Specials,
    encode_batch,
    fit,
    fit_pair,
    labels_after,
    prompt_completion_ids,
    windows,
    with_eos,
)
from dataprep.tokenize.seam import SEAMS, continuation_tokenizer, count_fidelity, generated_reasons, seam_ids

TRAIN_ON = ("all-assistant", "last-assistant", "flagged")


def shard_size_problem(value: str) -> str | None:
    """A size `datasets` can split shards by: an integer and a unit, e.g. 500MB or 1GiB."""
    if re.fullmatch(r"\s*\d+\s*[kmgtp]i?b", value, re.IGNORECASE) is None:
        return f"{value!r} is not a size like 500MB (an integer and KB, MB, GB, TB or KiB, MiB, GiB, TiB)"
    return None


@dataclass(frozen=True)
class TokenizeOptions(EngineOptions, OutputOptions):
    """The tokenize stage's options (dataprep.options). All but num_proc and batch_size, which only
    split the work, decide the output and go into the fingerprint."""

    tokenizer: str = opt("smollm2-135m", "smollm2-135m, minilm, a local tokenizer/model directory, or a Hub id.")
    max_len: int = opt(2048, "Maximum tokens per row (and per bin).", min=2)
    overflow: str | None = opt(None, "Rows over --max-len: cut the prompt from the left keeping the completion "
                               "whole (a completion too long alone keeps the prompt's last max-len/2 tokens and loses "
                               "its end), cut the end, drop the row (a reject), stop with an error, or (text only) split "
                               "it into --max-len windows. Default: split for text, truncate-prompt otherwise.",
                               choices=OVERFLOW)
    stride: int = opt(0, "text with --overflow split: tokens each window repeats from the one before (as "
                      "context, not trained again); below --max-len.", min=0)
    train_on: str = opt("all-assistant", "chat: which assistant turns get labels (flagged: the turns whose "
                        "message has train=true).", choices=TRAIN_ON)
    seam: str = opt("inference", "sft: tokenize the prompt alone as at inference and the completion from a token "
                    "boundary (inference), or prompt + completion as one string, a token straddling the seam "
                    "counted as prompt (joint, the behaviour before 2026-11-30).", choices=SEAMS)
    reasoning: str = opt("train", "chat: an assistant turn's reasoning_content: trained as rendered, rendered but "
                         "masked, or dropped before rendering.", choices=("train", "mask", "drop"))
    split_turns: bool = opt(False, "chat: a turn the template renders differently once later turns follow (Qwen3 "
                            "strips earlier reasoning) is trained in a sequence of its own, as generated; the extra "
                            "sequences and tokens are counted. Without it such a row is a fidelity mismatch.")
    tools_in_system: bool = opt(False, "chat: for rows whose tools or tool calls the template does not render, "
                                "render the schemas into the system turn and the calls as <tool_call> JSON (default: "
                                "such rows are rejected and counted).")
    on_mismatch: str | None = opt(None, "What to do with a row whose trained tokens differ from what the template "
                                  "and tokenizer produce at inference (the fidelity check, always on for sft, chat, "
                                  "preference and kto): reject it, or keep it and count it. Default: reject; warn "
                                  "for sft with --seam joint (whose seam differs by design).", choices=ON_MISMATCH)
    chat_template: str | None = opt(None, "A Jinja chat template file to render with instead of the tokenizer's own.",
                                    path="file")
    train_on_inputs: bool = opt(False, "Train on every token, prompt included.")
    pack: bool = opt(False, "Pack sequences into --max-len bins (best-fit-decreasing).")
    num_shards: int | None = opt(None, "Number of Arrow shards to write.", min=1)
    shard_size: str | None = opt(None, "Maximum shard size instead, e.g. 500MB.", check=shard_size_problem)
    num_proc: int = opt(1, "Worker processes (the fast tokenizer already uses all cores for a batch).", min=1)
    batch_size: int = opt(1000, "Records per batch (bounds memory).", min=1)


def overflow_for(kind: str, overflow: str | None) -> str:
    """The overflow policy a kind gets: --overflow, or its default (split for text, truncate-prompt otherwise)."""
    return overflow or ("split" if kind == "text" else "truncate-prompt")


def tokenize_batch(
    batch: dict[str, list],
    tok,
    kind: str,
    opts: TokenizeOptions,
    specials: Specials,
    label_names: list[str] | None = None,
    kept: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, list], list[dict[str, Any]], Counter]:
    """Tokenize one batch of records (columns as lists). Pure: no state beyond its arguments.

    Returns (shard columns, rejects as {source,row,reason,detail}, event counts); the columns are the
    kind's shard columns only (`arrow_batch` takes them). The rows kept with a fidelity mismatch
    (--on-mismatch warn) are appended to `kept` when given, as {source,row,reasons,detail}.
    """
    build_rows = load_function(get_kind(kind).tokenize)
    cols, rejects, events = build_rows(batch, tok, kind, opts, specials, label_names)
    listed = cols.pop(fidelity.KEPT, [])
    if kept is not None:
        kept.extend(listed)
    return cols, rejects, events


def new_columns(kind: str) -> dict[str, list]:
    """Empty shard columns of `kind`, named as its table entry says."""
    return {name: [] for name in get_kind(kind).shards.names}


def _reject(rejects: list, batch, i: int, reason: str, detail: str) -> None:
    rejects.append({"source": batch["source"][i], "row": batch["row"][i], "reason": reason, "detail": detail})


# `fit`'s events as each kind names them: what was cut.
EVENT_NAMES = {
    "sft": {"truncated_end": "truncated_completion"},
    "chat": {"truncated_completion": "truncated_answer", "truncated_end": "truncated_answer"},
    "text": {"truncated_completion": "truncated_text", "truncated_end": "truncated_text"},
}


def _add_causal(cols, rejects, events, batch, i, ids: list[int], labels: list[int], event: str | None) -> None:
    """Add one row, already through `fit`, to `cols`; or record why it is rejected: too long
    (--overflow drop), or nothing left to train on."""
    if event:
        events[event] += 1
    if event == "too_long":
        return _reject(rejects, batch, i, "too_long", f"{len(ids)} tokens")
    if labels.count(IGNORE_INDEX) == len(labels):  # nothing trained (a C-speed count, not a Python loop)
        return _reject(rejects, batch, i, f"no trainable tokens after {event}" if event else "no trainable tokens",
                       f"{len(ids)} tokens")
    cols["input_ids"].append(list(ids))
    cols["labels"].append(labels)
    cols["length"].append(len(ids))


def _where(batch, i: int) -> str:
    return f"{batch['source'][i]} row {batch['row'][i]}"


def on_mismatch_for(kind: str, seam: str, on_mismatch: str | None) -> str:
    """What a fidelity mismatch does: --on-mismatch, or its default (warn for sft with --seam joint,
    whose seam differs by design; else reject: --seam applies to sft alone)."""
    return on_mismatch or ("warn" if kind == "sft" and seam == "joint" else "reject")


def sft_rows(batch, tok, kind, opts, specials, label_names):
    """sft: the prompt masked, joined to the completion at the --seam; every row goes through the
    fidelity check (dataprep.tokenize.seam), a mismatch rejected or counted (--on-mismatch)."""
    cols, rejects, events = new_columns(kind), [], Counter()
    prompts, completions = [p or "" for p in batch["prompt"]], [c or "" for c in batch["completion"]]
    rows, reasons = seam_ids(tok, prompts, completions, specials.eos_id, opts.seam)
    count_fidelity(events, reasons)
    reject_mismatch = on_mismatch_for(kind, opts.seam, opts.on_mismatch) == "reject"
    overflow = overflow_for(kind, opts.overflow)
    for i, ((ids, k), reason) in enumerate(zip(rows, reasons, strict=True)):
        if reason is not None and reject_mismatch:
            _reject(rejects, batch, i, f"fidelity: {reason}", f"--seam {opts.seam}; --on-mismatch warn keeps the row")
            continue
        ids, k, event = fit(ids, k, opts.max_len, overflow, _where(batch, i))
        event = EVENT_NAMES[kind].get(event, event)
        before = len(cols["length"])
        _add_causal(cols, rejects, events, batch, i, ids, labels_after(ids, k, opts.train_on_inputs), event)
        if reason is not None and len(cols["length"]) > before:  # --on-mismatch warn: kept, and listed
            fidelity.keep(cols, batch["source"][i], batch["row"][i], [reason], f"--seam {opts.seam}")
    return cols, rejects, events


def text_rows(batch, tok, kind, opts, specials, label_names):
    """text: every token trained. A row over --max-len is split into windows (--overflow split, the
    default): EOS only after the last, the --stride overlap of each later window masked (trained in
    the window before); the rows split and the extra windows are counted."""
    texts = [t or "" for t in batch["text"]]
    if overflow_for(kind, opts.overflow) != "split":
        return causal_rows(batch, tok, kind, opts, specials, [""] * len(texts), texts)
    cols, rejects, events = new_columns(kind), [], Counter()
    for i, enc in enumerate(encode_batch(tok, texts, add_special_tokens=True)):
        parts = windows(with_eos(enc.ids, specials.eos_id), opts.max_len, opts.stride)
        if len(parts) > 1:
            events["split_into_windows"] += 1
            events["windows"] += len(parts) - 1
        for ids, k in parts:
            _add_causal(cols, rejects, events, batch, i, ids, labels_after(ids, k, opts.train_on_inputs), None)
    return cols, rejects, events


def causal_rows(batch, tok, kind, opts, specials, prompts: list[str], completions: list[str]):
    """Rows of prompt + completion tokenized once; labels from the first completion token."""
    cols, rejects, events = new_columns(kind), [], Counter()
    overflow, names = overflow_for(kind, opts.overflow), EVENT_NAMES.get(kind, {})
    for i, (ids, k) in enumerate(prompt_completion_ids(tok, prompts, completions, specials.eos_id)):
        ids, k, event = fit(ids, k, opts.max_len, overflow, _where(batch, i))
        event = names.get(event, event)
        _add_causal(cols, rejects, events, batch, i, ids, labels_after(ids, k, opts.train_on_inputs), event)
    return cols, rejects, events


def classify_rows(batch, tok, kind, opts, specials, label_names):
    cols, rejects, events = new_columns(kind), [], Counter()
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
            _, _, event = fit(ids, 0, opts.max_len, overflow_for(kind, opts.overflow), _where(batch, i))
            if event == "too_long":
                events[event] += 1
                _reject(rejects, batch, i, "too_long", f"{len(ids)} tokens")
                continue
            events["truncated_text"] += 1
            # keep the closing special token ([SEP]) the encoder was trained with
            ids = ids[: opts.max_len - 1] + ids[-1:] if ids[-1] in special_ids else ids[: opts.max_len]
        cols["input_ids"].append(ids)
        cols["label_ids"].append(sorted(index[n] for n in names or []))  # the collator builds the multi-hot vector
        cols["length"].append(len(ids))
    return cols, rejects, events


ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def plain_prompt(prompt: str, messages: list[dict] | None) -> str:
    """The prompt as plain text for a tokenizer without a chat template: `prompt` (the user turn)
    when the conversation is one user turn (after an optional system turn); else every turn,
    role-labelled (`User: ...`, blank lines between), ending with `Assistant: ` for the answer."""
    turns = [m for m in messages or [] if m["role"] != "system"]
    if len(turns) <= 1:
        return prompt
    return "".join(f"{ROLE_LABELS.get(m['role'], m['role'].title())}: {m['content']}\n\n" for m in messages) + "Assistant: "


def _prompt_ids(batch, tok) -> list[list[int]]:
    """Each record's prompt tokenized as at inference: its conversation through the chat template
    (generation prompt added), or without one the plain prompt (`plain_prompt`) with the tokenizer's specials."""
    use_chat = bool(tok.chat_template) and "messages" in batch
    prompts = [
        tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) if use_chat and m
        else plain_prompt(p or "", m)
        for p, m in zip(batch["prompt"], batch.get("messages") or [None] * len(batch["prompt"]), strict=True)
    ]
    return [e.ids for e in encode_batch(tok, prompts, add_special_tokens=not use_chat)]


def _answer_ids(texts: list, tok, specials, events: Counter) -> tuple[list[list[int]], list[str | None]]:
    """(each answer's ids, its fidelity reason or None). Answers are tokenized to follow a prompt from a
    token boundary, as generated (no SentencePiece dummy prefix; dataprep.tokenize.seam), ending with
    EOS (an encoder: [SEP], so [CLS] p [SEP] a [SEP]). The prompt is tokenized alone as at inference,
    so the answers are where a mismatch could hide: an answer is trained as generated when its ids
    decode to exactly its text (`seam.generated_reasons`; by construction for a byte-level tokenizer),
    each check counted into `events`. An encoder's answers (no EOS: a reward model scores them,
    nothing generates them) are not checked."""
    texts = [x or "" for x in texts]
    ids = [e.ids for e in continuation_tokenizer(tok)[0].encode_batch_fast(texts, add_special_tokens=False)]
    reasons: list[str | None] = [None] * len(texts)
    if specials.eos_id is not None:
        reasons = generated_reasons(tok, texts, ids)
        count_fidelity(events, reasons)
    end = specials.eos_id if specials.eos_id is not None else tok.sep_token_id
    return [with_eos(x, end) for x in ids], reasons


def kto_rows(batch, tok, kind, opts, specials, label_names):
    """kto: prompt (as for preference) + completion + EOS, the prompt masked; `label` says whether
    the completion is desirable. The completion goes through the fidelity check (`_answer_ids`), a
    mismatch rejected or counted (--on-mismatch)."""
    cols, rejects, events = new_columns(kind), [], Counter()
    overflow = overflow_for(kind, opts.overflow)
    completions, reasons = _answer_ids(batch["completion"], tok, specials, events)
    for i, (p, c) in enumerate(zip(_prompt_ids(batch, tok), completions, strict=True)):
        if reasons[i] is not None and opts.on_mismatch != "warn":
            _reject(rejects, batch, i, fidelity.reject_reason(reasons[i]), "completion; --on-mismatch warn keeps the row")
            continue
        ids, k, event = fit(p + c, len(p), opts.max_len, overflow, _where(batch, i))
        kept = len(cols["length"])
        _add_causal(cols, rejects, events, batch, i, ids, labels_after(ids, k, opts.train_on_inputs),
                    EVENT_NAMES["sft"].get(event, event))
        if len(cols["length"]) > kept:
            cols["label"].append(bool(batch["label"][i]))
            if reasons[i] is not None:  # --on-mismatch warn: kept, and listed
                fidelity.keep(cols, batch["source"][i], batch["row"][i], [reasons[i]], "completion")
    return cols, rejects, events


def preference_rows(batch, tok, kind, opts, specials, label_names):
    """preference: the prompt tokenized once as at inference, each answer after it from a token boundary
    (EOS appended; as sft's --seam inference). Both sides share one prompt, cut the same way when either
    side is over --max-len (`fit_pair`), so chosen_input_ids[:k] == rejected_input_ids[:k] ==
    prompt_input_ids. An encoder tokenizer (no EOS; reward models) ends each answer with its [SEP] instead.
    Both answers go through the fidelity check (`_answer_ids`), a mismatch rejected or counted
    (--on-mismatch)."""
    cols, rejects, events = new_columns(kind), [], Counter()
    prompt_ids = _prompt_ids(batch, tok)
    (chosen, chosen_reasons), (rejected, rejected_reasons) = (_answer_ids(batch[side], tok, specials, events)
                                                              for side in SIDES)
    reasons = {"chosen": chosen_reasons, "rejected": rejected_reasons}
    overflow = overflow_for(kind, opts.overflow)
    for i, (p, c, r) in enumerate(zip(prompt_ids, chosen, rejected, strict=True)):
        bad = [side for side in SIDES if reasons[side][i]]
        if bad and opts.on_mismatch != "warn":
            _reject(rejects, batch, i, fidelity.reject_reason(reasons[bad[0]][i]),
                    f"{' and '.join(bad)} answer; --on-mismatch warn keeps the row")
            continue
        kept, a, b, evs = fit_pair(len(p), len(c), len(r), opts.max_len, overflow, _where(batch, i))
        evs = [{"truncated_a": "truncated_chosen", "truncated_b": "truncated_rejected"}.get(e, e) for e in evs]
        events.update(evs)
        detail = f"prompt {len(p)}, chosen {len(c)}, rejected {len(r)} tokens"
        if evs == ["too_long"]:
            _reject(rejects, batch, i, "too_long", detail)
            continue
        if not opts.train_on_inputs and not (a and b):
            _reject(rejects, batch, i, f"no trainable tokens after {', '.join(evs)}", detail)
            continue
        p = p[len(p) - kept :]
        c, r = p + c[:a], p + r[:b]
        cols["prompt_input_ids"].append(p)
        cols["chosen_input_ids"].append(c)
        cols["chosen_labels"].append(labels_after(c, kept, opts.train_on_inputs))
        cols["rejected_input_ids"].append(r)
        cols["rejected_labels"].append(labels_after(r, kept, opts.train_on_inputs))
        cols["length"].append(max(len(c), len(r)))
        if bad:  # --on-mismatch warn: kept, and listed
            fidelity.keep(cols, batch["source"][i], batch["row"][i], [reasons[side][i] for side in bad],
                          f"{' and '.join(bad)} answer")
    return cols, rejects, events


SIDES = ("chosen", "rejected")


def arrow_batch(kind: str, cols: dict[str, list]) -> pa.RecordBatch:
    """The shard columns as one Arrow batch, typed as the kind's shard schema says."""
    return pa.record_batch({k: pa.array(v, get_kind(kind).shards.field(k).type) for k, v in cols.items()},
                           schema=get_kind(kind).shards)


def count_trainable(kind: str, rb: pa.RecordBatch) -> int:
    """The trained tokens of one shard batch (classify: every token), counted in Arrow."""
    import pyarrow.compute as pc

    if kind == "classify":
        return int(pc.sum(rb.column("length")).as_py() or 0)
    labels = pc.list_flatten(rb.column("chosen_labels" if kind == "preference" else "labels"))
    return int(pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0)
