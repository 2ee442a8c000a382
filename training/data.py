"""Load the token shards `dataprep tokenize` writes, and batch them for training.

Two collators:
- `collate_flat` (packed shards, padding-free): the micro-batch is flattened into one row and
  `position_ids` restart at 0 for every sequence. transformers derives a block-diagonal causal
  mask from such position_ids (sdpa/eager on CPU, FlexAttention on CUDA), so packed sequences
  never attend to each other. The first label of every sequence is set to -100
  (`dataprep.records.mask_sequence_starts`) so the last token of one sequence is never trained
  to predict the first token of the next.
- `collate_padded` (unpacked shards): dynamic padding to the longest row, rounded up to a
  multiple of 8, with a plain attention_mask.

This package never imports polars; it reads shards with `datasets` and the manifest with dataprep.stage.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX, mask_sequence_starts


def load_shards(path: str | Path):
    """(datasets.Dataset, Manifest) from a tokenize output directory."""
    from datasets import load_from_disk

    from dataprep.stage import read_manifest

    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise DataprepError(f"{path} has no manifest.json; pass the output directory of `dataprep tokenize`")
    if manifest.stage != "tokenize":
        raise DataprepError(f"{path} is the output of `dataprep {manifest.stage}`, not token shards; "
                            f"run `dataprep tokenize {path} -o SHARDS` and train on SHARDS")

    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for a directory it cannot read
        raise DataprepError(f"cannot read token shards from {path}: {str(exc).splitlines()[0]}") from None
    from dataprep.records import KIND_TABLE

    kind = KIND_TABLE.get(manifest.lineage.kind)
    missing = set(kind.shards.names if kind else ("input_ids",)) - set(dataset.column_names)
    if missing:
        raise DataprepError(f"shards in {path} lack column(s) {sorted(missing)}; re-run `dataprep tokenize`")
    return dataset, manifest


def resolve_task_model(shards: str | Path, task: str | None, model: str | None) -> tuple[str, str]:
    """The training task and base model: as given, else what the shards' lineage says (the task
    the record kind trains, the model whose tokenizer made the shards). A task that contradicts
    the shards is an error here; a model whose tokenizer differs is one in `check_tokenizer`."""
    from dataprep.stage import read_manifest

    manifest = read_manifest(shards)
    lineage = manifest.lineage if manifest else None
    if lineage is None or lineage.kind is None:
        raise DataprepError(f"{shards} has no tokenize manifest with a record kind; pass the output directory of "
                            "`dataprep tokenize`")
    encoder = lineage.tokenizer is not None and lineage.tokenizer.eos_token_id is None
    task = task or ("mlm" if encoder and lineage.kind == "text" else check_task(manifest, None, shards))
    check_task(manifest, task, shards)
    if model is None and lineage.tokenizer is None:
        raise DataprepError(f"the lineage of {shards} names no tokenizer; pass --model")
    return task, model or lineage.tokenizer.name


def check_task(manifest, task: str | None, path: str | Path) -> str:
    """The task the shards train (their kind's first), after checking that `task` (if given) is one."""
    from dataprep.records import KIND_TABLE, kinds_with

    kind = manifest.lineage.kind
    if kind is None:
        raise DataprepError(f"manifest of {path} has no record kind; re-run `dataprep tokenize`")
    tasks = KIND_TABLE[kind].tasks if kind in KIND_TABLE else ()
    if not tasks:
        raise DataprepError(f"shards in {path} are of kind {kind!r}, which `dataprep train` does not train yet; "
                            f"it trains kinds {kinds_with(lambda k: k.tasks)}")
    if task is not None and task not in tasks:
        raise DataprepError(
            f"shards in {path} are of kind {kind!r} (task {tasks[0]}) but --task is {task}; "
            f"pass --task {tasks[0]} or tokenize the right data"
        )
    return tasks[0]


def check_tokenizer(manifest, tokenizer, model_name: str) -> None:
    """Fail early when the model's tokenizer is not the one the shards were tokenized with."""
    from dataprep.models import tokenizer_fingerprint

    info = manifest.lineage.tokenizer
    expected = info.fingerprint if info else None
    actual = tokenizer_fingerprint(tokenizer)
    if expected and expected != actual:
        shard_tok = info.name
        raise DataprepError(
            f"tokenizer of {model_name} (fingerprint {actual}) differs from the one the shards were tokenized with "
            f"({shard_tok}, {expected}); pass --model {shard_tok} or re-tokenize with this model"
        )


def split_eval(dataset, val_size: float, seed: int):
    """(train, eval) where eval holds `val_size` (a fraction < 1 or a row count) of the rows.

    The rows are those `dataset.train_test_split(test_size=n, seed=seed)` picks, but the index
    mappings stay in memory: train_test_split on shards loaded from disk writes `cache-*.arrow`
    files into the shards directory (another stage's output), and with `keep_in_memory=True` it
    fails on such a dataset (datasets 5.x passes a cache file name along anyway)."""
    import numpy as np

    if not val_size:
        return dataset, None
    n_eval = int(val_size) if val_size >= 1 else max(1, round(len(dataset) * val_size))
    if n_eval >= len(dataset):
        raise DataprepError(f"--val-size {val_size} leaves no training rows out of {len(dataset)}; use a smaller value")
    order = np.random.default_rng(seed).permutation(len(dataset))
    # only the index mappings live in memory; the rows stay memory-mapped
    return dataset.select(order[n_eval:], keep_in_memory=True), dataset.select(order[:n_eval], keep_in_memory=True)


def batch_indices(lengths: list[int], micro_batch: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Shuffled micro-batches of row indices; grouped by length, rows of similar length share a batch
    (less padding) while the order of batches stays random."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        # sort within mega-batches of 50 micro-batches, as transformers' LengthGroupedSampler does
        mega = micro_batch * 50
        order = [i for s in range(0, len(order), mega) for i in sorted(order[s : s + mega], key=lambda i: -lengths[i])]
    batches = [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def batcher(dataset, micro_batch: int, collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
            group_by_length: bool = False, shard: bool = False) -> Callable[[int], list]:
    """seed -> the dataset's rows in shuffled micro-batches (`batch_indices`), each collated.
    `shard`: only this rank's share of them when several processes train (training.dist.shard)."""
    from training import dist

    lengths = dataset["length"] if "length" in dataset.column_names else [len(x) for x in dataset["input_ids"]]
    rows = dataset.with_format(None)

    def make(seed: int) -> list:
        batches = batch_indices(lengths, micro_batch, seed, group_by_length)
        return [collate([rows[i] for i in idx]) for idx in (dist.shard(batches) if shard else batches)]

    return make


def _row_positions(row: dict[str, Any]) -> list[int]:
    return row["position_ids"] if row.get("position_ids") is not None else list(range(len(row["input_ids"])))


def buckets(multiple: int, cap: int | None = None) -> Callable[[int], int]:
    """A `pad_to` for collate_flat: the token count rounded up to a multiple of `multiple`, at most
    `cap` (a longer batch keeps its length). A few lengths instead of one static worst case: a
    batch of short rows no longer computes a long filler sequence."""

    def length(n: int) -> int:
        up = -(-n // multiple) * multiple
        return max(n, min(up, cap)) if cap else up

    return length


def collate_flat(rows: list[dict[str, Any]], pad_to: int | Callable[[int], int] | None = None,
                 pad_token_id: int = 0) -> dict[str, Any]:
    """Padding-free batch: every row concatenated into one row of shape (1, total tokens).

    `pad_to` appends one filler sequence (its own positions, no labels) up to that length, so a
    compiled kernel (FlexAttention, torch.compile) sees one static shape instead of recompiling;
    a callable (`buckets`) maps the token count to the length.
    """
    import torch

    input_ids, labels, positions = [], [], []
    for row in rows:
        input_ids += row["input_ids"]
        labels += row["labels"]
        positions += _row_positions(row)
    n_tokens = len(input_ids)
    if callable(pad_to):
        pad_to = pad_to(n_tokens)
    if pad_to and len(input_ids) < pad_to:
        fill = pad_to - len(input_ids)
        input_ids += [pad_token_id] * fill
        labels += [IGNORE_INDEX] * fill
        positions += list(range(fill))
    position_ids = torch.tensor([positions], dtype=torch.long)
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.long),
        "labels": mask_sequence_starts(torch.tensor([labels], dtype=torch.long), position_ids),
        "position_ids": position_ids,
        "n_tokens": n_tokens,
    }


def collate_padded(rows: list[dict[str, Any]], pad_token_id: int, multiple: int = 8, num_labels: int | None = None):
    """Dynamic padding to the longest row (rounded up to `multiple`), with an attention mask.

    `num_labels` is for classification: each row's `label_ids` become one multi-hot vector of that
    length (the shards store ids, so 20,000 labels cost nothing per row).
    """
    import torch

    longest = max(len(r["input_ids"]) for r in rows)
    width = -(-longest // multiple) * multiple if multiple else longest
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if num_labels is not None:
        hot = torch.zeros((len(rows), num_labels), dtype=torch.float32)
        for i, r in enumerate(rows):
            hot[i, r["label_ids"]] = 1.0
        batch["labels"] = hot
        return batch
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        labels[i, : len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.long)
    batch["labels"] = labels
    return batch


def trained_tokens(batch: dict[str, Any]) -> int:
    """Tokens that contribute to the loss (a label at the next position)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def prepare_run(shards: str, cfg, task: str):
    """What every training run checks before a model loads: the shards and their task, the
    model's tokenizer against the shards', and the eval split (--eval-shards or --val-size).
    Returns (train set, eval set or None, manifest, tokenizer, local model path)."""
    from dataprep.models import load_tokenizer, resolve_model

    dataset, manifest = load_shards(shards)
    check_task(manifest, task, shards)
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
    check_tokenizer(manifest, tokenizer, cfg.model)
    if cfg.eval_shards:
        eval_set, eval_manifest = load_shards(cfg.eval_shards)
        check_task(eval_manifest, task, cfg.eval_shards)
        return dataset, eval_set, manifest, tokenizer, model_path
    return (*split_eval(dataset, cfg.val_size, cfg.seed), manifest, tokenizer, model_path)
