"""The sft seam: how an sft row's prompt and completion meet in tokens, and the fidelity check.

- `inference` (the default): the prompt is tokenized alone, special tokens included, exactly as a
  generation call tokenizes it; the completion is tokenized from a token boundary, as the model emits
  it after that prompt (LLaMA-Factory encodes its template slots this way). A SentencePiece-style
  tokenizer prepends a dummy `▁` (a space) to every text it encodes; the completion continues the
  prompt, so it is encoded by `continuation_tokenizer`, which has no dummy prefix.
- `joint`: `prompt + completion` tokenized as one string, a token straddling the seam counted as
  prompt (`masks.prompt_completion_ids`). When the prompt's last characters merge with the
  completion's first (`:` + `"` -> `:"`), the completion's first character is never trained, and the
  model trains on a token sequence inference never produces.

The fidelity check: a row's ids must equal the prompt tokenized alone followed by the completion as
generated (ids that decode to exactly the completion text). `FIDELITY_*` reasons name what differs;
they are counted with the chat check's counters (dataprep.tokenize.fidelity) into the manifest's
`fidelity` block (`{"checked", "mismatched", "by_reason"}`).
"""

from __future__ import annotations

import json
from collections import Counter

from dataprep.tokenize import fidelity
from dataprep.tokenize.masks import encode_batch, first_trained_token, with_eos

SEAMS = ("inference", "joint")

FIDELITY_STRADDLE = "a token spans the seam (prompt and completion merged)"
FIDELITY_CONTEXT = "tokens differ from prompt and completion tokenized apart"
FIDELITY_DECODE = "completion ids do not decode to the completion text"


_PER_TOKENIZER: dict[tuple[str, int], tuple[object, object]] = {}  # (what, id(tok)) -> (tok kept alive, its answer)


def _once(what: str, tok, build):
    """`build(tok)`, computed once per tokenizer object."""
    cached = _PER_TOKENIZER.get((what, id(tok)))
    if cached is not None and cached[0] is tok:
        return cached[1]
    answer = build(tok)
    _PER_TOKENIZER[(what, id(tok))] = (tok, answer)
    return answer


def _spec(backend) -> dict:
    """The backend's normalizer, pre-tokenizer, decoder and post-processor as tokenizer.json specs, and
    its model's type (the parts alone: cheap, no vocabulary)."""
    spec = {where: json.loads(part.__getstate__()) if part is not None else None
            for where, part in (("normalizer", backend.normalizer), ("pre_tokenizer", backend.pre_tokenizer),
                                ("decoder", backend.decoder), ("post_processor", backend.post_processor))}
    spec["model"] = {"type": type(backend.model).__name__}
    return spec


def _without_dummy_prefix(spec: dict | None, where: str) -> tuple[dict | None, bool]:
    """One normalizer/pre-tokenizer/decoder spec (tokenizer.json) with the dummy prefix switched off:
    Metaspace `prepend_scheme` never, ByteLevel `add_prefix_space` off, a `Prepend("▁")` normalizer
    and the decoder's `Strip` of the first space removed. Returns (spec, whether anything changed)."""
    if spec is None:
        return None, False
    kind = spec.get("type")
    if kind == "Sequence":
        key = next(k for k in ("normalizers", "pretokenizers", "decoders") if k in spec)
        parts, changed = [], False
        for part in spec[key]:
            new, did = _without_dummy_prefix(part, where)
            changed |= did
            if new is not None:
                parts.append(new)
        return {**spec, key: parts}, changed
    if kind == "Metaspace" and (spec.get("prepend_scheme", "always") != "never" or spec.get("add_prefix_space")):
        return {**spec, "prepend_scheme": "never", **({"add_prefix_space": False} if "add_prefix_space" in spec else {})}, True
    if kind == "ByteLevel" and where == "pre_tokenizer" and spec.get("add_prefix_space"):
        return {**spec, "add_prefix_space": False}, True
    if kind == "Prepend" and where == "normalizer":
        return None, True
    if kind == "Strip" and where == "decoder" and spec.get("content") == " " and spec.get("start", 0) > 0:
        return None, True
    return spec, False


