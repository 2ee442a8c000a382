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
