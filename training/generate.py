"""Generate from a tuned model (a merged model or an adapter) with the prompt template the
training data used, optionally next to the base model's output for the same prompt. For a
classifier (`dataprep train --task classify` output, merged or not): the labels each text gets
at the saved thresholds, with their scores.

Template resolution: an explicit `template`; else the one recorded in the train/tokenize
manifest. A template is a registered name (`latex`, `alpaca`, `ko-alpaca`), a format string
with `{prompt}` (or `{instruction}`), `chat` (the tokenizer's chat template, the prompt as one
user turn) or `raw` (the prompt as is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from dataprep.templates import TEMPLATES, Template, generation_template, render_prompt
from training.outputs import load_for_generation, load_trained_classifier


def render(prompt: str, template, tokenizer) -> str:
    """`prompt` rendered for generation with `template`: raw/None (as is), `chat` (the tokenizer's
    chat template, the prompt as one user turn), or a prompt template of dataprep.templates (a
    registered name like `latex` or `alpaca`, a template config dict from a manifest, or a format
    string) whose no-input form takes the prompt as `{prompt}` or `{instruction}`."""
    if not template or template == "raw":
        return prompt
    if template == "chat":
        if not tokenizer.chat_template:
            raise DataprepError("--template chat: this tokenizer has no chat template; pass a format string with {prompt}")
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(template, dict):
        template = template.get("without_input") or template.get("name")
    spec = TEMPLATES.get(template) or Template("custom", template, template)
    if not spec.fields() & {"prompt", "instruction"}:
        raise DataprepError(
            f"--template {template!r} is not chat, raw, a template name ({', '.join(TEMPLATES)}) "
            "or a format string with {prompt}"
        )
    return render_prompt({"prompt": prompt, "instruction": prompt}, spec)


def _generate(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only batch generation continues from the right edge
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def generate(path: str | Path, prompts: list[str], template: str | None = None, max_new_tokens: int = 128,
             compare_base: bool = False, batch_size: int = 8, model=None) -> list[dict[str, Any]]:
    """For each prompt: {prompt, rendered, output[, base_output]} (greedy decoding).

    `model` may pass an already loaded (model, tokenizer, manifest, is_adapter) tuple.
    """
    model, tokenizer, manifest, is_adapter = model or load_for_generation(path)
    template = template or generation_template(manifest.lineage.kind, manifest.lineage.template)
    if compare_base and not is_adapter:
        raise DataprepError("--compare-base needs an adapter directory (the output of `dataprep train`), not a merged model")
    rendered = [render(p, template, tokenizer) for p in prompts]
    results = [{"prompt": p, "rendered": r} for p, r in zip(prompts, rendered, strict=True)]
    for start in range(0, len(rendered), batch_size):
        chunk = rendered[start : start + batch_size]
        for res, text in zip(results[start:], _generate(model, tokenizer, chunk, max_new_tokens), strict=False):
            res["output"] = text
        if compare_base:
            with model.disable_adapter():
                for res, text in zip(results[start:], _generate(model, tokenizer, chunk, max_new_tokens), strict=False):
                    res["base_output"] = text
    return results


def classify_texts(path: str | Path, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """For each text: {prompt, labels (at the saved thresholds, best first), scores (every label)}."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from training.loop import device

    model, saved = load_trained_classifier(str(path))
    model.to(device())
    tok = AutoTokenizer.from_pretrained(str(path))
    names = saved["label_names"]
    thresholds = np.broadcast_to(np.asarray(saved["threshold"], dtype=float), (len(names),))
    max_len = min(tok.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    results = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = tok(chunk, truncation=True, max_length=max_len, padding=True, return_tensors="pt").to(device())
        with torch.no_grad():
            scores = torch.sigmoid(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float())
        for text, row in zip(chunk, scores.cpu().numpy(), strict=True):
            hits = [j for j in np.argsort(-row, kind="stable") if row[j] >= thresholds[j]]
            results.append({"prompt": text, "labels": [names[j] for j in hits],
                            "scores": {n: round(float(v), 4) for n, v in zip(names, row, strict=True)}})
    return results
