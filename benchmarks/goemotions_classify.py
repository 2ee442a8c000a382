"""Real result: MiniLM (22M parameters) multi-label classification on GoEmotions (28 labels).

Builds classify shards from ../shared/data/goemotions (train/dev/test TSV: text, comma-separated
label ids, comment id) with the MiniLM tokenizer, in the tokenize stage's output format, then runs
training.classify.train_classifier: threshold tuned on dev, metrics on the full test set.
Published anchors: distilbert-base F1 0.558, roberta-base micro-F1 0.585; our target micro-F1 >= 0.55.

Runs on CUDA when there is one; on a CPU, `--train-rows N` trains on the first N training rows
of a seeded shuffle (say so when reporting).

    python benchmarks/goemotions_classify.py --out out/goemotions [--train-rows 8000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataprep.models import load_tokenizer, resolve_model, tokenizer_fingerprint  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "goemotions"


def read_split(name: str) -> list[tuple[str, list[int]]]:
    with open(DATA / f"{name}.tsv", newline="", encoding="utf-8") as fh:
        return [(r[0], [int(x) for x in r[1].split(",")]) for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def write_shards(out: Path, rows: list[tuple[str, list[int]]], names: list[str], tok, max_len: int,
                 fingerprint: str, model: str) -> Path:
    from datasets import Dataset

    from dataprep.stage import Counts, Lineage, Manifest, TokenizerInfo

    enc = tok([t for t, _ in rows], truncation=True, max_length=max_len)["input_ids"]
    label_ids = [sorted(ids) for _, ids in rows]
    Dataset.from_dict({"input_ids": enc, "label_ids": label_ids, "length": [len(x) for x in enc]}).save_to_disk(str(out))
    info = TokenizerInfo(model, fingerprint, resolve_model(model), tok.pad_token_id, tok.sep_token_id)
    lineage = Lineage(kind="classify", label_names=names, tokenizer=info, max_len=max_len, packed=False)
    manifest = Manifest("tokenize", "goemotions-benchmark", [], {}, Counts(len(rows), len(rows)), lineage=lineage)
    (out / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2))
    return out


def per_label_test(model_dir: Path, dirs: dict[str, Path], micro_batch: int) -> dict:
    from training.classify import classify_batches, predict_scores
    from training.data import load_shards
    from training.loop import device
    from training.metrics import multilabel_metrics, tune_threshold
    from training.outputs import load_trained_classifier

    model, saved = load_trained_classifier(str(model_dir))
    model.to(device())
    scores = {}
    for split in ("dev", "test"):
        ds, manifest = load_shards(str(dirs[split]))
        pad, n_labels = manifest.lineage.tokenizer.pad_token_id, len(saved["label_names"])
        scores[split] = predict_scores(model, classify_batches(ds, pad, micro_batch * 2, n_labels)(0))
    threshold = tune_threshold(scores["dev"][0], scores["dev"][1], per_label=True)
    return multilabel_metrics(scores["test"][0], scores["test"][1], threshold, saved["label_names"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/goemotions")
    ap.add_argument("--train-rows", type=int, default=0, help="0 = all 43,410")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--per-label-threshold", action="store_true")
    ap.add_argument("--model", default="minilm", help="minilm (the packaged one) or a local copy of it")
    ap.add_argument("--pooling", default="auto", help="auto (mean for MiniLM), cls or mean")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    from training.classify import ClassifyConfig, train_classifier
    from training.metrics import format_table
    from training.outputs import read_metrics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in (DATA / "emotions.txt").read_text().splitlines() if n.strip()]
    tok = load_tokenizer(args.model)
    fingerprint = tokenizer_fingerprint(tok)  # before encoding: truncation settings change the backend's JSON
    train = read_split("train")
    if args.train_rows:
        random.Random(0).shuffle(train)
        train = train[: args.train_rows]
    dirs = {}
    for split, rows in (("train", train), ("dev", read_split("dev")), ("test", read_split("test"))):
        dirs[split] = write_shards(out / f"{split}_shards", rows, names, tok, args.max_len, fingerprint, args.model)
    cfg = ClassifyConfig(
        model=args.model, lr=args.lr, epochs=args.epochs, micro_batch=args.micro_batch, eval_shards=str(dirs["dev"]),
        test_shards=str(dirs["test"]), eval_steps=500, per_label_threshold=args.per_label_threshold,
        report_to="tensorboard", pooling=args.pooling, seed=args.seed,
    )
    t0 = time.perf_counter()
    train_classifier(str(dirs["train"]), str(out / "model"), cfg, force=True)
    m = read_metrics(out / "model")
    print(f"{len(names)} labels; trained on {len(train):,} rows x {args.epochs} epochs ({m['steps']} steps, "
          f"{m['train_seconds']:.0f} s on {m['device']}); threshold tuned on dev: {m['threshold']}")
    for split in ("test@0.5", "test"):
        r = m[split]
        print(f"{split:>9}: micro-F1 {r['f1_micro']:.4f}  macro-F1 {r['f1_macro']:.4f}  ROC-AUC(micro) {r['roc_auc_micro']:.4f}  "
              f"subset acc {r['subset_accuracy']:.4f}  Jaccard {r['jaccard_samples']:.4f}  Hamming {r['hamming_loss']:.4f}")
    print(format_table(m["test"]))
    if not args.per_label_threshold:  # the same trained model with one threshold per label, tuned on dev
        r = per_label_test(out / "model", dirs, args.micro_batch)
        print(f"per-label thresholds: micro-F1 {r['f1_micro']:.4f}  macro-F1 {r['f1_macro']:.4f}  "
              f"subset acc {r['subset_accuracy']:.4f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
