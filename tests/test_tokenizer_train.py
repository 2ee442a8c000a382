"""`dataprep tokenizer-train`: retraining on Korean rows lowers held-out tokens per character, and
the output is a tokenizer `dataprep tokenize` takes."""

from __future__ import annotations

import json

import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.tokenizer_train import split_held_out, tokenizer_train


@pytest.fixture(scope="module")
def ko_records(shared_data, tmp_path_factory):
    from dataprep.convert.stage import convert

    out = tmp_path_factory.mktemp("ko") / "records"
    convert(str(shared_data / "ko_alpaca_1040.json"), str(out), template="ko-alpaca", limit=400)
    return out


@pytest.fixture(scope="module")
def trained(ko_records, tmp_path_factory):
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("tok") / "ko-tok"
    result = CliRunner().invoke(cli, ["tokenizer-train", str(ko_records), "-o", str(out), "--vocab-size", "2000"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_retraining_lowers_tokens_per_char_on_korean(trained):
    out, _ = trained
    m = json.loads((out / "manifest.json").read_text())
    tpc = m["tokens_per_char"]
    # smollm2's English byte-level BPE spends ~2 tokens per Hangul character; 2,000 Korean merges cut that to ~1/3
    assert tpc["before"] > 1.5
    assert tpc["after"] < 0.6 * tpc["before"], tpc
    assert m["rows"] == {"train": 360, "held_out": 40}
    assert m["vocab_size"]["new"] <= 2000 < m["vocab_size"]["base"]
    assert m["counts"]["in"] == 400 and m["counts"]["out"] == 400
    assert m["lineage"]["kind"] == "sft" and m["lineage"]["upstream"][-1]["stage"] == "convert"


def test_cli_prints_before_and_after(trained):
    _, output = trained
    line = next(ln for ln in output.splitlines() if ln.startswith("tokens/char on held-out rows"))
    assert "before 1." in line and "after 0." in line and "vocab 2,000" in line


def test_output_tokenizes_records_and_round_trips_korean(trained, ko_records, tmp_path):
    from dataprep.models import load_tokenizer
    from dataprep.tokenize import tokenize

    out, _ = trained
    tok = load_tokenizer(str(out))
    text = "건강을 유지하기 위한 세 가지 팁을 알려주세요."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    m = tokenize(ko_records, tmp_path / "shards", tokenizer=str(out), max_len=256, progress=False)
    assert m.counts.n_out == 400
    assert m.lineage.tokenizer.name == str(out)


def test_output_saves_added_tokens_and_loads_to_the_same_ids(trained):
    """The output's tokenizer_config.json carries added_tokens_decoder (models.save_tokenizer), so
    transformers loads it without re-parsing tokenizer.json in Python; the ids stay those of
    tokenizer.json's own added tokens, and a text encodes the same as with the bare tokenizers file."""
    from tokenizers import Tokenizer

    from dataprep.models import load_tokenizer

    out, _ = trained
    config = json.loads((out / "tokenizer_config.json").read_text())
    added = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    assert added and {int(i): t["content"] for i, t in config["added_tokens_decoder"].items()} == {
        t["id"]: t["content"] for t in added}
    tok, raw = load_tokenizer(str(out)), Tokenizer.from_file(str(out / "tokenizer.json"))
    assert all(tok.convert_tokens_to_ids(t["content"]) == t["id"] for t in added)
    text = "<|im_start|>user\n건강을 유지하기 위한 팁<|im_end|>"
    assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids


def test_rerun_is_skipped(trained, ko_records):
    out, _ = trained
    m = tokenizer_train(ko_records, out, vocab_size=2000, progress=False)
    assert m.skipped


def test_bad_vocab_size_is_one_line_and_writes_nothing(ko_records, tmp_path, runner):
    out = tmp_path / "tok"
    result = runner.invoke(cli, ["tokenizer-train", str(ko_records), "-o", str(out), "--vocab-size", "0"])
    assert result.exit_code == 2
    assert "Error: Invalid value for '--vocab-size': 0 is not in the range x>=100." in result.output
    with pytest.raises(DataprepError, match=r"^tokenizer-train.vocab_size: 0 is out of range; expected an int ≥ 100$"):
        tokenizer_train(ko_records, out, vocab_size=0)
    assert not out.exists()


def test_held_out_split_is_seeded_and_disjoint():
    train, held = split_held_out(100, 0.1, seed=0)
    assert len(held) == 10 and not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert split_held_out(100, 0.1, seed=0) == (train, held)
    assert split_held_out(100, 0.1, seed=1) != (train, held)
    assert split_held_out(2, 0.01, seed=0)[1] and split_held_out(2, 0.5, seed=0)[0]
