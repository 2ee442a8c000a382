"""Mean-pooled multi-label classifier for sentence-transformers encoders.

all-MiniLM-L6-v2 (our packaged `minilm`) and other sentence-transformers encoders were trained
on the masked mean of their last hidden states; their [CLS] pooler never was. transformers'
`*ForSequenceClassification` classifies from [CLS] (through that pooler for BERT), so for these
encoders we classify from the masked mean: encoder -> masked mean -> dropout -> linear.
On GoEmotions (one H100, 3 epochs) this gave test micro-F1 0.605 against 0.527 for [CLS]
(benchmarks/goemotions_classify.py, benchmarks/RESULTS.md).

Saved as the encoder's own files (or its LoRA adapter) plus `HEAD_FILE`; `thresholds.json`
says `"pooling": "mean"`. Load it back with `training.outputs.load_trained_classifier`:
`AutoModelForSequenceClassification` would put a fresh [CLS] head on the encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HEAD_FILE = "mean_pooling_head.safetensors"


def sentence_pooling(model_path: str | Path) -> str | None:
    """The pooling a sentence-transformers model directory declares ('mean', 'cls', ...), else None."""
    path = Path(model_path)
    try:
        modules = json.loads((path / "modules.json").read_text())
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        cfg = json.loads((path / pooling["path"] / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return None
    if "pooling_mode" in cfg:  # sentence-transformers >= 5
        return cfg["pooling_mode"]
    return next((k[len("pooling_mode_"):].removesuffix("_token").removesuffix("_tokens")
                 for k, on in cfg.items() if k.startswith("pooling_mode_") and on is True), None)


class MeanPoolingClassifier(torch.nn.Module):
    """`encoder` (an AutoModel, possibly a peft model) -> masked mean -> dropout -> linear, with
    the `model(input_ids, attention_mask, labels)` -> `.loss`/`.logits` interface of transformers'
    multi-label classifiers (BCE-with-logits, mean over rows and labels). The encoder's own
    pooler, if any, stays frozen: it is not used."""

    pooling = "mean"

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.config
        self.dropout = torch.nn.Dropout(getattr(cfg, "classifier_dropout", None) or getattr(cfg, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(cfg.hidden_size, num_labels)
        pooler = getattr(encoder, "pooler", None)
        for p in pooler.parameters() if pooler is not None else []:
            p.requires_grad = False

    @property
    def config(self):
        return self.encoder.config

    @property
    def base_model(self):
        return self.encoder

    def forward(self, input_ids, attention_mask=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, out: str | Path) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(out)
        save_file({k: v.detach().contiguous() for k, v in self.classifier.state_dict().items()}, str(Path(out) / HEAD_FILE))

    def load_head(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        self.classifier.load_state_dict(load_file(str(Path(path) / HEAD_FILE)))

    def merge_and_unload(self):
        """Merge a LoRA encoder into its base weights (`dataprep merge`); returns self."""
        self.encoder = self.encoder.merge_and_unload()
        return self
