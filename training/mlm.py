"""Masked-LM training of a BERT-family encoder on `text` shards tokenized with an encoder
tokenizer: continued from a checkpoint (default: the packaged MiniLM) or from a config
(`--from-config`, with `--hidden-size` and `--layers`; e.g. after `dataprep tokenizer-train`).

Masking is transformers' DataCollatorForLanguageModeling (`torch_mask_tokens`): each non-special
token is picked with `--mlm-probability` (0.15); of those 80% become [MASK], 10% a random token,
10% stay; only picked tokens are labelled. Special tokens and padding are never picked.
`--whole-word`: a word's pieces are picked together (transformers' whole-word path, which
replaces every picked token with [MASK]); words are told apart by the tokenizer's continuation
marker (WordPiece `##`; byte-level BPE: no leading `Ġ`/`▁`). Masks are drawn anew each epoch
(seed + epoch); the eval set's masks are fixed, so eval losses compare.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dataprep.errors import DataprepError
from dataprep.options import opt
from dataprep.stage import Manifest, Outcome, Workspace, run_stage
from training import data
from training.loop import Logger, LoopConfig, device, peak_memory_gb, plot_losses, train_loop
from training.outputs import finish_run


@dataclass(frozen=True)
class MLMOptions:
    """The options only masked-LM training has (dataprep.options; through TrainOptions)."""

    mlm_probability: float = opt(0.15, "mlm: share of the tokens picked for prediction.", min=0, max=1, min_open=True)
    whole_word: bool = opt(False, "mlm: pick whole words (all their pieces) instead of single tokens.")
    from_config: bool = opt(False, "mlm: a new BERT (random weights) with the shards' tokenizer, sized by "
                            "--hidden-size and --layers, instead of continuing --model.")
    hidden_size: int = opt(256, "mlm --from-config: hidden size (heads: hidden size / 64).", min=8)
    layers: int = opt(4, "mlm --from-config: transformer layers.", min=1)


@dataclass(frozen=True)
class MLMConfig(MLMOptions, LoopConfig):
    model: str = "minilm"
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    val_size: float = 0.05


class Masker:
    """Picks and replaces tokens of padded batches (see the module doc)."""

    def __init__(self, tokenizer, probability: float, whole_word: bool):
        import warnings

        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token_id is None:
            raise DataprepError("--task mlm needs an encoder tokenizer with a mask token")
        with warnings.catch_warnings():  # whole-word: "random replacement is not supported" (documented above)
            warnings.simplefilter("ignore")
            self.collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability,
                                                            whole_word_mask=whole_word)
        self.special = sorted(set(tokenizer.all_special_ids))
        self.whole_word = whole_word
        prefix = getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None) \
            if getattr(tokenizer, "is_fast", False) else None
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.continues = [bool(t) and (t.startswith(prefix) if prefix else not t.startswith(("Ġ", "▁")))
                          for t in tokens]

    def offsets(self, input_ids):
        """Character offsets transformers' whole-word masking reads: a word's pieces touch, words don't."""
        import torch

        cont = torch.tensor(self.continues, dtype=torch.long)[input_ids.clamp(max=len(self.continues) - 1)]
        step = 2 - cont  # a gap of one before every token that starts a word
        ends = step.cumsum(-1)
        return torch.stack([ends - 1, ends], -1)

    def __call__(self, input_ids, attention_mask, generator):
        """(masked input_ids, labels): -100 wherever a token was not picked."""
        import torch

        special = torch.isin(input_ids, torch.tensor(self.special)) | (attention_mask == 0)
        self.collator.generator = generator
        offsets = self.offsets(input_ids) if self.whole_word else None
        return self.collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special, offset_mapping=offsets)


