"""The canonical record kinds and their columns, defined once.

Every stage passes polars frames / Arrow tables whose columns are named here. Each record
also carries `source` (the input file or Hub id it came from) and `row` (its 0-based row
number there), so any output or reject can be traced back to the user's data.
"""

from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

PROVENANCE = [pa.field("source", pa.string()), pa.field("row", pa.int64())]

# kind -> the columns a record of that kind has (besides source/row), in output order.
SCHEMAS: dict[str, pa.Schema] = {
    # instruction/input/output as given, plus the template-rendered prompt and completion.
    "sft": pa.schema(
        [
            ("instruction", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("prompt", pa.string()),
            ("completion", pa.string()),
        ]
        + PROVENANCE
    ),
    # a conversation; `tools` is an optional JSON string of tool/function definitions.
    "chat": pa.schema([("messages", MESSAGES), ("tools", pa.string())] + PROVENANCE),
    "text": pa.schema([("text", pa.string())] + PROVENANCE),
    # `labels` are label names; the vocabulary (in order) is in the manifest as `label_names`.
    "classify": pa.schema([("text", pa.string()), ("labels", pa.list_(pa.string()))] + PROVENANCE),
    # `prompt` is the prompt as plain text (for conversations: the last user turn);
    # `messages` is the whole prompt conversation, for tokenizers with a chat template.
    "preference": pa.schema(
        [
            ("prompt", pa.string()),
            ("messages", MESSAGES),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
        ]
        + PROVENANCE
    ),
}

KINDS = tuple(SCHEMAS)

# The text a record "is", for dedupe and statistics: these fields joined by a blank line.
DEFAULT_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "sft": ("instruction", "input", "output"),
    "chat": ("messages",),
    "text": ("text",),
    "classify": ("text",),
    "preference": ("prompt", "chosen"),
}


def infer_kind(columns) -> str | None:
    """The record kind of a table that did not come from `dataprep convert` (no manifest), from
    its column names; None when it matches no kind."""
    cols = set(columns)
    if {"prompt", "chosen", "rejected"} <= cols:
        return "preference"
    if {"prompt", "completion"} <= cols or {"instruction", "output"} <= cols:
        return "sft"
    if "messages" in cols:
        return "chat"
    if {"text", "labels"} <= cols:
        return "classify"
    if "text" in cols:
        return "text"
    return None


# Columns of the token shards that `dataprep tokenize` writes and `dataprep train` reads.
SHARD_COLUMNS = {
    "input_ids": pa.list_(pa.int32()),
    "labels": pa.list_(pa.int32()),  # -100 = not trained on; classify: list<float32> multi-hot
    "length": pa.int32(),
    "position_ids": pa.list_(pa.int32()),  # packed shards only: restart at 0 per sequence
    "seq_lens": pa.list_(pa.int32()),  # packed shards only: lengths of the packed sequences
}
IGNORE_INDEX = -100


def mask_sequence_starts(labels, position_ids):
    """`labels` with IGNORE_INDEX wherever a sequence starts (`position_ids` == 0), set in place and
    returned; numpy arrays or torch tensors of one shape.

    The first token of a sequence is never a prediction target: where sequences are concatenated
    (packed rows, padding-free batches) the model's label shift would otherwise train the last
    token of one sequence to predict the first of the next, and a sequence alone never trains
    that label either, since nothing precedes it."""
    labels[position_ids == 0] = IGNORE_INDEX
    return labels
