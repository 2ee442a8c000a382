"""Chat records that keep everything a conversation holds (records.CHAT_MESSAGE).

Formats read, one Python call per row:
- OpenAI messages: `content` a string or a list of typed parts, `reasoning_content` (or `reasoning`,
  `thinking`), `tool_calls` (`function.arguments` a JSON string or an object; legacy `function_call`),
  `tool_call_id` and `name` on tool messages;
- sharegpt turns ({from, value}): `function_call` turns become assistant `tool_calls` (the value parsed
  as JSON: invalid JSON is a reject), `observation` turns become `tool` messages, named after the call
  they answer; a turn's `weight` (0/1) becomes its `train` flag;
- trl's conversational formats: `messages`, or `prompt` + `completion` message lists (the completion's
  assistant turns are flagged `train`, the prompt's not: `tokenize --train-on flagged` trains the
  completion only, like trl's completion-only loss);
- LLaMA-Factory multimodal rows: `images` / `videos` / `audios` columns whose files the `<image>`,
  `<video>`, `<audio>` placeholders in the turns refer to, in order; the turns become typed parts, and
  a row whose placeholder and file counts differ is a reject;
- inline `<think>...</think>` at the start of an assistant content: kept as text (`--think keep`), or
  split into `reasoning_content` (`--think split`).

Nothing is dropped silently: a message field that cannot be kept, media given as inline bytes, a
tool call without a name or with arguments that are not JSON, are rejects with their reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dataprep.convert.nested import ROLES, RowError, _maybe_json, _tools_json, per_row

THINK = ("keep", "split")
MEDIA_TYPES = ("image", "video", "audio")
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
_PLACEHOLDER = re.compile(r"(<image>|<video>|<audio>)")
_THINK = re.compile(r"\A\s*<think>(.*?)</think>\s*(.*)\Z", re.DOTALL)
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
# keys a turn may have besides these: ignored only when empty (None, "", [])
_KNOWN = {"role", "from", "content", "value", "tool_calls", "function_call", "tool_call_id", "name", "train", "weight",
          *_REASONING_KEYS}


class RowReject(RowError):
    """A RowError with a detail for rejects.jsonl (the reason stays short and countable)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail


def chat_records(work, frame, ctx):
    """Conversations (OpenAI, sharegpt, trl, LLaMA-Factory multimodal) → chat records."""
    think = getattr(ctx, "think", "keep")
    return per_row(work, lambda row: chat_record(row, think), ctx.kind)


def chat_record(row: dict, think: str = "keep") -> dict:
    messages = _turns(row["messages"], "messages", think)
    if row.get("completion") is not None:  # trl prompt-completion: only the completion is a target
        completion = _turns(row["completion"], "completion", think)
        for m in messages:
            if m["role"] == "assistant" and m["train"] is None:
                m["train"] = False
        for m in completion:
            if m["role"] == "assistant" and m["train"] is None:
                m["train"] = True
        messages += completion
    system = row.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, _message("system", system))
    _name_tool_results(messages)
    _attach_media(messages, row)
    if not any(m["role"] == "assistant" and (m["content"].strip() or m["tool_calls"] or m["reasoning_content"])
               for m in messages):
        raise RowError("no assistant turn")
    return {"messages": messages, "tools": _tools_json(row.get("tools"))}


def _message(role: str, content: str, **fields: Any) -> dict:
    return {"role": role, "content": content, "parts": None, "reasoning_content": None, "tool_calls": None,
            "tool_call_id": None, "name": None, "train": None, **fields}


def _turns(value: Any, field: str, think: str) -> list[dict]:
    value = _maybe_json(value, field)
    if value is None:
        raise RowError(f"missing {field}")
    if isinstance(value, str):
        raise RowError(f"{field} is not a list")
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{field} is not a list")
    if not value:
        raise RowError(f"empty {field}")
    return [to_chat_message(t, think) for t in value]


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