def mlm_batches(dataset, masker: Masker, pad: int, micro_batch: int):
    """seed -> padded micro-batches masked with a generator seeded by `seed`."""
    import torch

    def make(seed: int) -> list:
        gen = torch.Generator().manual_seed(seed)

        def collate(rows):
            batch = data.collate_padded([{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in rows], pad)
            ids, labels = masker(batch["input_ids"], batch["attention_mask"], gen)
            return {"input_ids": ids, "attention_mask": batch["attention_mask"], "labels": labels,
                    "n_targets": int((labels != -100).sum()), "n_tokens": int(batch["attention_mask"].sum())}

        return data.batcher(dataset, micro_batch, collate)(seed)

    return make


def mlm_loss_sum(model, batch: dict[str, Any]):
    """(cross-entropy summed over the picked tokens, their count)."""
    n = batch["n_targets"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss * n if n else out.logits.sum() * 0, n


def load_mlm_model(model_path: str, tokenizer, cfg: MLMConfig, max_len: int | None):
    """A BERT masked-LM: continued from `model_path`, or new from a config (--from-config)."""
    import torch
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    if not cfg.from_config:
        return AutoModelForMaskedLM.from_pretrained(model_path, dtype=torch.float32).to(device())
    if cfg.hidden_size % 64 and cfg.hidden_size > 64:
        raise DataprepError(f"--hidden-size {cfg.hidden_size} is not a multiple of 64 (one attention head per 64); "
                            "pick e.g. 256 or 512")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
                        num_attention_heads=max(1, cfg.hidden_size // 64), intermediate_size=4 * cfg.hidden_size,
                        max_position_embeddings=max(512, max_len or 0), pad_token_id=tokenizer.pad_token_id or 0)
    torch.manual_seed(cfg.seed)
    return BertForMaskedLM(config).to(device())


def check_mlm_shards(manifest, tokenizer, shards: str) -> None:
    """Encoder shards, unpacked, from a tokenizer with a mask token; else one line saying what to do."""
    name = manifest.lineage.tokenizer.name if manifest.lineage.tokenizer else "its tokenizer"
    if tokenizer.mask_token_id is None:
        raise DataprepError(f"--task mlm needs shards from an encoder tokenizer with a mask token; {shards} was tokenized "
                            f"with {name} (a causal tokenizer, no mask token): re-tokenize with --tokenizer minilm")
    if manifest.lineage.packed:
        raise DataprepError(f"--task mlm trains unpacked shards (an encoder attends across packed rows); "
                            f"re-tokenize {shards} without --pack")


def train_mlm(shards: str, out: str, config: MLMConfig, force: bool = False) -> Manifest:
    """Masked-LM training on text shards (see the module doc); writes the model and tokenizer,
    metrics.json (eval loss before and after), loss.png and runs/ to `out`."""
    from training.sft import eval_loss

    dataset, eval_set, manifest, tokenizer, model_path = data.prepare_run(shards, config, "mlm")
    check_mlm_shards(manifest, tokenizer, shards)
    lineage = manifest.lineage

    def build(ws: Workspace) -> Outcome:
        model = load_mlm_model(model_path, tokenizer, config, lineage.max_len)
        masker = Masker(tokenizer, config.mlm_probability, config.whole_word)
        pad = tokenizer.pad_token_id or 0
        eval_batches = mlm_batches(eval_set, masker, pad, config.micro_batch * 2)(config.seed) if eval_set is not None else None
        logger = Logger(config.report_to, ws.out / "runs", dataclasses.asdict(config))
        with ws.timer("train"):
            hist = train_loop(model, mlm_batches(dataset, masker, pad, config.micro_batch), mlm_loss_sum,
                              (lambda: eval_loss(model, eval_batches, mlm_loss_sum)) if eval_batches else None, config, logger)
        logger.close()
        metrics = {
            "train_loss": hist.train,
            "eval_loss": hist.eval,
            "steps": len(hist.train),
            "tokens": hist.tokens,
            "masked_tokens": hist.trained_tokens,
            "train_seconds": round(hist.seconds, 3),
            "tokens_per_s": round(hist.tokens / max(hist.seconds, 1e-9), 1),
            "from_config": config.from_config,
            "params": sum(p.numel() for p in model.parameters()),
            "device": device(),
            **peak_memory_gb(),
        }
        plot_losses(hist, ws.out / "loss.png", f"masked LM {'new BERT' if config.from_config else config.model}")
        return finish_run(ws, model, tokenizer, metrics, task="mlm", config=config, model_path=model_path,
                          train_set=dataset, eval_set=eval_set)

    return run_stage("train", out, inputs=[p for p in (shards, config.eval_shards) if p],
                     config={**dataclasses.asdict(config), "task": "mlm"}, build=build,
                     data_files=("config.json", "metrics.json"), force=force, upstream=manifest)
