"""Our shards in the layouts trl's trainers take, without re-tokenizing.

- sft shards (plain and packed) load into trl's SFTTrainer as they are (`labels` are used as
  ours; packed shards carry `seq_lengths`, trl's name): see README "Training our shards with trl".
- preference shards: trl's DPOTrainer (1.16) takes `prompt_ids`, `chosen_ids`, `rejected_ids`
  with the prompt cut off the answers. `trl_preference` builds exactly that from our
  `prompt_input_ids` / `chosen_input_ids` / `rejected_input_ids` (each answer is the row's ids
  after its prompt), so trl scores the tokens our `*_labels` train.
"""

from __future__ import annotations

import os

from dataprep.errors import DataprepError

TRL_PREFERENCE_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _answers(batch: dict) -> dict:
    out = {"prompt_ids": batch["prompt_input_ids"], "chosen_ids": [], "rejected_ids": []}
    for side in ("chosen", "rejected"):
        for prompt, ids in zip(batch["prompt_input_ids"], batch[f"{side}_input_ids"], strict=True):
            out[f"{side}_ids"].append(ids[len(prompt):])
    return out


def trl_preference(shards: str | os.PathLike):
    """Our preference shards (a `dataprep tokenize` output) as a `datasets.Dataset` with trl's
    DPOTrainer columns: `prompt_ids`, `chosen_ids`, `rejected_ids`."""
    from datasets import load_from_disk

    from dataprep.stage import read_manifest

    manifest = read_manifest(shards)
    kind = manifest.lineage.kind if manifest else None
    if kind != "preference":
        raise DataprepError(f"{shards} holds {kind or 'no dataprep'} shards; trl_preference takes the preference "
                            "shards of `dataprep tokenize` (records of --kind preference)")
    ds = load_from_disk(str(shards))
    return ds.map(_answers, batched=True, remove_columns=ds.column_names)
