"""Training never writes into its input directories: the token shards of `dataprep tokenize`
(train, eval and test) are byte-identical before and after a run."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.train_helpers import (
    classify_rows,
    pack,
    sft_rows,
    tiny_causal_lm,
    tiny_encoder,
    tiny_tokenizer,
    write_shards,
)

NAMES = ["a", "b", "c", "d"]


def tree_digest(root: Path) -> tuple[list[str], str]:
    """(every path under `root`, one hash over each file's relative name and bytes)."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    h = hashlib.sha256()
    for rel in paths:
        f = root / rel
        if f.is_file():
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return paths, h.hexdigest()


def test_split_eval_picks_train_test_splits_rows_and_writes_nothing(tmp_path):
    from datasets import load_from_disk

    from training.data import split_eval

    shards = write_shards(tmp_path / "shards", sft_rows(40), "sft", tiny_tokenizer())
    before = tree_digest(shards)
    train, held = split_eval(load_from_disk(str(shards)), 7, seed=3)
    assert tree_digest(shards) == before
    # the same rows datasets' train_test_split picks (on a copy: it writes cache files next to the data)
    shutil.copytree(shards, tmp_path / "copy")
    parts = load_from_disk(str(tmp_path / "copy")).train_test_split(test_size=7, seed=3, shuffle=True)
    assert held["input_ids"] == parts["test"]["input_ids"] and train["input_ids"] == parts["train"]["input_ids"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sft", "classify"])
def test_training_leaves_its_input_shards_byte_identical(tmp_path, task):
    tok = tiny_tokenizer()
    if task == "sft":
        from training.sft import SFTConfig, train_sft

        inputs = [write_shards(tmp_path / "shards", pack(sft_rows(32), 40), "sft", tok, packed=True, max_len=40)]
        cfg = SFTConfig(model=str(tiny_causal_lm(tmp_path / "model")), micro_batch=4, max_steps=2, eval_steps=1,
                        val_size=4, report_to="none", gradient_checkpointing=False)
        run = lambda: train_sft(str(inputs[0]), str(tmp_path / "out"), cfg, force=True)  # noqa: E731
    else:
        from training.classify import ClassifyConfig, train_classifier

        inputs = [write_shards(tmp_path / name, classify_rows(40, NAMES, seed=i), "classify", tok, label_names=NAMES)
                  for i, name in enumerate(("shards", "test"))]
        cfg = ClassifyConfig(model=str(tiny_encoder(tmp_path / "model")), micro_batch=8, max_steps=2, eval_steps=1,
                             val_size=8, test_shards=str(inputs[1]), report_to="none")
        run = lambda: train_classifier(str(inputs[0]), str(tmp_path / "out"), cfg, force=True)  # noqa: E731
    before = [tree_digest(d) for d in inputs]
    run()
    run()  # a second run finds nothing left behind by the first either
    assert [tree_digest(d) for d in inputs] == before
