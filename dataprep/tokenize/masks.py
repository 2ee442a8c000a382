"""Exact training masks from character offsets, and the special tokens they rely on.

The mask comes from character positions, never from searching token ids: a record is
rendered to ONE string, tokenized ONCE, and every token that starts before the first
completion character (a token straddling the boundary counts as prompt) gets label -100.
So a template whose last word tokenizes differently alone and in context (`###답변:`,
`LaTeX:` + ` \\frac`, `### Response:\\n`) cannot shift the mask. Chat records are rendered
with the tokenizer's chat template and the assistant contents are found as character spans
in the rendered text; the end-of-turn token the template adds after an assistant turn is
trained on. `fit` applies the overflow policy to one sequence, `fit_pair` to a preference pair
(one prompt cut the same way for both answers), `windows` splits a long text into --max-len windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from dataprep.errors import DataprepError
from dataprep.records import IGNORE_INDEX

OVERFLOW = ("truncate-prompt", "truncate", "drop", "error", "split")  # split: text only (its default)

# Existing special tokens that can serve as padding (never predicted by a chat model).
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<unk>")

ADDED_PAD = "<|pad|>"

# Tokens chat templates put right after an assistant message to end the turn; trained on, since
# the model must learn to emit them (a header such as <|im_start|> that follows is not).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class Specials:
    """The special-token ids the shards rely on, and how the pad id was chosen."""

    eos_id: int | None
    pad_id: int
    pad_token: str
    pad_source: str  # "tokenizer" | "existing special token" | "added (resize embeddings)"


def choose_pad(tok) -> Specials:
    """Pick a pad id that is never EOS, so padding can never hide the EOS label (trl #976).

    Keeps the tokenizer's own pad if it differs from EOS; else reuses an existing special
    token the model never has to emit (SmolLM2: `<|endoftext|>`, id 0); adds `<|pad|>`
    only if nothing fits (the model's embeddings must then be resized: recorded).
    """
    eos = tok.eos_token_id
    if tok.pad_token_id is not None and tok.pad_token_id != eos:
        return Specials(eos, tok.pad_token_id, tok.pad_token, "tokenizer")
    avoid = {eos, tok.bos_token_id}
    for name in PAD_CANDIDATES:
        pad = token_id(tok, name)
        if pad is not None and pad not in avoid:
            tok.pad_token = name
            return Specials(eos, pad, name, "existing special token")
    tok.add_special_tokens({"pad_token": ADDED_PAD})
    return Specials(eos, tok.pad_token_id, ADDED_PAD, "added (resize embeddings)")


def token_id(tok, token: str) -> int | None:
    """The id of `token` in the vocabulary (added tokens included), None when it has none; a fast
    tokenizer is asked directly instead of listing its whole vocabulary."""
    backend = getattr(tok, "backend_tokenizer", None)
    return backend.token_to_id(token) if backend is not None else tok.get_vocab().get(token)


def first_trained_token(enc, boundary: int, text_len: int) -> int:
    """Index of the first token that starts at or after character `boundary`.

    A token straddling the boundary starts before it, so it counts as prompt. Characters
    no token covers (e.g. whitespace a BERT tokenizer drops) are skipped.
    """
    for char in range(boundary, text_len):
        t = enc.char_to_token(char)
        if t is not None:
            return t + 1 if enc.token_to_chars(t)[0] < boundary else t
    return len(enc.ids)


def span_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """True for each token whose first character lies inside one of the (sorted) spans."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    mask = np.zeros(len(offsets), dtype=bool)
    for s, e in spans:
        mask |= (starts >= s) & (starts < e) & (ends > starts)
    return mask


def fit(ids: list[int], k: int, max_len: int, overflow: str, where: str = "a row") -> tuple[list[int], int, str | None]:
    """Apply the overflow policy to `ids` whose first `k` tokens are prompt.

    Returns (ids, k, event) where event is None, a truncation kind, or "too_long" (drop).
    """
    n = len(ids)
    if n <= max_len:
        return ids, k, None
    if overflow == "drop":
        return ids, k, "too_long"
    if overflow == "error":
        raise DataprepError(
            f"{where} has {n} tokens, more than --max-len {max_len}; raise --max-len or pass --overflow "
            "truncate-prompt|truncate|drop"
        )
    if overflow == "truncate":
        return ids[:max_len], min(k, max_len), "truncated_end"
    if n - k <= max_len:  # truncate-prompt: cut the prompt from the left, keep the completion whole
        return ids[n - max_len :], k - (n - max_len), "truncated_prompt"
    # The completion alone is too long: keep the prompt's end (at most half the budget, so the
    # answer stays conditioned on its question) and cut the completion's end.
    kept = min(k, max_len // 2)
    return ids[k - kept : k - kept + max_len], kept, "truncated_completion"


def fit_pair(k: int, a: int, b: int, max_len: int, overflow: str, where: str = "a pair") -> tuple[int, int, int, list[str]]:
    """The overflow policy for one prompt of `k` tokens shared by two answers of `a` and `b` tokens.

    Returns (prompt tokens kept, from its end; a's and b's tokens kept, from their start; events).
    The prompt is cut once, as `fit` cuts it for the longer answer, so both sides keep the same
    prompt. Events: "truncated_prompt", "truncated_a", "truncated_b", or ["too_long"] (drop).
    """
    if k + max(a, b) <= max_len:
        return k, a, b, []
    if overflow == "drop":
        return k, a, b, ["too_long"]
    if overflow == "error":
        fit([0] * (k + max(a, b)), k, max_len, "error", where)
    if overflow == "truncate":  # cut the end: the prompt stays whole if it fits, the answers lose their end
        kept = min(k, max_len)
    elif max(a, b) <= max_len:  # truncate-prompt: cut the prompt from the left, keep the answers whole
        kept = max_len - max(a, b)
    else:  # an answer too long alone: the prompt keeps its last max_len/2 tokens, the answer loses its end
        kept = min(k, max_len // 2)
    room = max_len - kept
    events = [e for e, cut in (("truncated_prompt", kept < k), ("truncated_a", a > room), ("truncated_b", b > room)) if cut]
    return kept, min(a, room), min(b, room), events


def windows(ids: list[int], max_len: int, stride: int) -> list[tuple[list[int], int]]:
    """`ids` as consecutive windows of at most `max_len` tokens, each overlapping the one before by
    `stride` tokens: (window, k) with k = the overlap already trained in the window before (0 first)."""
    step = max_len - stride
    out, start = [], 0
    while True:
        out.append((ids[start : start + max_len], stride if start else 0))
        if start + max_len >= len(ids):
            return out
        start += step


def labels_after(ids: list[int], k: int, train_on_inputs: bool) -> list[int]:
    return list(ids) if train_on_inputs else [IGNORE_INDEX] * k + ids[k:]


def with_eos(ids: list[int], eos_id: int | None) -> list[int]:
    return ids + [eos_id] if eos_id is not None and (not ids or ids[-1] != eos_id) else ids


def plain_backend(tok):
    """The fast tokenizer's Rust backend with any padding or truncation saved in tokenizer.json switched
    off (sentence-transformers tokenizers pad and cut at 128 there). The tokenize stage calls it once
    before batches run on two threads: switching them off mutates the backend, which must not happen
    while another thread encodes with it."""
    backend = tok.backend_tokenizer
    if backend.padding is not None:
        backend.no_padding()
    if backend.truncation is not None:
        backend.no_truncation()
    return backend


def encode_batch(tok, texts: list[str], add_special_tokens: bool, offsets: bool = True) -> list:
    """The fast tokenizer's own batch encode (all cores) on its `plain_backend`.
    `offsets=False` skips the character offsets (the encodings then have ids only)."""
    backend = plain_backend(tok)
    encode = backend.encode_batch if offsets else backend.encode_batch_fast
    return encode(texts, add_special_tokens=add_special_tokens)


def prompt_completion_ids(
    tok, prompts: list[str], completions: list[str], eos_id: int | None, add_special_tokens: bool = True
) -> list[tuple[list[int], int]]:
    """(ids, k) per row: `prompt + completion` tokenized once, k = number of prompt tokens.

    EOS is appended after the completion unless the ids already end with it; it is trained on.
    """
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    encs = encode_batch(tok, texts, add_special_tokens)
    out = []
    for enc, p, text in zip(encs, prompts, texts, strict=True):
        k = first_trained_token(enc, len(p), len(text))
        out.append((with_eos(enc.ids, eos_id), k))
    return out


def end_of_turn_tokens(tok) -> list[str]:
    """The end-of-turn tokens this tokenizer has (EOS included)."""
    vocab = tok.get_vocab()
    return [t for t in dict.fromkeys([tok.eos_token, *END_OF_TURN]) if t and t in vocab]


def render_chat(
    tok, messages: list[dict], tools: str | None, train_on: str, turn_ends: list[str] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text and the character spans to train on (assistant contents plus
    the template's end-of-turn token right after each). Raises ValueError if an assistant
    content cannot be found in the rendered text (the template rewrote it)."""
    kwargs = {}
    if tools:
        try:
            kwargs["tools"] = json.loads(tools)
        except json.JSONDecodeError:
            pass
    text = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    turn_ends = end_of_turn_tokens(tok) if turn_ends is None else turn_ends
    spans, cursor = [], 0
    for m in messages:
        content = m["content"] or ""
        start = text.find(content, cursor)
        if start < 0 and content.strip():
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            if m["role"] == "assistant":
                raise ValueError("assistant content not found in the chat-template rendering")
            continue
        end = start + len(content)
        cursor = end
        if m["role"] == "assistant":
            turn_end = next((t for t in turn_ends if text.startswith(t, end)), "")
            spans.append((start, end + len(turn_end)))
    if train_on == "last-assistant":
        spans = spans[-1:]
    return text, spans