def to_chat_message(turn: Any, think: str = "keep") -> dict:
    """One turn in any of the formats above → a canonical chat message (records.CHAT_MESSAGE)."""
    if not isinstance(turn, dict):
        raise RowError("message is not an object")
    unknown = sorted(k for k, v in turn.items() if k not in _KNOWN and not _empty(v))
    if unknown:
        raise RowReject("message field cannot be kept", ", ".join(unknown))
    raw_role = turn.get("role", turn.get("from"))
    key = raw_role.strip().lower() if isinstance(raw_role, str) else None
    role = ROLES.get(key) if key else None
    if role is None:
        raise RowError("unknown role")
    content = turn["content"] if "content" in turn else turn.get("value")
    msg = _message(role, "")
    if key == "function_call":  # sharegpt: the value is the call (or a list of calls) as JSON
        calls = _json_value(content, "function_call is not valid JSON")
        msg["tool_calls"] = _tool_calls(calls if isinstance(calls, list) else [calls])
        content = None
    else:
        if not _empty(turn.get("tool_calls")):
            msg["tool_calls"] = _tool_calls(turn["tool_calls"])
        elif not _empty(turn.get("function_call")):  # OpenAI's legacy single call
            msg["tool_calls"] = _tool_calls([turn["function_call"]])
    reasoning = next((turn[k] for k in _REASONING_KEYS if not _empty(turn.get(k))), None)
    if reasoning is not None and not isinstance(reasoning, str):
        raise RowError("non-string reasoning_content")
    if reasoning is not None and role != "assistant":
        raise RowReject("message field cannot be kept", f"reasoning on a {role} turn")
    msg["reasoning_content"] = reasoning
    if content is None:
        if not msg["tool_calls"] and reasoning is None:
            raise RowError("missing message content")
        content = ""
    if isinstance(content, list):
        parts = [_part(p) for p in content]
        if all(p["type"] == "text" for p in parts):
            content = "".join(p["text"] for p in parts)
        else:
            msg["parts"] = json.dumps(parts, ensure_ascii=False)
            content = "".join(p["text"] for p in parts if p["type"] == "text")
    if not isinstance(content, str):
        raise RowError("non-string message content")
    if think == "split" and role == "assistant" and "<think>" in content:
        m = _THINK.match(content)
        if m is None:
            raise RowError("unclosed or misplaced <think> in assistant content")
        if reasoning is not None:
            raise RowError("reasoning given twice (reasoning_content and <think>)")
        msg["reasoning_content"], content = m.group(1).strip("\n"), m.group(2)
    msg["content"] = content
    for k in ("tool_call_id", "name"):
        v = turn.get(k)
        if not _empty(v):
            if not isinstance(v, str):
                raise RowError(f"non-string {k}")
            msg[k] = v
    flag = turn.get("train", turn.get("weight"))
    if flag is not None:
        if isinstance(flag, bool) or (isinstance(flag, (int, float)) and flag in (0, 1)):
            msg["train"] = bool(flag)
        else:
            raise RowReject("message field cannot be kept", f"train/weight {flag!r} is not a 0/1 flag")
    return msg


