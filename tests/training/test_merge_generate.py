"""The CLI path train -> merge -> generate on a tiny model, and template rendering."""

from __future__ import annotations

import json
import re

import pytest

from dataprep.cli import cli
from dataprep.errors import DataprepError
from dataprep.stage import read_manifest
from dataprep.templates import render_prompt
from tests.train_helpers import pack, sft_rows, tiny_causal_lm, tiny_tokenizer, write_shards
from training.generate import render


def test_render_templates():
    tok = tiny_tokenizer()
    latex = "Convert English to LaTeX\nEnglish: {prompt}\nLaTeX:"
    assert render("x squared", latex, tok) == "Convert English to LaTeX\nEnglish: x squared\nLaTeX:"
    assert render("x squared", "latex", tok) == "Convert English to LaTeX\nEnglish: x squared\nLaTeX:"
    assert render("x squared", {"name": "custom", "without_input": "Q: {instruction}\nA:"}, tok) == "Q: x squared\nA:"
    assert render("x squared", "raw", tok) == "x squared"
    assert render("x squared", None, tok) == "x squared"
    # the same rendering as the training rows' prompts (dataprep.templates): no-input form, format-string braces
    assert render("x squared", "alpaca", tok) == render_prompt({"instruction": "x squared"}, "alpaca")
    assert render("x squared", "{{{prompt}}}", tok) == "{x squared}"
    with pytest.raises(DataprepError, match="no chat template"):
        render("x", "chat", tok)
    with pytest.raises(DataprepError, match=r"format string with \{prompt\}"):
        render("x", "English: {text}", tok)


@pytest.mark.slow
def test_train_merge_generate_cli(tmp_path, runner):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tmp_path / "model")
    shards = write_shards(tmp_path / "shards", pack(sft_rows(32), 40), "sft", tok, packed=True, max_len=40)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["lineage"]["template"] = {"name": "custom", "without_input": "{instruction} w1"}  # as convert records it
    (shards / "manifest.json").write_text(json.dumps(manifest))
    adapter = tmp_path / "adapter"
    args = ["train", str(shards), "--model", str(model), "--max-steps", "3", "--micro-batch", "4", "--report-to", "none",
            "--lr", "1e-2", "--lora-dropout", "0", "--no-gradient-checkpointing", "-o", str(adapter)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "trained 3 steps, " in result.output
    assert f"wrote {adapter} (adapter, tokenizer, metrics.json, loss.png)" in result.output
    again = runner.invoke(cli, args)
    assert "is up to date" in again.output and again.exit_code == 0

    result = runner.invoke(cli, ["merge", str(adapter), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    merged = read_manifest(tmp_path / "merged").lineage
    assert merged.template["without_input"] == "{instruction} w1" and merged.task == "sft"
    assert [u["stage"] for u in merged.upstream] == ["tokenize", "train"]

    result = runner.invoke(cli, ["generate", str(adapter), "--prompt", "w3 w4", "--max-new-tokens", "3",
                                 "--compare-base", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(m) for m in re.findall(r'\{"prompt".*\}', result.output)]  # stderr bars share the output
    assert len(rows) == 1, result.output[-1500:]
    row = rows[0]
    assert row["rendered"] == "w3 w4 w1"  # the template recorded with the shards
    assert {"output", "base_output"} <= set(row)
    result = runner.invoke(cli, ["generate", str(tmp_path / "merged"), "--prompt", "w3", "--compare-base"])
    assert result.exit_code == 1 and "needs an adapter directory" in result.output