def continuation_tokenizer(tok) -> tuple[object, bool]:
    """(the backend tokenizer that encodes and decodes text continuing other text from a token boundary,
    whether its output round-trips by construction). The continuation tokenizer is `tok`'s own without
    a dummy prefix: `tok.backend_tokenizer` itself when it has none (byte-level BPE such as SmolLM2,
    GPT-2, Llama 3, Qwen), else a copy. Built once per tokenizer."""
    return _once("continuation", tok, _continuation)


def _continuation(tok) -> tuple[object, bool]:
    from tokenizers import Tokenizer

    backend = tok.backend_tokenizer
    spec = _spec(backend)
    lossless, changed = _lossless(spec), {}
    for where in ("normalizer", "pre_tokenizer", "decoder"):
        new, did = _without_dummy_prefix(spec[where], where)
        if did:
            changed[where] = new
    cont = backend
    if changed:  # a dummy prefix: a copy of the whole tokenizer without it
        cont = Tokenizer.from_str(json.dumps({**json.loads(backend.to_str()), **changed}))
        cont.no_padding()
        cont.no_truncation()
    return cont, lossless


def exact_offsets(tok) -> bool:
    """True when each token's character offsets are exactly the characters it encodes, every token
    covering at least one: a byte-level BPE with no normalizer (`_lossless`), no prefix space added, and
    no post-processor trimming whitespace off the offsets. Then the first token starting at or after a
    character is found by asking the encoding (`char_to_token`), without reading all offsets."""
    return _once("exact_offsets", tok, lambda t: _exact_offsets(_spec(t.backend_tokenizer)))


def _exact_offsets(spec: dict) -> bool:
    def flags(part, key):
        if part is None:
            return set()
        inner = part.get("pretokenizers") or part.get("processors") or []
        return {bool(part.get(key))} | set().union(*(flags(x, key) for x in inner))

    return (_lossless(spec) and True not in flags(spec["pre_tokenizer"], "add_prefix_space")
            and True not in flags(spec["post_processor"], "trim_offsets"))


def context_free_words(tok) -> bool:
    """True when, besides `exact_offsets`, the pre-tokenizer decides where a word ends from the text
    after its start alone and the BPE has no dropout. Then text that starts at a word boundary of an
    encoding and ends at an added token (a segment's end) is tokenized alone exactly as there: its
    words are the same strings, and BPE encodes each word on its own. Pre-tokenizers that qualify:
    ByteLevel (its GPT-2 regex looks ahead only), Split with Isolated pieces and a pattern without
    look-behind, anchors or back-references (Qwen's, Llama 3's), Digits, and sequences of them."""
    def free(part) -> bool:
        if part is None:
            return True
        kind = part.get("type")
        if kind == "Sequence":
            return all(free(x) for x in part["pretokenizers"])
        if kind == "Split":
            pattern = part.get("pattern", {})
            return (part.get("behavior") == "Isolated" and not part.get("invert")
                    and ("String" in pattern or _looks_ahead_only(pattern.get("Regex", "^"))))
        return kind == "ByteLevel" or kind == "Digits"

    def build(t) -> bool:
        backend = t.backend_tokenizer
        return (exact_offsets(t) and getattr(backend.model, "dropout", None) in (None, 0.0)
                and free(_spec(backend)["pre_tokenizer"]))

    return _once("context_free_words", tok, build)


def _looks_ahead_only(regex: str) -> bool:
    """True when a match of `regex` at a position depends on the text from there on only: no
    look-behind, no anchor or word boundary, no back-reference (`^`/`$` inside a class are fine)."""
    depth, i = 0, 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            if regex[i + 1 : i + 2] in tuple("bBAzZGK123456789k"):
                return False
            i += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        elif depth == 0 and (c in "^$" or regex.startswith("(?<", i)):
            return False
        i += 1
    return True


