"""Offline model resolution: the two packaged real models load and work; unknown names fail in one line."""

from __future__ import annotations

import pytest

from dataprep.errors import DataprepError
from dataprep.models import resolve_model, tokenizer_fingerprint


def test_local_path_is_used_as_is(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_offline_hub_id_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataprepError) as err:
        resolve_model("someone/no-such-model-xyz")
    message = str(err.value)
    assert "\n" not in message
    assert "someone/no-such-model-xyz" in message and "--local-dir" in message


def test_unknown_plain_name_fails_with_one_line():
    with pytest.raises(DataprepError, match="not a packaged model"):
        resolve_model("no-such-model")


@pytest.mark.slow
def test_minilm_gives_a_real_sentence_embedding():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model("minilm"), device="cpu")
    emb = model.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."],
                       normalize_embeddings=True)
    assert emb.shape == (3, 384)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 > unrelated


@pytest.mark.slow
def test_smollm2_generates_real_text():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(AutoTokenizer.from_pretrained(path))


def test_smollm2_cache_saves_added_tokens_and_loads_the_same(tmp_path, monkeypatch):
    """A SmolLM2 cache converted before the added tokens were saved gets them in tokenizer_config.json
    once; the tokenizer then loads without transformers parsing tokenizer.json in Python, and is the same."""
    import json
    import shutil
    from pathlib import Path

    import transformers.tokenization_utils_base as base
    from transformers import AutoTokenizer

    from dataprep.models import _save_added_tokens

    cached = Path(resolve_model("smollm2-135m"))
    old = tmp_path / "old"
    old.mkdir()
    for name in ("tokenizer.json", "chat_template.jinja", "config.json"):
        shutil.copy(cached / name, old / name)
    config = json.loads((cached / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    new = tmp_path / "new"
    shutil.copytree(old, new)
    _save_added_tokens(new)
    saved = json.loads((new / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    added = json.loads((old / "tokenizer.json").read_text())["added_tokens"]
    assert len(saved) == len(added) == 17 and saved["2"] == {
        "content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
        "special": True}
    before = (new / "tokenizer_config.json").read_bytes()
    _save_added_tokens(new)  # once: a second call leaves the file as it is
    assert (new / "tokenizer_config.json").read_bytes() == before

    opened = []

    def spy(file, *args, **kwargs):
        opened.append(Path(file).name)
        return open(file, *args, **kwargs)

    monkeypatch.setattr(base, "open", spy, raising=False)
    a = AutoTokenizer.from_pretrained(old)
    assert "tokenizer.json" in opened  # the legacy path reads it in Python
    opened.clear()
    b = AutoTokenizer.from_pretrained(new)
    assert "tokenizer.json" not in opened and "tokenizer_config.json" in opened
    text = "<|im_start|>user\nHi, 안녕? <|endoftext|><|im_end|>\n"
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    assert (a(text)["input_ids"], a.special_tokens_map, a.all_special_ids, len(a)) == (
        b(text)["input_ids"], b.special_tokens_map, b.all_special_ids, len(b))
    assert {k: v.__getstate__() for k, v in a.added_tokens_decoder.items()} == {
        k: v.__getstate__() for k, v in b.added_tokens_decoder.items()}
