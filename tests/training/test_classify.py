"""Multi-label classification: a few steps on a tiny encoder, the saved model and thresholds
reproduce the reported metrics, freezing and LoRA train what they should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataprep.errors import DataprepError
from tests.train_helpers import classify_rows, sft_rows, tiny_encoder, tiny_tokenizer, write_shards
from training.classify import ClassifyConfig, train_classifier

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    tok = tiny_tokenizer()
    return {
        "model": tiny_encoder(d / "enc"),
        "train": write_shards(d / "train", classify_rows(96, NAMES), "classify", tok, label_names=NAMES),
        "test": write_shards(d / "test", classify_rows(32, NAMES, seed=1), "classify", tok, label_names=NAMES),
        "tok": tok,
    }


def _config(tiny, **kw):
    base = dict(model=str(tiny["model"]), micro_batch=16, lr=1e-2, max_steps=30, eval_steps=15, val_size=24,
                test_shards=str(tiny["test"]), report_to="none", warmup_ratio=0.0)
    return ClassifyConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_learns_and_saved_model_reproduces_test_metrics(tiny, tmp_path, pooling):
    import torch
    from sklearn.metrics import f1_score, roc_auc_score

    from training.data import load_shards
    from training.outputs import load_trained_classifier

    out = tmp_path / "cls"
    train_classifier(str(tiny["train"]), str(out), _config(tiny, pooling=pooling))
    result = json.loads((out / "metrics.json").read_text())
    assert result["pooling"] == pooling
    losses = [r["loss"] for r in result["train_loss"]]
    assert np.mean(losses[-5:]) < losses[0] - 0.08, losses
    assert result["eval_curve"][-1]["loss"] < result["eval_curve"][0]["loss"]

    # reload what was saved and recompute the test metrics with scikit-learn
    model, saved = load_trained_classifier(str(out))
    assert saved["label_names"] == NAMES and saved["threshold"] == result["threshold"]
    assert saved["pooling"] == pooling
    if pooling == "cls":  # a standard transformers classifier
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(out).eval()
        assert model.config.problem_type == "multi_label_classification"
        assert [model.config.id2label[i] for i in range(4)] == NAMES
    test, _ = load_shards(tiny["test"])
    with torch.no_grad():
        scores = np.concatenate([torch.sigmoid(model(input_ids=torch.tensor([r["input_ids"]])).logits).numpy()
                                 for r in test])
    y = np.zeros((len(test), len(NAMES)), dtype=int)
    for i, ids in enumerate(test["label_ids"]):
        y[i, ids] = 1
    pred = (scores >= saved["threshold"]).astype(int)
    assert result["test"]["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-6)
    assert result["test"]["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-6)
    assert result["test"]["roc_auc_micro"] == pytest.approx(roc_auc_score(y, scores, average="micro"), abs=1e-4)
    assert result["test"]["subset_accuracy"] == pytest.approx(float((pred == y).all(1).mean()), abs=1e-6)
    assert result["test"]["rows"] == 32
    assert result["test"]["roc_auc_micro"] > 0.6  # learned something beyond chance

    # `dataprep generate` on a classifier: every label's score as the model gives it, and the
    # labels at or above the saved threshold
    from click.testing import CliRunner

    from dataprep.cli import cli

    text = tiny["tok"].decode(test[0]["input_ids"][1:-1])
    r = CliRunner().invoke(cli, ["generate", str(out), "--prompt", text, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    with torch.no_grad():  # the tiny tokenizer adds no [CLS]/[SEP], so neither does generate
        expected = torch.sigmoid(model(input_ids=torch.tensor([tiny["tok"](text)["input_ids"]])).logits)[0].tolist()
    assert got["prompt"] == text
    assert got["scores"] == pytest.approx(dict(zip(NAMES, expected, strict=True)), abs=1e-4)
    assert set(got["labels"]) == {n for n, v in zip(NAMES, expected, strict=True) if v >= saved["threshold"]}
    r = CliRunner().invoke(cli, ["generate", str(out), "--prompt", text, "--compare-base"])
    assert r.exit_code == 1 and "is a classifier: --compare-base and --template apply to SFT models" in r.output


@pytest.mark.slow
def test_freeze_layers_and_lora_train_only_what_they_should(tiny):
    from training.classify import setup_model

    cfg = _config(tiny, freeze_layers=1)
    model, trainable, total = setup_model(str(tiny["model"]), NAMES, cfg)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for n in names)
    assert {"classifier.weight", "classifier.bias"} <= names
    lora, lora_trainable, _ = setup_model(str(tiny["model"]), NAMES, _config(tiny, lora=True))
    lora_names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "classifier" in n for n in lora_names), lora_names
    assert lora_trainable < trainable < total


def test_classify_errors_before_training(tiny, tmp_path):
    sft = write_shards(tmp_path / "sft", sft_rows(4), "sft", tiny["tok"])
    with pytest.raises(DataprepError, match=r"kind 'sft' \(task sft\) but --task is classify"):
        train_classifier(str(sft), str(tmp_path / "o1"), _config(tiny))
    other = write_shards(tmp_path / "other", classify_rows(8, ["x", "y"]), "classify", tiny["tok"], label_names=["x", "y"])
    with pytest.raises(DataprepError, match="label names of .* differ"):
        train_classifier(str(tiny["train"]), str(tmp_path / "o2"), _config(tiny, test_shards=str(other)))
    with pytest.raises(DataprepError, match="exceeds the model's 2 layers"):
        train_classifier(str(tiny["train"]), str(tmp_path / "o3"), _config(tiny, freeze_layers=5))
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_a_half_precision_checkpoint_trains_in_fp32(tmp_path):
    """transformers 5 loads a checkpoint in its saved dtype; pure fp16 training loses small
    updates, so the classifier is always loaded in fp32."""
    import torch
    from transformers import AutoModel

    from training.classify import load_classifier

    AutoModel.from_pretrained(tiny_encoder(tmp_path / "enc")).half().save_pretrained(tmp_path / "fp16")
    tiny_tokenizer().save_pretrained(tmp_path / "fp16")
    model = load_classifier(str(tmp_path / "fp16"), NAMES)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def _mean_pooling_dir(path):
    """A tiny encoder laid out as a sentence-transformers model that declares mean pooling."""
    tiny_encoder(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return path


def test_auto_pooling_follows_the_sentence_transformers_config(tmp_path):
    from dataprep.models import resolve_model
    from training.classify import resolve_pooling
    from training.pooling import sentence_pooling

    assert sentence_pooling(resolve_model("minilm")) == "mean"  # the packaged all-MiniLM-L6-v2
    st = _mean_pooling_dir(tmp_path / "st")
    assert resolve_pooling("auto", str(st)) == "mean"
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))  # sentence-transformers 5 key
    assert resolve_pooling("auto", str(st)) == "cls"
    plain = tiny_encoder(tmp_path / "plain")
    assert sentence_pooling(plain) is None and resolve_pooling("auto", str(plain)) == "cls"
    assert resolve_pooling("mean", str(plain)) == "mean"
    with pytest.raises(DataprepError, match="--pooling 'max' is not one of auto, cls, mean"):
        resolve_pooling("max", str(plain))


def test_mean_pooling_is_the_masked_mean_and_ignores_padding(tmp_path):
    import torch

    from training.classify import load_mean_classifier

    model = load_mean_classifier(str(tiny_encoder(tmp_path / "enc")), NAMES).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0], [9, 10, 0, 0, 0, 0, 0]])
    mask = (padded != 0).long()
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        batch = model(input_ids=padded, attention_mask=mask).logits
        hidden = model.encoder(input_ids=ids).last_hidden_state
        by_hand = hidden.mean(1) @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(alone, by_hand)
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)  # padding changes nothing
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    loss = model(input_ids=padded, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(batch, labels))


@pytest.mark.slow
def test_mean_pooling_lora_and_freezing_train_what_they_should_and_merge(tiny, tmp_path):
    import torch

    from training.classify import setup_model
    from training.data import load_shards
    from training.merge import merge_adapter
    from training.outputs import load_trained_classifier

    st = str(_mean_pooling_dir(tmp_path / "st"))
    frozen, _, _ = setup_model(st, NAMES, _config(tiny, model=st, freeze_layers=1))
    names = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert frozen.pooling == "mean"
    assert {"classifier.weight", "classifier.bias"} <= names and any(n.startswith("encoder.encoder.layer.1.") for n in names)
    assert not any(n.startswith(("encoder.encoder.layer.0.", "encoder.embeddings.", "encoder.pooler.")) for n in names)

    out = tmp_path / "adapter"
    train_classifier(str(tiny["train"]), str(out), _config(tiny, model=st, lora=True, lr=5e-2))
    result = json.loads((Path(out) / "metrics.json").read_text())
    assert result["pooling"] == "mean"
    assert (out / "adapter_config.json").is_file() and (out / "mean_pooling_head.safetensors").is_file()
    adapter, _ = load_trained_classifier(str(out))
    lora = {n: p.numel() for n, p in adapter.named_parameters() if "lora_" in n}
    assert lora and not any("pooler" in n for n in lora)
    assert result["trainable_params"] == sum(lora.values()) + 64 * 4 + 4  # LoRA + the head, nothing else

    merge_adapter(out, tmp_path / "merged", dtype="float32")
    merged, saved = load_trained_classifier(str(tmp_path / "merged"))
    assert saved["pooling"] == "mean" and not (tmp_path / "merged" / "adapter_config.json").exists()
    test, _ = load_shards(tiny["test"])
    ids = torch.tensor([test[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    expected = adapter(input_ids=ids).logits  # the trained head, not a fresh one
    assert not torch.allclose(expected, torch.zeros_like(expected))
