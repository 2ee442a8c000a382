"""Which source column feeds which canonical field: the fields each kind takes, the common column
names tried for each (`DEFAULT_ALIASES`), `--map` overrides, and a guess of the kind for hints.
"""

from __future__ import annotations

from dataprep.errors import DataprepError
from dataprep.records import get_kind
from dataprep.templates import Template

PROVENANCE = ("source", "row")

# kind -> (required fields, optional fields) that a source must provide
# canonical field -> source column names tried in order (case-insensitive) when not mapped
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query", "goal"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "messages": ("messages", "conversations", "conversation", "prompt"),  # prompt: trl's conversational prompt-completion
    "tools": ("tools", "functions"),
    "system": ("system", "system_prompt"),
    "text": ("text", "content", "document", "sentence", "comment_text"),
    "labels": ("labels", "label", "genres", "tags", "categories"),
    "prompt": ("prompt", "conversations", "messages", "question", "instruction"),
    "chosen": ("chosen", "response_chosen", "chosen_response"),
    "rejected": ("rejected", "response_rejected", "rejected_response"),
    "completion": ("completion", "response", "output", "answer"),
    "label": ("label", "kto_tag", "desirable"),  # kto: trl's unpaired format, LLaMA-Factory's kto_tag
}


def resolve_columns(columns: list[str], kind: str, mapping: dict[str, str] | None = None,
                    template: Template | None = None) -> dict[str, str]:
    """canonical field -> source column: explicit `mapping` first, then the template's and the default names."""
    entry = get_kind(kind)
    required, optional = entry.fields, entry.optional
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