# pre-tokenizer steps that keep every character of the text (Split and Punctuation unless "Removed");
# Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, Metaspace, ... drop or replace some
_KEEPS_TEXT = {"ByteLevel", "Split", "Digits", "Punctuation"}


def _keeps_text(part: dict | None) -> bool:
    """Whether a pre-tokenizer spec (tokenizer.json) keeps every character: each of its steps does."""
    if part is None:
        return True
    if part.get("type") == "Sequence":
        return all(_keeps_text(x) for x in part["pretokenizers"])
    return part.get("type") in _KEEPS_TEXT and part.get("behavior") != "Removed"


def _lossless(spec: dict) -> bool:
    """True for a byte-level BPE with no normalizer (SmolLM2, GPT-2, Llama 3, Qwen) whose pre-tokenizer
    steps keep every character: every text is encoded byte for byte and decodes back to itself, so the
    completion's round trip needs no decode (and token byte lengths follow the text)."""
    def types(part):
        if part is None:
            return set()
        inner = part.get("pretokenizers") or part.get("decoders") or []
        return {part["type"]} | set().union(*(types(x) for x in inner))

    pre = spec.get("pre_tokenizer")
    return (spec.get("normalizer") is None and spec["model"].get("type") == "BPE"
            and "ByteLevel" in types(pre) and _keeps_text(pre) and types(spec.get("decoder")) == {"ByteLevel"})


def seam_ids(tok, prompts: list[str], completions: list[str], eos_id: int | None,
             seam: str = "inference") -> tuple[list[tuple[list[int], int]], list[str | None]]:
    """(ids, k) per sft row with k = the number of prompt tokens, and the row's fidelity mismatch
    reason (None when the ids are the prompt tokenized alone + the completion as generated).

    EOS is appended after the completion unless the ids already end with it; it is trained on.
    """
    if seam not in SEAMS:
        raise ValueError(f"seam must be one of {SEAMS}, not {seam!r}")
    cont, _ = continuation_tokenizer(tok)
    prompt_ids = [e.ids for e in encode_batch(tok, prompts, add_special_tokens=True, offsets=False)]
    completion_ids = [e.ids for e in cont.encode_batch_fast(completions, add_special_tokens=False)]
    reasons = generated_reasons(tok, completions, completion_ids)
    if seam == "inference":
        rows = [(with_eos(p + c, eos_id), len(p)) for p, c in zip(prompt_ids, completion_ids, strict=True)]
        return rows, reasons
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    rows = []
    for i, (enc, p, text) in enumerate(zip(encode_batch(tok, texts, True), prompts, texts, strict=True)):
        k = first_trained_token(enc, len(p), len(text))
        rows.append((with_eos(enc.ids, eos_id), k))
        if enc.ids != prompt_ids[i] + completion_ids[i] and reasons[i] is None:
            start = enc.char_to_token(len(p)) if len(p) < len(text) else None
            straddles = start is not None and enc.token_to_chars(start)[0] < len(p)
            reasons[i] = FIDELITY_STRADDLE if straddles else FIDELITY_CONTEXT
    return rows, reasons


def generated_reasons(tok, texts: list[str], ids: list[list[int]]) -> list[str | None]:
    """For outputs tokenized from a token boundary by `continuation_tokenizer`: FIDELITY_DECODE for each
    whose ids do not decode to exactly its text (the model could not generate them as trained), else
    None. A byte-level tokenizer's ids decode to the text by construction: nothing is decoded."""
    cont, lossless = continuation_tokenizer(tok)
    if lossless:
        return [None] * len(texts)
    decoded = cont.decode_batch(ids, skip_special_tokens=False)
    return [None if d == t else FIDELITY_DECODE for d, t in zip(decoded, texts, strict=True)]


def count_fidelity(events: Counter, reasons: list[str | None]) -> None:
    """Add one batch's fidelity results to the row builder's event counts (dataprep.tokenize.fidelity)."""
    fidelity.checked(events, len(reasons))
    for r in reasons:
        if r is not None:
            fidelity.mismatch(events, r)
