"""The canonical record kinds, defined once: the kind table.

`KIND_TABLE` says, for each kind, its record schema, the source fields convert maps to it, the
text dedupe compares, the row builder tokenize uses, its shard columns and the training tasks
that accept its shards. A new kind is one `register_kind` entry plus its row builder.

Every stage passes polars frames / Arrow tables whose columns are named here. Each record
also carries `source` (the input file or Hub id it came from) and `row` (its 0-based row
number there), so any output or reject can be traced back to the user's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dataprep.errors import DataprepError

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)  # preference prompts: plain turns

# A chat message keeps everything a conversation can hold (dataprep.convert.chat). The shapes that vary
# from row to row (typed content parts, tool calls with arbitrary JSON arguments) are JSON strings, so
# the parquet schema stays the same across batches of mixed rows; `content` is always the text (for a
# message of typed parts: its text parts joined), so dedupe, filter and stats read it unchanged.
CHAT_MESSAGE = pa.struct([
    ("role", pa.string()),
    ("content", pa.string()),
    ("parts", pa.string()),  # JSON list of typed parts ({type: text, text} / {type: image|audio|video, path|url}) or null
    ("reasoning_content", pa.string()),
    ("tool_calls", pa.string()),  # JSON list of {id, type: function, function: {name, arguments (an object)}} or null
    ("tool_call_id", pa.string()),
    ("name", pa.string()),
    ("train", pa.bool_()),  # per-message flag for `tokenize --train-on flagged`; null: not flagged
])
CHAT_MESSAGES = pa.list_(CHAT_MESSAGE)
CHAT_FIELDS = tuple(CHAT_MESSAGE.field(i).name for i in range(CHAT_MESSAGE.num_fields))
MEDIA = pa.list_(pa.struct([("type", pa.string()), ("ref", pa.string())]))  # chat shards: media references, in order

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
    "chat": pa.schema([("messages", CHAT_MESSAGES), ("tools", pa.string())] + PROVENANCE),
    "text": pa.schema([("text", pa.string())] + PROVENANCE),
    # `labels` are label names; the vocabulary (in order) is in the manifest's lineage as `label_names`.
    "classify": pa.schema([("text", pa.string()), ("labels", pa.list_(pa.string()))] + PROVENANCE),
    # `prompt` is the prompt as plain text (for conversations: the last user turn);
    # `messages` is the whole prompt conversation: tokenize renders it (chat template, or every
    # turn role-labelled without one; dataprep.tokenize.rows.plain_prompt).
    "preference": pa.schema(
        [
            ("prompt", pa.string()),
            ("messages", MESSAGES),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
        ]
        + PROVENANCE
    ),
    # unpaired preference (KTO): one answer and whether it is desirable; prompt/messages as for preference.
    "kto": pa.schema(
        [
            ("prompt", pa.string()),
            ("messages", MESSAGES),
            ("completion", pa.string()),
            ("label", pa.bool_()),
        ]
        + PROVENANCE
    ),
}

TOKENS = pa.list_(pa.int32())
CAUSAL_SHARDS = pa.schema([("input_ids", TOKENS), ("labels", TOKENS), ("length", pa.int32())])


@dataclass(frozen=True)
class Kind:
    """Everything the stages need to know about one record kind. Functions are named as
    "module:function" and imported only when a stage uses them."""

    name: str
    schema: pa.Schema  # the record columns, source/row included
    fields: tuple[str, ...]  # convert: source fields a row must have ...
    optional: tuple[str, ...] = ()  # ... and may have
    convert: str | None = None  # (work, frame, ConvertContext) -> (records, rejects); None: text fields checked
    text: tuple[str, ...] = ()  # the fields dedupe compares, joined by a blank line
    stats: tuple[str, ...] = ()  # fields whose lengths convert summarises (a message list: turns and chars)
    tokenize: str | None = None  # the tokenize row builder (dataprep.tokenize.rows)
    reads: tuple[str, ...] = ()  # record columns tokenize needs ...
    reads_if_present: tuple[str, ...] = ()  # ... and reads when they are there
    shards: pa.Schema = CAUSAL_SHARDS  # the shard columns tokenize writes (unpacked)
    causal: bool = True  # tokenized for a decoder: needs an EOS token ...
    encoder: bool = False  # ... unless an encoder tokenizer (a mask token, no EOS) may tokenize it (mlm, reward)
    chat_template: bool = False  # needs the tokenizer's chat template
    packable: bool = False  # `tokenize --pack` applies
    tasks: tuple[str, ...] = ()  # `dataprep train` tasks that take its shards; the first is the default


KIND_TABLE: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add (or replace) a kind: one table entry, plus its functions where they live."""
    KIND_TABLE[kind.name] = kind
    return kind


