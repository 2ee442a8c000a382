"""The kind table: one entry (plus its row builder) is all a new kind needs to go through
convert → dedupe → tokenize; kinds a stage does not support are one-line errors naming the ones it does."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX, KIND_TABLE, PROVENANCE, Kind, get_kind, register_kind


def qa_rows(batch, tok, kind, opts, specials, label_names):
    """The toy kind's row builder: a fixed prompt around the question, the answer trained."""
    from dataprep.tokenize.rows import causal_rows

    prompts = [f"Q: {q}\nA:" for q in batch["question"]]
    return causal_rows(batch, tok, kind, opts, specials, prompts, [f" {a}" for a in batch["answer"]])


@pytest.fixture
def qa_kind():
    schema = pa.schema([("question", pa.string()), ("answer", pa.string())] + PROVENANCE)
    kind = register_kind(Kind("qa", schema, ("question", "answer"), text=("question", "answer"),
                              stats=("question", "answer"), tokenize=f"{__name__}:qa_rows", reads=("question", "answer"),
                              tasks=("sft",)))
    yield kind
    del KIND_TABLE["qa"]


def test_a_toy_kind_runs_through_convert_dedupe_and_tokenize(qa_kind, tmp_path):
    from datasets import load_from_disk

    from dataprep.convert import convert
    from dataprep.dedupe import dedupe
    from dataprep.models import load_tokenizer
    from dataprep.tokenize import tokenize

    raw = tmp_path / "qa.jsonl"
    rows = [{"question": "Capital of France?", "answer": "Paris"}, {"question": "2+2?", "answer": "4"},
            {"question": "Capital of France?", "answer": "Paris"}, {"question": "  ", "answer": "blank"}]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conv = convert([str(raw)], tmp_path / "conv", kind="qa")
    assert conv.counts.to_json() == {"in": 4, "out": 3, "rejected": 1, "rejected_by_reason": {"empty question": 1}}
    assert conv.lineage.kind == "qa" and set(conv.get("length_stats")) == {"question", "answer"}
    dd = dedupe(tmp_path / "conv", tmp_path / "dd", methods=("exact",))
    assert dd.counts.n_out == 2 and dd.get("text_fields") == ["question", "answer"]
    tok = tokenize(tmp_path / "dd", tmp_path / "tok", max_len=64, progress=False)
    assert tok.lineage.kind == "qa" and tok.counts.n_out == 2
    ds = load_from_disk(str(tmp_path / "tok"))
    smol = load_tokenizer("smollm2-135m")
    for ids, labels, answer in zip(ds["input_ids"], ds["labels"], ["Paris", "4"], strict=True):
        trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
        assert smol.decode(trained) == f" {answer}<|im_end|>"  # the answer and EOS, token by token; no prompt


def test_unknown_kind_and_unsupported_kind_are_one_line_errors(tmp_path):
    from dataprep.convert import convert

    with pytest.raises(DataprepError, match=r"^unknown record kind 'nope'; kinds are sft, chat, text, classify, preference, kto$"):
        get_kind("nope")
    raw = tmp_path / "x.jsonl"
    raw.write_text('{"text": "a"}\n')
    with pytest.raises(DataprepError, match="unknown record kind 'nope'"):
        convert([str(raw)], tmp_path / "o", kind="nope")
    assert not (tmp_path / "o").exists()


def test_preference_shards_train_dpo_by_default_and_name_their_tasks(tmp_path):
    """The kind table says which tasks a kind trains: the first is the default, others are one-line errors."""
    from dataprep.stage import Counts, Lineage, Manifest, TokenizerInfo
    from training.data import resolve_task_model

    (tmp_path / "s").mkdir()
    info = TokenizerInfo("smollm2-135m", "fp", "path", 0, 2)
    manifest = Manifest("tokenize", "fp", [], {}, Counts(1, 1), lineage=Lineage(kind="preference", tokenizer=info))
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest.to_json()))
    assert resolve_task_model(tmp_path / "s", None, None) == ("dpo", "smollm2-135m")
    assert resolve_task_model(tmp_path / "s", "reward", "minilm") == ("reward", "minilm")
    with pytest.raises(DataprepError, match=r"kind 'preference' \(task dpo\) but --task is sft; pass --task dpo"):
        resolve_task_model(tmp_path / "s", "sft", None)


def test_every_builtin_kind_names_functions_that_exist():
    from dataprep.records import load_function

    for kind in KIND_TABLE.values():
        for spec in (kind.convert, kind.tokenize):
            if spec:
                assert callable(load_function(spec)), spec
        assert set(kind.text) <= set(kind.schema.names) and set(kind.reads) <= set(kind.schema.names)
