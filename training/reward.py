"""Bradley-Terry reward models on preference shards: a sequence-classification head with one
output, on an encoder (default: the packaged MiniLM; full fine-tuning or --lora, mean pooling for
sentence-transformers encoders as in classification) or on a decoder with LoRA (transformers'
`*ForSequenceClassification`: the score of the last non-pad token; the head trains in full).

Each micro-batch holds the chosen answers of its pairs, then the rejected ones (one padded
forward). Loss per pair: -log σ(r_chosen - r_rejected). Metrics: pairwise accuracy (share of
pairs with r_chosen > r_rejected) and the mean margin, on train and the held-out pairs.
Outputs: the model (or adapter) and tokenizer, `reward.json` (how to load and feed it: pooling,
decoder, pad id, max length), metrics.json, loss.png (with the accuracy), runs/.
`score_responses` (and `dataprep generate MODEL --prompt P --response R`) scores prompt + response.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.stage import Manifest, Outcome, Workspace, run_stage
from training import data
from training.classify import ClassifyConfig
from training.dpo import Tally, TallyLogger, evaluate_with, plot_with_accuracy
from training.loop import Logger, device, peak_memory_gb, train_loop
from training.outputs import finish_run

REWARD_FILE = "reward.json"


@dataclass(frozen=True)
class RewardConfig(ClassifyConfig):
    """A reward model takes classification's options (--lora, --pooling, --freeze-layers) and defaults."""


def is_decoder(model_path: str) -> bool:
    from transformers import AutoConfig

    return any(a.endswith("ForCausalLM") for a in AutoConfig.from_pretrained(model_path).architectures or [])


def setup_reward_model(model_path: str, cfg: RewardConfig, pad_id: int):
    """(model with a one-output head, pooling, decoder?): an encoder as classification sets it up
    (training.classify.setup_model: pooling, --freeze-layers, --lora), a decoder always with LoRA."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.classify import setup_model
    from training.sft import add_lora

    if not is_decoder(model_path):
        model, _, _ = setup_model(model_path, ["reward"], cfg)
        return model, getattr(model, "pooling", "cls"), False
    model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=torch.float32, num_labels=1,
                                                               pad_token_id=pad_id)
    return add_lora(model, cfg, task_type="SEQ_CLS").to(device()), "last", True


def collate_sides(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Chosen answers, then rejected ones, padded into one batch."""
    return {**padded([r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows], pad_id),
            "n_targets": len(rows)}


