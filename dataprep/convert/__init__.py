"""Raw rows → canonical records (sft, chat, text, classify, preference) plus rejects.

`convert_frame` (frame.py) is the pure per-batch step: a polars frame with `source`/`row`
columns in, (records frame, reject dicts) out, no global state, so an engine can map it over
partitions. `convert` (stage.py) is the whole stage: stream the sources in batches through
`convert_frame`, append each batch to the records file, then write rejects and the manifest
through the stage contract.

Modules: `columns` (which source column feeds which field), `flat` (sft, text, classify:
vectorised polars), `nested` (chat, preference: one Python call per row), `rowfn` (`--row-fn`),
`frame` (the per-batch step), `stage` (the stage).
"""

from __future__ import annotations

from dataprep.convert.columns import PROVENANCE, resolve_columns
from dataprep.convert.flat import parse_labels, read_label_names
from dataprep.convert.frame import convert_frame
from dataprep.convert.nested import split_shared_prompt, to_messages
from dataprep.convert.rowfn import apply_row_fn, load_row_fn, row_fn_fingerprint
from dataprep.convert.stage import FORMATS, ConvertOptions, RecordWriter, convert

__all__ = [
    "ConvertOptions",
    "FORMATS",
    "PROVENANCE",
    "RecordWriter",
    "apply_row_fn",
    "convert",
    "convert_frame",
    "load_row_fn",
    "parse_labels",
    "read_label_names",
    "resolve_columns",
    "row_fn_fingerprint",
    "split_shared_prompt",
    "to_messages",
]
