"""Multiple-choice data (PIQA: goal, sol1, sol2, label): --choice makes the labelled answer the completion."""

from __future__ import annotations

import json

import pytest

from dataprep.cli import cli
from dataprep.convert import convert, convert_frame
from dataprep.convert.flat import choice_index
from dataprep.errors import DataprepError

ROWS = [
    {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Hit it with a hammer.", "label": 0},
    {"goal": "Dry wet shoes", "sol1": "Put them in the oven.", "sol2": "Stuff them with newspaper.", "label": 1},
    {"goal": "Cool soup", "sol1": "Boil it.", "sol2": "Stir it on a cold plate.", "label": "1"},
    {"goal": "Sharpen a pencil", "sol1": "Use a sharpener.", "sol2": "Use a spoon.", "label": 2},
    {"goal": "Tie a knot", "sol1": "Loop and pull.", "sol2": "Glue it.", "label": None},
    {"goal": "Fold a shirt", "sol1": "Fold in thirds.", "sol2": "Crumple it.", "label": "x"},
    {"goal": "Light a fire", "sol1": "  ", "sol2": "Use a match.", "label": 0},
]
PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"


def _piqa(tmp_path):
    path = tmp_path / "piqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_label_picks_the_completion_and_bad_labels_are_rejects(tmp_path):
    from tests.convert.test_rejects import _frame

    records, rejects = convert_frame(_frame(ROWS), "sft", choices=("sol1", "sol2"))
    assert records.select("row", "prompt", "completion").rows() == [
        (0, PROMPT + "### Instruction:\nOpen a jar\n\n### Response:\n", "Twist the lid."),
        (1, PROMPT + "### Instruction:\nDry wet shoes\n\n### Response:\n", "Stuff them with newspaper."),
        (2, PROMPT + "### Instruction:\nCool soup\n\n### Response:\n", "Stir it on a cold plate."),
    ]
    assert [(r["row"], r["reason"], r["detail"]) for r in rejects] == [
        (3, "label out of range", "2"), (4, "missing label", None), (5, "non-integer label", "'x'"),
        (6, "empty chosen answer", "sol1")]


@pytest.mark.parametrize("value, expected", [
    (0, (0, None)), (" 1 ", (1, None)), (1.0, (1, None)), (-1, (None, "label out of range")),
    ("", (None, "missing label")), (True, (None, "non-integer label")), (0.5, (None, "non-integer label")),
])
def test_choice_index(value, expected):
    assert choice_index(value, 2) == expected


def test_cli_end_to_end_without_row_fn(tmp_path, runner):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["convert", str(_piqa(tmp_path)), "--choice", "sol1,sol2", "--map", "instruction=goal",
                                 "--format", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in records] == ["Twist the lid.", "Stuff them with newspaper.", "Stir it on a cold plate."]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rejected_by_reason"] == {
        "label out of range": 1, "missing label": 1, "non-integer label": 1, "empty chosen answer": 1}
    assert manifest["ignored_columns"] == []  # label is used: no "per-row labels" question either
    assert manifest["choices"] == {"columns": ["sol1", "sol2"], "label": "label"}


def test_goal_is_an_instruction_alias_and_label_column_is_named(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"goal": "g", "a": "A", "b": "B", "answer_idx": 1}) + "\n")
    m = convert([str(path)], tmp_path / "o", choices=["a", "b"], choice_label="answer_idx", fmt="jsonl")
    assert m.counts.n_out == 1
    record = json.loads((tmp_path / "o" / "records.jsonl").read_text())
    assert record["completion"] == "B" and "### Instruction:\ng\n" in record["prompt"]


def test_without_choice_a_label_column_still_asks(tmp_path):
    with pytest.raises(DataprepError, match="looks like per-row labels"):
        convert([str(_piqa(tmp_path))], tmp_path / "o", mapping={"output": "sol1"})


@pytest.mark.parametrize("args, needle", [
    (["--kind", "chat"], "--choice applies to --kind sft only, not chat"),
    (["--map", "output=sol1"], "drop --map output=sol1"),
    (["--choice-label", "answer"], "--choice-label answer: no column 'answer'"),
])
def test_choice_errors_are_one_line_and_leave_no_output(tmp_path, runner, args, needle):
    from tests.convert.test_errors import _fails

    _fails(runner, tmp_path, [_piqa(tmp_path), "--choice", "sol1,sol2", *args], needle)


def test_choice_with_a_missing_column(tmp_path, runner):
    from tests.convert.test_errors import _fails

    _fails(runner, tmp_path, [_piqa(tmp_path), "--choice", "sol1,sol3"], "--choice sol3: no column 'sol3'")