def _json_value(value: Any, reason: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RowReject(reason, value[:200]) from None
    return value


def _tool_calls(calls: Any) -> str:
    """Tool calls as canonical JSON: [{id, type, function: {name, arguments}}], arguments parsed."""
    calls = _json_value(calls, "tool_calls is not valid JSON")
    if not isinstance(calls, list) or not calls:
        raise RowError("tool_calls is not a list of calls")
    out = []
    for call in calls:
        if not isinstance(call, dict):
            raise RowError("tool call is not an object")
        fn = call.get("function", call)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowError("tool call without a name")
        extra = sorted(k for k, v in call.items() if k not in ("id", "type", "function", "name", "arguments")
                       and not _empty(v))
        if extra:
            raise RowReject("message field cannot be kept", "tool call " + ", ".join(extra))
        args = fn.get("arguments", fn.get("parameters", {}))
        args = _json_value(args, "tool call arguments are not valid JSON") if isinstance(args, str) else args
        out.append({"id": call.get("id"), "type": call.get("type") or "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return json.dumps(out, ensure_ascii=False)


def _media_ref(value: Any) -> tuple[str, str]:
    """("path" | "url", reference) of a media value; inline bytes are a reject."""
    if isinstance(value, dict):
        if isinstance(value.get("url"), str):
            value = value["url"]
        elif isinstance(value.get("path"), str):
            value = value["path"]
        else:
            raise RowReject("inline media bytes", "a media part holds data, not a path or URL")
    if not isinstance(value, str) or not value:
        raise RowReject("inline media bytes", "a media part holds data, not a path or URL")
    if value.startswith("data:"):
        raise RowReject("inline media bytes", "a data: URL")
    return ("url" if re.match(r"^[a-z][a-z0-9+.-]*://", value) else "path"), value


def _part(p: Any) -> dict:
    """A content part → {type: text, text} or {type: image|audio|video, path|url}."""
    if isinstance(p, str):
        return {"type": "text", "text": p}
    if not isinstance(p, dict):
        raise RowError("content part is not an object")
    t = p.get("type")
    if t == "text" or (t is None and "text" in p):
        text = p.get("text", p.get("value"))
        if not isinstance(text, str):
            raise RowError("text part without a string text or value")
        return {"type": "text", "text": text}
    for media in MEDIA_TYPES:
        if t in (media, f"{media}_url", f"input_{media}") or (t is None and (media in p or f"{media}_url" in p)):
            value = next((p[k] for k in (media, f"{media}_url", f"input_{media}", "url", "path") if k in p), None)
            if isinstance(value, dict) and "data" in value:
                raise RowReject("inline media bytes", f"{t} part with data")
            how, ref = _media_ref(value)
            return {"type": media, how: ref}
    raise RowReject("message field cannot be kept", f"content part of type {t!r}")


def _name_tool_results(messages: list[dict]) -> None:
    """Tool results without an id or name take them from the calls they answer, in order."""
    pending: list[dict] = []
    for m in messages:
        if m["role"] == "assistant" and m["tool_calls"]:
            pending = list(json.loads(m["tool_calls"]))
        elif m["role"] == "tool" and pending:
            call = pending.pop(0)
            if m["tool_call_id"] is None and call.get("id"):
                m["tool_call_id"] = call["id"]
            if m["name"] is None:
                m["name"] = call["function"]["name"]
        elif m["role"] != "tool":
            pending = []


def _attach_media(messages: list[dict], row: dict) -> None:
    """LLaMA-Factory `images`/`videos`/`audios` columns: each `<image>`-style placeholder in the turns
    takes the next file; the turns become typed parts. Counts that differ are a reject."""
    files: dict[str, list] = {}
    for media in MEDIA_TYPES:
        column = f"{media}s"
        if column not in row:
            continue
        value = _maybe_json(row[column], column)
        value = [] if value is None else [value] if isinstance(value, (str, dict)) else list(value)
        n = sum(m["content"].count(PLACEHOLDERS[media]) for m in messages if m["parts"] is None)
        if n != len(value):
            raise RowReject(f"{PLACEHOLDERS[media]} placeholders and {column} differ",
                            f"{n} placeholder(s), {len(value)} file(s)")
        files[media] = [_media_ref(v) for v in value]
    if not any(files.values()):
        return
    for m in messages:
        if m["parts"] is not None or not _PLACEHOLDER.search(m["content"]):
            continue
        parts = []
        for piece in _PLACEHOLDER.split(m["content"]):
            media = next((k for k, v in PLACEHOLDERS.items() if v == piece and files.get(k)), None)
            if media is not None:
                how, ref = files[media].pop(0)
                parts.append({"type": media, how: ref})
            elif piece:
                parts.append({"type": "text", "text": piece})
        m["parts"] = json.dumps(parts, ensure_ascii=False)
        m["content"] = "".join(p["text"] for p in parts if p["type"] == "text")
