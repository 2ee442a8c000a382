"""Canonical records -> token shards with exact training masks.

Modules: `masks` (offset-based masks, the overflow policy, pad/EOS choice, chat rendering),
`rows` (`tokenize_batch` and the row builder of each kind: the pure per-batch work), `stage`
(the stage: batches through workers, packing, shards, manifest).
"""

from __future__ import annotations

from dataprep.tokenize.masks import OVERFLOW, Specials, choose_pad, fit, prompt_completion_ids, render_chat, span_mask
from dataprep.tokenize.rows import TRAIN_ON, TokenizeOptions, tokenize_batch
from dataprep.tokenize.stage import tokenize

__all__ = [
    "OVERFLOW",
    "TRAIN_ON",
    "Specials",
    "TokenizeOptions",
    "choose_pad",
    "fit",
    "prompt_completion_ids",
    "render_chat",
    "span_mask",
    "tokenize",
    "tokenize_batch",
]
