"""Tiny offline fixtures for the training tests: a word-level tokenizer, tiny models from config,
and token shards written exactly per the tokenize stage's output contract."""

from __future__ import annotations

import json
import random
from pathlib import Path

from dataprep.records import IGNORE_INDEX

WORDS = [f"w{i}" for i in range(40)]
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "[CLS]", "[SEP]"]


def tiny_tokenizer(encoder: bool = False):
    """encoder: an encoder's tokenizer instead: a [MASK] token (last id), no EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + (["[MASK]"] if encoder else []))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    ends = {"mask_token": "[MASK]"} if encoder else {"eos_token": "<eos>", "bos_token": "<bos>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", cls_token="[CLS]", sep_token="[SEP]", **ends,
    )


def tiny_masked_lm(path: Path, seed: int = 0) -> Path:
    """A 2-layer BertForMaskedLM (hidden 64) with the tiny encoder tokenizer, saved to `path`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer(encoder=True)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertForMaskedLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_causal_lm(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 64) with the tiny tokenizer, saved to `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 64) with the tiny tokenizer, saved to `path`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows whose completion is the prompt's words shifted by one (w3 -> w4), then EOS: learnable."""
    tok = tiny_tokenizer()
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(2, 6)
        prompt = [rng.randrange(0, 39) for _ in range(k)]
        p_ids = tok.convert_tokens_to_ids([WORDS[i] for i in prompt])
        c_ids = tok.convert_tokens_to_ids([WORDS[i + 1] for i in prompt]) + [tok.eos_token_id]
        rows.append({"input_ids": p_ids + c_ids, "labels": [IGNORE_INDEX] * len(p_ids) + c_ids})
    return rows


def pack(rows: list[dict], max_len: int) -> list[dict]:
    """Greedy packing in order; position_ids restart at 0 per sequence."""
    bins: list[list[dict]] = [[]]
    for r in rows:
        if sum(len(x["input_ids"]) for x in bins[-1]) + len(r["input_ids"]) > max_len:
            bins.append([])
        bins[-1].append(r)
    out = []
    for b in bins:
        out.append({
            "input_ids": [t for r in b for t in r["input_ids"]],
            "labels": [t for r in b for t in r["labels"]],
            "position_ids": [p for r in b for p in range(len(r["input_ids"]))],
            "seq_lengths": [len(r["input_ids"]) for r in b],
        })
    return out


def write_shards(out: Path, rows: list[dict], kind: str, tokenizer, *, packed: bool = False, max_len: int = 64,
                 label_names: list[str] | None = None, tokenizer_name: str = "tiny") -> Path:
    """A `datasets` save_to_disk directory plus manifest.json, as `dataprep tokenize` writes them."""
    from datasets import Dataset

    from dataprep.models import tokenizer_fingerprint
    from dataprep.stage import Counts, Lineage, Manifest, TokenizerInfo

    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "length"}
    cols["length"] = [r["length"] if "length" in r else len(r["input_ids"]) for r in rows]
    Dataset.from_dict(cols).save_to_disk(str(out))
    info = TokenizerInfo(tokenizer_name, tokenizer_fingerprint(tokenizer), tokenizer_name, tokenizer.pad_token_id,
                         tokenizer.eos_token_id)
    lineage = Lineage(kind=kind, label_names=label_names or None, tokenizer=info,
                      max_len=max_len, packed=packed)
    manifest = Manifest("tokenize", "hand-made", [], {}, Counts(len(rows), len(rows)), lineage=lineage)
    (out / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return out


def tiny_sft_run(d: Path) -> dict:
    """A tiny causal LM, 48 sft rows and their shards packed to 40 tokens, under `d`: what the
    training tests that run steps share."""
    rows = sft_rows(48)
    return {"model": tiny_causal_lm(d / "model"), "rows": rows,
            "packed": write_shards(d / "packed", pack(rows, 40), "sft", tiny_tokenizer(), packed=True, max_len=40)}


def classify_rows(n: int, label_names: list[str], seed: int = 0) -> list[dict]:
    """Label j is on iff word w{j} occurs in the text: learnable by a tiny encoder."""
    tok = tiny_tokenizer()
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.randrange(0, 8) for _ in range(rng.randint(2, 6))]
        ids = [tok.cls_token_id] + tok.convert_tokens_to_ids([WORDS[w] for w in words]) + [tok.sep_token_id]
        rows.append({"input_ids": ids, "label_ids": sorted({j for j in words if j < len(label_names)})})
    return rows


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose chosen answer is words w0-w9 and whose rejected answer is words w20-w39 (a
    preference a tiny model learns and generalises); both end with EOS. Columns as tokenize's
    preference shards."""
    tok = tiny_tokenizer()
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(0, 39) for _ in range(rng.randint(2, 5))]
        p_ids = tok.convert_tokens_to_ids([WORDS[i] for i in prompt])
        c_ids = tok.convert_tokens_to_ids([WORDS[rng.randrange(0, 10)] for _ in range(rng.randint(2, 5))])
        r_ids = tok.convert_tokens_to_ids([WORDS[rng.randrange(20, 40)] for _ in range(rng.randint(2, 5))])
        c_ids, r_ids = c_ids + [tok.eos_token_id], r_ids + [tok.eos_token_id]
        mask = [IGNORE_INDEX] * len(p_ids)
        rows.append({"prompt_input_ids": p_ids, "chosen_input_ids": p_ids + c_ids, "chosen_labels": mask + c_ids,
                     "rejected_input_ids": p_ids + r_ids, "rejected_labels": mask + r_ids,
                     "length": len(p_ids) + max(len(c_ids), len(r_ids))})
    return rows