def padded(seqs: list[list[int]], pad_id: int) -> dict[str, Any]:
    """input_ids and attention_mask of `seqs`, padded (training.data.collate_padded)."""
    batch = data.collate_padded([{"input_ids": s, "labels": s} for s in seqs], pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def rewards(model, batch: dict[str, Any]):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()


def reward_losses(chosen, rejected):
    """Bradley-Terry: -log σ(r_chosen - r_rejected) per pair."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen - rejected)


def reward_loss_fn(tally: Tally):
    def loss_sum(model, batch):
        n = batch["n_targets"]
        r = rewards(model, batch)
        losses = reward_losses(r[:n], r[n:])
        rc, rr = r[:n].detach(), r[n:].detach()
        tally.add(n, loss=losses, accuracy=(rc > rr).float(), margin=rc - rr, rewards_chosen=rc, rewards_rejected=rr)
        return losses.sum(), n

    return loss_sum


def train_reward(shards: str, out: str, config: RewardConfig, force: bool = False) -> Manifest:
    """Train a reward model on preference shards (see the module doc); returns the manifest."""
    dataset, eval_set, manifest, tokenizer, model_path = data.prepare_run(shards, config, "reward")
    lineage = manifest.lineage
    pad = (lineage.tokenizer.pad_token_id if lineage.tokenizer else None) or 0

    def build(ws: Workspace) -> Outcome:
        model, pooling, decoder = setup_reward_model(model_path, config, pad)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())

        def make(ds, size):
            return data.batcher(ds, size, lambda rows: collate_sides(rows, pad))

        train_tally, eval_tally = Tally(), Tally()
        eval_batches = make(eval_set, config.micro_batch * 2)(config.seed) if eval_set is not None else None
        eval_loss = reward_loss_fn(eval_tally)
        logger = TallyLogger(Logger(config.report_to, ws.out / "runs", dataclasses.asdict(config)), train_tally)
        with ws.timer("train"):
            hist = train_loop(model, make(dataset, config.micro_batch), reward_loss_fn(train_tally),
                              (lambda: evaluate_with(eval_loss, eval_tally, model, eval_batches)) if eval_batches else None,
                              config, logger)
        logger.close()
        logger.merge_into(hist.train)
        metrics = {
            "train_loss": hist.train,
            "eval_curve": hist.eval,
            "eval": hist.eval[-1] if hist.eval else None,
            "steps": len(hist.train),
            "trained_examples": hist.trained_tokens,
            "train_seconds": round(hist.seconds, 3),
            "examples_per_s": round(hist.trained_tokens / max(hist.seconds, 1e-9), 2),
            "pooling": pooling,
            "decoder": decoder,
            "trainable_params": int(trainable),
            "total_params": int(total),
            "device": device(),
            **peak_memory_gb(),
        }
        plot_with_accuracy(hist, ws.out / "loss.png", f"reward model {config.model}", key="accuracy")
        saved = {"pooling": pooling, "decoder": decoder, "pad_token_id": pad, "max_len": lineage.max_len}
        return finish_run(ws, model, tokenizer, metrics, task="reward", config=config, model_path=model_path,
                          train_set=dataset, eval_set=eval_set, files={REWARD_FILE: saved})

    return run_stage("train", out, inputs=[p for p in (shards, config.eval_shards) if p],
                     config={**dataclasses.asdict(config), "task": "reward"}, build=build,
                     data_files=(REWARD_FILE, "metrics.json"), force=force, upstream=manifest)


def is_reward_model(path: str | Path) -> bool:
    return (Path(path) / REWARD_FILE).is_file()


def load_reward_model(path: str | Path):
    """(model in eval mode, its tokenizer, reward.json) for the output of `train_reward`."""
    from transformers import AutoTokenizer

    from training.outputs import load_scorer

    if not is_reward_model(path):
        raise DataprepError(f"{path} has no {REWARD_FILE}; pass the output directory of `dataprep train --task reward`")
    saved = json.loads((Path(path) / REWARD_FILE).read_text())
    head = {"num_labels": 1, **({"pad_token_id": saved["pad_token_id"]} if saved["decoder"] else {})}
    model = load_scorer(path, saved["pooling"] == "mean", **head)
    return model.to(device()), AutoTokenizer.from_pretrained(str(path)), saved


def score_responses(path: str | Path, prompts: list[str], responses: list[str], batch_size: int = 16) -> list[dict]:
    """For each (prompt, response): {prompt, response, score}, the response tokenized after the
    prompt exactly as `dataprep tokenize` builds a preference row (chat template or plain prompt)."""
    import torch

    from dataprep.tokenize.masks import choose_pad
    from dataprep.tokenize.rows import TokenizeOptions, preference_rows

    if len(prompts) != len(responses):
        raise DataprepError(f"{len(prompts)} prompt(s) but {len(responses)} response(s); pass one --response per --prompt")
    model, tok, saved = load_reward_model(path)
    specials = choose_pad(tok)
    opts = TokenizeOptions(max_len=saved.get("max_len") or 2048)
    batch = {"prompt": prompts, "messages": [[{"role": "user", "content": p}] for p in prompts], "chosen": responses,
             "rejected": responses, "source": ["generate"] * len(prompts), "row": list(range(len(prompts)))}
    cols, rejects, _ = preference_rows(batch, tok, "preference", opts, specials, None)
    if rejects:
        raise DataprepError(f"cannot score prompt {rejects[0]['row'] + 1}: {rejects[0]['reason']} ({rejects[0]['detail']})")
    results = []
    for start in range(0, len(prompts), batch_size):
        enc = padded(cols["chosen_input_ids"][start: start + batch_size], saved["pad_token_id"])
        with torch.no_grad():
            scores = rewards(model, {k: v.to(device()) for k, v in enc.items()})
        for i, s in enumerate(scores.tolist()):
            results.append({"prompt": prompts[start + i], "response": responses[start + i], "score": round(s, 4)})
    return results