for _kind in (
    Kind("sft", SCHEMAS["sft"], ("instruction", "output"), ("input",), convert="dataprep.convert.flat:sft_records",
         text=("instruction", "input", "output"), stats=("prompt", "completion"),
         tokenize="dataprep.tokenize.rows:sft_rows", reads=("prompt", "completion"), packable=True, tasks=("sft",)),
    Kind("chat", SCHEMAS["chat"], ("messages",), ("tools", "system", "completion", "images", "videos", "audios"),
         convert="dataprep.convert.chat:chat_records",
         text=("messages",), stats=("messages",), tokenize="dataprep.tokenize.chat:chat_rows", reads=("messages",),
         reads_if_present=("tools",), chat_template=True, packable=True, tasks=("sft",),
         shards=pa.schema([("input_ids", TOKENS), ("labels", TOKENS), ("length", pa.int32()), ("media", MEDIA)])),
    Kind("text", SCHEMAS["text"], ("text",), text=("text",), stats=("text",),
         tokenize="dataprep.tokenize.rows:text_rows", reads=("text",), packable=True, encoder=True,
         tasks=("sft", "mlm")),
    Kind("classify", SCHEMAS["classify"], ("text", "labels"), convert="dataprep.convert.flat:classify_records",
         text=("text",), stats=("text",), tokenize="dataprep.tokenize.rows:classify_rows", reads=("text", "labels"),
         shards=pa.schema([("input_ids", TOKENS), ("label_ids", TOKENS), ("length", pa.int32())]),
         causal=False, tasks=("classify",)),
    Kind("preference", SCHEMAS["preference"], ("chosen", "rejected"), ("prompt", "input", "system"),
         convert="dataprep.convert.nested:preference_records", text=("prompt", "chosen"),
         stats=("prompt", "chosen", "rejected"), tokenize="dataprep.tokenize.rows:preference_rows",
         reads=("prompt", "chosen", "rejected"), reads_if_present=("messages",),
         shards=pa.schema([(c, TOKENS) for c in ("prompt_input_ids", "chosen_input_ids", "chosen_labels",
                                                 "rejected_input_ids", "rejected_labels")] + [("length", pa.int32())]),
         encoder=True, tasks=("dpo", "reward")),
    Kind("kto", SCHEMAS["kto"], ("prompt", "label"), ("completion", "input", "system"),
         convert="dataprep.convert.nested:kto_records", text=("prompt", "completion"), stats=("prompt", "completion"),
         tokenize="dataprep.tokenize.rows:kto_rows", reads=("prompt", "completion", "label"),
         reads_if_present=("messages",),
         shards=pa.schema([("input_ids", TOKENS), ("labels", TOKENS), ("label", pa.bool_()), ("length", pa.int32())]),
         tasks=("kto",)),
):
    register_kind(_kind)

KINDS = tuple(KIND_TABLE)  # the built-in kinds (the CLI's choices)


def get_kind(name: str | None, purpose: str = "") -> Kind:
    """The table entry of kind `name`; an unknown kind is a one-line error naming the known ones."""
    if name not in KIND_TABLE:
        known = ", ".join(KIND_TABLE)
        raise DataprepError(f"unknown record kind {name!r}{f' for {purpose}' if purpose else ''}; kinds are {known}")
    return KIND_TABLE[name]


def kinds_with(test) -> str:
    """'a, b and c': the kinds whose entry passes `test`, for errors that name what is supported."""
    names = [k.name for k in KIND_TABLE.values() if test(k)]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) or "none"


def load_function(spec: str):
    """The function a kind entry names as "module:function"."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


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
    "seq_lengths": pa.list_(pa.int32()),  # packed shards only: lengths of the packed sequences
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
