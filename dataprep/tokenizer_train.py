"""The tokenizer-train stage: retrain a tokenizer on records' text to a vocabulary size.

`train_new_from_iterator` keeps the base tokenizer's pipeline (normalizer, pre-tokenizer, special
tokens, chat template) and learns a new vocabulary from the training rows. A seeded held-out part
of the same rows measures tokens per character before (the base) and after (the new tokenizer),
so the gain is measured on text the new vocabulary did not see. OUT is a tokenizer directory
(`save_pretrained`) that `dataprep tokenize --tokenizer OUT` takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dataprep.options import opt, parse_options
from dataprep.stage import Manifest, Outcome, Rejects, Workspace, run_stage

BATCH = 1000  # texts per batch fed to the trainer


@dataclass(frozen=True)
class TokenizerTrainOptions:
    """The tokenizer-train stage's options (dataprep.options)."""

    base: str = opt("smollm2-135m", "Tokenizer to retrain: smollm2-135m, minilm, a local tokenizer/model directory, "
                                    "or a Hub id.")
    vocab_size: int = opt(8000, "Vocabulary size of the new tokenizer (special tokens and the base alphabet "
                                "included).", min=100)
    held_out: float = opt(0.1, "Fraction of rows held out (not trained on) to measure tokens per character before "
                               "and after.", min=0, max=0.5, min_open=True)
    seed: int = opt(0, "Seed of the held-out split.")


def tokens_per_char(tokenizer, texts: list[str]) -> float:
    """Tokens (no special tokens) per character over `texts`, summed over all of them."""
    chars = sum(len(t) for t in texts)
    if not chars:
        return 0.0
    tokens = 0
    for i in range(0, len(texts), BATCH):
        tokens += sum(len(ids) for ids in tokenizer(texts[i:i + BATCH], add_special_tokens=False)["input_ids"])
    return tokens / chars


def split_held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) row indices: a seeded shuffle, at least one row in each when n ≥ 2."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n).tolist()
    k = min(max(1, round(n * fraction)), n - 1)
    return sorted(order[k:]), sorted(order[:k])


def tokenizer_train(path: str | Path, out: str | Path, *, force: bool = False, progress: bool = True,
                    **options: Any) -> Manifest:
    """Retrain a tokenizer on the records at `path` and save it to `out`; `options` are the fields of
    TokenizerTrainOptions (base, vocab_size, held_out, seed). Returns the manifest, whose details hold
    tokens per character before and after on the held-out rows."""
    from dataprep import models
    from dataprep.dedupe.stage import record_texts, text_fields
    from dataprep.errors import DataprepError
    from dataprep.io import read_records
    from dataprep.stage import scan_records

    opts = parse_options(TokenizerTrainOptions, options, "tokenizer-train")
    data, manifest_in, kind, columns = scan_records(path, "train a tokenizer on")
    fields = text_fields(columns, kind, None)
    base = models.load_tokenizer(opts.base)
    if not getattr(base, "is_fast", False):
        raise DataprepError(f"tokenizer {opts.base} is not a fast (Rust) tokenizer; train_new_from_iterator needs one")
    config = {**asdict(opts), "base_fingerprint": models.tokenizer_fingerprint(base)}

    def build(ws: Workspace) -> Outcome:
        with ws.timer("read"):
            frame = read_records(data)
            texts = record_texts(frame, fields)
        rejects = Rejects()
        sources = frame.get_column("source").to_list() if "source" in frame.columns else [str(data)] * len(texts)
        rows = frame.get_column("row").to_list() if "row" in frame.columns else list(range(len(texts)))
        kept = []
        for i, t in enumerate(texts):
            if t.strip():
                kept.append(t)
            else:
                rejects.add(str(sources[i]), int(rows[i]), "empty text")
        if len(kept) < 2:
            raise DataprepError(f"tokenizer-train: {len(kept)} row(s) with text in {data}; need at least 2 "
                                "(some to train on, some held out)")
        train_idx, held_idx = split_held_out(len(kept), opts.held_out, opts.seed)
        train, held = [kept[i] for i in train_idx], [kept[i] for i in held_idx]

        def batches():
            for i in range(0, len(train), BATCH):
                yield train[i:i + BATCH]

        with ws.timer("train"):
            new = base.train_new_from_iterator(batches(), opts.vocab_size, length=len(train), show_progress=progress)
        with ws.timer("measure"):
            before, after = tokens_per_char(base, held), tokens_per_char(new, held)
        with ws.timer("save"):
            models.save_tokenizer(new, ws.out)
        details = {
            "base": opts.base,
            "text_fields": list(fields),
            "rows": {"train": len(train), "held_out": len(held)},
            "vocab_size": {"base": len(base), "new": len(new), "requested": opts.vocab_size},
            "tokens_per_char": {"before": round(before, 4), "after": round(after, 4),
                                "ratio": round(after / before, 4) if before else None},
            "held_out_chars": sum(len(t) for t in held),
        }
        return Outcome(len(texts), len(kept), details, rejects=rejects)

    return run_stage("tokenizer-train", out, inputs=[str(data)], config=config, build=build,
                     data_files=("tokenizer.json",), force=force, upstream=manifest_in)
