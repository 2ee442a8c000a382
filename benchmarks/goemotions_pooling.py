"""[CLS] pooler vs mean pooling for MiniLM multi-label classification on a GoEmotions slice (CPU).

A quick A/B behind the next GoEmotions step: the same encoder, data, seed and schedule; only the
pooling differs. `cls` is transformers' BertForSequenceClassification ([CLS] -> pooler -> head,
what `dataprep train --task classify` uses); `mean` is the masked mean of the last hidden states
(how all-MiniLM-L6-v2 was trained) -> dropout 0.1 -> linear head. The threshold is tuned on the
same 2,000 dev rows it is scored on, so read the two numbers against each other only.

    python benchmarks/goemotions_pooling.py cls 6000 2 1e-4     # mode, train rows, epochs, lr
    python benchmarks/goemotions_pooling.py mean 6000 2 1e-4
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.goemotions_classify import read_split as read  # noqa: E402
from dataprep.models import resolve_model  # noqa: E402
from training.metrics import multilabel_metrics, tune_threshold  # noqa: E402

LABELS = 28


def main() -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

    mode, n, epochs, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    torch.set_num_threads(1)  # two modes side by side on two cores
    train = read("train")
    random.Random(0).shuffle(train)
    train, dev = train[:n], read("dev")[:2000]
    path = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    if mode == "cls":
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=LABELS, problem_type="multi_label_classification", dtype=torch.float32)

        def forward(enc):
            return model(**enc).logits
    else:
        encoder, head = AutoModel.from_pretrained(path, dtype=torch.float32), torch.nn.Linear(384, LABELS)
        model = torch.nn.ModuleDict({"encoder": encoder, "head": head})

        def forward(enc):
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (encoder(**enc).last_hidden_state * mask).sum(1) / mask.sum(1)
            return head(torch.nn.functional.dropout(pooled, 0.1, model.training))

    def encode(rows):
        return tok([t for t, _ in rows], truncation=True, max_length=64, padding=True, return_tensors="pt")

    def targets(rows):
        return torch.tensor([[1.0 if j in ids else 0.0 for j in range(LABELS)] for _, ids in rows])

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    bs, steps = 32, int(n / 32 * epochs)
    scheduler = get_scheduler("cosine", optimizer, int(0.1 * steps), steps)
    start, step = time.time(), 0
    model.train()
    while step < steps:
        random.Random(step).shuffle(train)
        for i in range(0, len(train) - bs + 1, bs):
            if step >= steps:
                break
            batch = train[i : i + bs]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(encode(batch)), targets(batch))
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
    model.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(forward(encode(dev[i : i + 128]))) for i in range(0, len(dev), 128)]).numpy()
    y = targets(dev).numpy()
    threshold = tune_threshold(y, scores)
    m = multilabel_metrics(y, scores, threshold, [str(i) for i in range(LABELS)])
    print(f"{mode}: {n} rows x {epochs} epochs, lr {lr}, {steps} steps, {time.time() - start:.0f} s; threshold {threshold}; "
          f"dev micro-F1 {m['f1_micro']:.4f}  macro-F1 {m['f1_macro']:.4f}  ROC-AUC {m['roc_auc_micro']:.4f}")


if __name__ == "__main__":
    main()
