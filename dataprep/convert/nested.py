"""Nested kinds (preference, kto; chat lives in dataprep.convert.chat): preference pairs and
unpaired answers, one Python call per row.

sharegpt and OpenAI turns of a preference prompt become {role, content} messages; a row that cannot become a record
raises RowError, whose message is the reject reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dataprep.convert.columns import PROVENANCE
from dataprep.convert.flat import polars_schema

# sharegpt `from` and OpenAI `role` values -> our roles
ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "bot": "assistant",
    "function_call": "assistant",  # the call text stays the content, unchanged
    "system": "system",
    "observation": "tool", "tool": "tool", "function": "tool",
}


class RowError(ValueError):
    """A row that cannot become a record; the message is the reject reason."""


def per_row(work, make: Callable[[dict], dict], kind: str):
    import polars as pl
    from tqdm import tqdm

    fields = [c for c in work.columns if c not in PROVENANCE]
    out, rejects = [], []
    rows = work.iter_rows(named=True)
    for row in tqdm(rows, total=work.height, desc=f"convert {kind}", unit="row", disable=None, leave=False):
        try:
            rec = make({f: row[f] for f in fields})
        except RowError as exc:
            rejects.append({"source": row["source"], "row": row["row"], "reason": str(exc),
                            "detail": getattr(exc, "detail", None)})
            continue
        out.append({**rec, "source": row["source"], "row": row["row"]})
    try:
        return pl.DataFrame(out, schema=polars_schema(kind)), rejects
    except UnicodeEncodeError:  # a lone surrogate somewhere in a conversation: reject those rows only
        ok = [_storable(r) for r in out]
        rejects += [{"source": r["source"], "row": r["row"], "reason": INVALID_UNICODE_REASON, "detail": None}
                    for r, good in zip(out, ok, strict=True) if not good]
        return pl.DataFrame([r for r, good in zip(out, ok, strict=True) if good], schema=polars_schema(kind)), rejects


INVALID_UNICODE_REASON = "invalid unicode (a lone surrogate)"


def _storable(record: dict) -> bool:
    """Whether a record's strings can be written as UTF-8 (no lone surrogate anywhere in it)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    role = ROLES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None  # USER, Assistant, ...
    if role is None:
        raise RowError("unknown role")
    content = turn["content"] if "content" in turn else turn.get("value")
    if content is None and turn.get("tool_calls"):  # an OpenAI assistant turn that only calls tools
        content = json.dumps(turn["tool_calls"], ensure_ascii=False)
    if content is None:
        raise RowError("missing message content")
    if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        # text parts: OpenAI's {"type": "text", "text": ...}, LLaMA-Factory's {"type": "text", "value": ...}
        texts = [p.get("text", p.get("value")) for p in content]
        if not all(isinstance(t, str) for t in texts):
            raise RowError("text part without a string text or value")
        content = "".join(texts)
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


def preference_records(work, frame, ctx):
    """Preference pairs (prompt/chosen/rejected, or full transcripts) → preference records."""
    return per_row(work, preference_record, ctx.kind)


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


def preference_record(row: dict) -> dict:
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


def kto_records(work, frame, ctx):
    """Unpaired preference (trl's prompt/completion/label, LLaMA-Factory's conversations + kto_tag) → kto records."""
    return per_row(work, kto_record, ctx.kind)


BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def kto_record(row: dict) -> dict:
    """prompt (text or turns) + completion, or a conversation whose last assistant turn is the
    completion (LLaMA-Factory); label: whether the completion is desirable."""
    label = row["label"]
    label = BOOLEANS.get(label.strip().lower()) if isinstance(label, str) else label
    if isinstance(label, int) and label in (0, 1):
        label = bool(label)
    if not isinstance(label, bool):
        raise RowError("label is not a boolean (true/false)")
    prompt = _maybe_json(row.get("prompt"), "prompt")
    completion = row.get("completion")
    if isinstance(prompt, (list, tuple)):
        messages = to_messages(prompt, "prompt")
        if completion is None and messages and messages[-1]["role"] == "assistant":
            messages, completion = messages[:-1], messages[-1]["content"]
    elif isinstance(prompt, str) and prompt.strip():
        extra = row.get("input")
        messages = [{"role": "user", "content": f"{prompt}\n{extra}" if isinstance(extra, str) and extra.strip() else prompt}]
    else:
        raise RowError("missing prompt")
    if completion is None:
        raise RowError("missing completion")
    completion = _last_text(_answer(completion, "completion"), "completion")
    messages = _with_system(messages, row.get("system"))
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise RowError("no user turn in prompt")
    if not completion.strip():
        raise RowError("empty completion")
    return {"prompt": users[-1], "messages": messages, "completion": completion, "label": label}


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
