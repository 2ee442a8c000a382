"""PII filter: e-mail addresses, phone numbers (Korean formats included), IP addresses, credit-card
numbers (Luhn-checked) and Korean resident registration numbers (date and checksum checked).

`find_pii(text)` returns the spans; `pii_filter` runs over every text column of a frame and, by
mode, redacts (each span replaced by a placeholder per type, every other character kept; the row
stays), drops (reason `pii: TYPE` of the first span) or flags (the row stays; the types found
are listed in the `pii` column). The score is the number of spans found. RRNs must pass the checksum, so numbers issued since
October 2020 (no check digit) are missed; IPv6 candidates are checked with `ipaddress`.
"""

from __future__ import annotations

import re

import numpy as np

from dataprep.filter.fields import FilterResult

TYPES = ("email", "phone", "ip", "card", "rrn")
MODES = ("redact", "drop", "flag")
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "ip": "[IP]", "card": "[CARD]", "rrn": "[RRN]"}

_EMAIL = r"(?P<email>(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9]))"
_RRN = r"(?P<rrn>(?<![\d-])\d{6}[- ]?[1-8]\d{6}(?![\d-]))"
_CARD = r"(?P<card>(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-]))"
_IP = (r"(?P<ip>(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
       r"|(?<![:A-Za-z0-9])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:A-Za-z0-9]))")  # IPv6: checked by ipaddress
# Korean mobile (010-1234-5678, 01012345678), Korean landline (02-123-4567, 031-1234-5678), +82 forms,
# 15xx-xxxx numbers (1588-1234; 16xx/18xx are left out: they read as year ranges), and North American / international forms with separators
_PHONE = (r"(?P<phone>(?<![A-Za-z0-9+])(?:"
          r"(?:(?:\+82|\(\+82\))[- .]?0?|0)1[016789][- .]?\d{3,4}[- .]?\d{4}"
          r"|(?:(?:\+82[- .]?)\(?0?|\(?0)(?:2|[3-6][1-5]|70)\)?[- .]?\d{3,4}[- .]\d{4}"
          r"|15[4-9]\d-\d{4}"
          r"|\+\d{1,3}[- .]?\(?\d{1,4}\)?[- .]?\d{2,4}[- .]?\d{3,4}(?:[- .]?\d{1,4})?"
          r"|\(\d{3}\)[- .]?\d{3}[- .]\d{4}|\d{3}[-.]\d{3}[-.]\d{4}"
          r")(?![A-Za-z0-9-]))")
# lookarounds are ASCII-only: Korean particles follow PII directly ("010-1234-5678입니다")
_HINT = re.compile(r"[0-9@]")  # every PII type has a digit or an @: skip texts without
PATTERN = re.compile("|".join((_EMAIL, _RRN, _CARD, _IP, _PHONE)))


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _ipv6(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return any(c not in ":0123456789" for c in value.lower()) or "::" in value  # 12:30:45 is a time


def rrn_valid(digits: str) -> bool:
    """YYMMDD, a gender/century digit 1-8, and the check digit (weights 2..9,2..5, 11 - sum mod 11)."""
    month, day = int(digits[2:4]), int(digits[4:6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:12], (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5), strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def find_pii(text: str, types=TYPES) -> list[tuple[int, int, str]]:
    """(start, end, type) of each PII span of `text`, left to right."""
    out = []
    if not text or not _HINT.search(text):
        return out
    for m in PATTERN.finditer(text):
        kind = m.lastgroup
        value = m.group()
        if kind in ("card", "rrn"):
            digits = re.sub(r"\D", "", value)
            if kind == "rrn" and not rrn_valid(digits):
                kind = "card" if 13 <= len(digits) <= 19 else None
            if kind == "card" and not (13 <= len(digits) <= 19 and luhn(digits)):
                kind = None
        if kind == "ip" and ":" in value and not _ipv6(value):
            kind = None
        if kind in types:
            out.append((m.start(), m.end(), kind))
    return out


def redact(text: str, spans) -> str:
    parts, last = [], 0
    for start, end, kind in spans:
        parts += [text[last:start], PLACEHOLDER[kind]]
        last = end
    return "".join(parts) + text[last:]


def text_columns(frame) -> list[str]:
    import polars as pl

    return [c for c, t in frame.schema.items() if c not in ("source",) and (t == pl.String or c == "messages")]


def _message_pii(m: dict, types) -> tuple[dict, list[str]]:
    """A chat message with PII redacted in its content, its reasoning and the text of its typed
    parts (the parts are what tokenize renders for a multimodal message), and the PII kinds found."""
    import json

    out, kinds = dict(m), []
    for field in ("content", "reasoning_content"):
        spans = find_pii(m.get(field) or "", types)
        if spans:
            kinds += [s[2] for s in spans]
            out[field] = redact(m[field], spans)
    if m.get("parts"):  # `content` is the parts' text joined: counted there, redacted in both
        parts, changed = json.loads(m["parts"]), False
        for p in parts:
            spans = find_pii(p.get("text") or "", types) if p.get("type") == "text" else []
            if spans:
                p["text"], changed = redact(p["text"], spans), True
        if changed:
            out["parts"] = json.dumps(parts, ensure_ascii=False)
            return out, kinds
    return (out if kinds else m), kinds


def pii_filter(frame, mode: str, types=TYPES) -> FilterResult:
    """Every text column of every row (chat: each message's content). Pure: one result per row."""
    n = frame.height
    res = FilterResult.empty(n)
    found: list[list[str]] = [[] for _ in range(n)]
    new: dict[str, list] = {}
    for col in text_columns(frame):
        values = frame.get_column(col).to_list()
        changed = False
        for i, v in enumerate(values):
            if col == "messages":
                msgs = []
                for m in v or []:
                    m, kinds = _message_pii(m, types)
                    found[i] += kinds
                    msgs.append(m)
                    changed |= bool(kinds)
                values[i] = msgs
            else:
                spans = find_pii(v or "", types)
                if spans:
                    found[i] += [s[2] for s in spans]
                    values[i] = redact(v, spans)
                    changed = True
        if changed and mode == "redact":
            new[col] = values
    counts = {t: 0 for t in types}
    for i, kinds in enumerate(found):
        for k in kinds:
            counts[k] += 1
        if kinds:
            res.score[i] = len(kinds)
            res.detail[i] = ",".join(dict.fromkeys(kinds))
            if mode == "drop":
                res.reason[i] = kinds[0]
    res.stats = {"spans": counts, "rows_with_pii": int(sum(1 for k in found if k))}
    if mode == "redact":
        res.texts = new
    if mode == "flag":
        res.flags = [",".join(dict.fromkeys(k)) or None for k in found]
    res.margin = np.full(n, np.nan)
    return res
