"""Chat renderings encoded piece by piece: no character offsets, each distinct piece once per batch.

A fast tokenizer first cuts a text at its added tokens (`<|im_start|>`, `<|im_end|>`, ...) and
tokenizes the pieces between them each on its own. So `encode(text)` is the concatenation of the
added tokens' ids and each piece's `encode(piece)`, and a piece that repeats in a batch (a role
header such as `system\\nYou are Qwen, ...`, the `\\n` between turns) needs encoding once. The pieces
are encoded without offsets (`encode_batch_fast`: no offsets, no token strings, about a third less
CPU than `encode_batch` with them).

Where a character falls among the tokens is then found from the tokens' byte lengths: for a byte-level
BPE with no normalizer (`seam.exact_offsets`) every token of a piece encodes its bytes in order, and
the vocabulary's token strings are one character per byte. `PiecePositions` answers the questions
`chat.Positions` answers from the encoding's offsets (the first token at or after a character, a
token's characters), the same way: a token's characters are those its first and last byte fall in.

The fidelity check skips re-encoding a turn's output when a word of the pre-tokenizer starts at the
seam (`seam.context_free_words`). Without offsets there are no word ids: `PieceEncoder.word_starts`
runs the pre-tokenizer's own split pattern (GPT-2's for ByteLevel, the Split pattern of Qwen2 /
Llama 3 style tokenizers) with the `regex` module from the start of the piece. It answers only when
every character the pattern reads to decide is printable ASCII, tab or newline (where the two regex
engines agree on every class); otherwise it answers None and the output is encoded again, as for
any other tokenizer.

Used when `piece_encoder(tok)` returns one: a byte-level BPE with exact offsets and context-free
words, added tokens without lstrip/rstrip/single_word, special tokens not split. Otherwise chat
rows are encoded whole with offsets (`chat.Positions`).
"""

from __future__ import annotations

import json
import re
import threading
from bisect import bisect_right

from tokenizers.pre_tokenizers import ByteLevel

# the pattern tokenizers' ByteLevel pre-tokenizer splits with when use_regex is on (GPT-2's)
GPT2_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_UNCLEAR = re.compile(r"[^\t\n\r\x20-\x7e]")  # a character the regex engines might classify differently
_SPACE = " \t\n\r"
FEW = 32  # new pieces encoded one by one on the calling thread (the fidelity probes' `assistant\n`, ...)


class PieceEncoder:
    """One tokenizer's piece splitter, added-token ids, token byte lengths and word pattern. Read-only
    once built: shared by the batches tokenized on threads; each batch gets its own `PieceBatch`."""

    def __init__(self, backend, added: dict[str, int], normalized: set[str], nbytes: dict[int, int], words,
                 unmapped) -> None:
        self.backend, self.added, self.nbytes, self.words, self.unmapped = backend, added, nbytes, words, unmapped
        # the ASCII ones, looked for in an ASCII text one by one (a fast scan each) instead of by the regex
        self.unmapped_ascii = [chr(c) for c in range(128) if unmapped is not None and unmapped.match(chr(c))]

        def splitter(contents):
            contents = sorted(contents, key=len, reverse=True)  # leftmost-longest, as tokenizers matches them
            return re.compile("(" + "|".join(map(re.escape, contents)) + ")").split if contents else None

        # tokenizers matches the added tokens that are not normalized on the text first, then the
        # normalized ones in the pieces between (no normalizer here: the same characters)
        self.split_raw = splitter([c for c in added if c not in normalized])
        self.split_normalized = splitter(normalized)

    def parts(self, text: str) -> list[str]:
        """`text` as [piece, added token, piece, ..., piece] (pieces may be empty)."""
        parts = self.split_raw(text) if self.split_raw else [text]
        if self.split_normalized:
            parts = [q for k, p in enumerate(parts) for q in ((p,) if k % 2 else self.split_normalized(p))]
        return parts

    def has_unmapped(self, text: str) -> bool:
        """Whether `text` holds a character one of whose bytes has no token."""
        if self.unmapped is None:
            return False
        if text.isascii():
            return any(c in text for c in self.unmapped_ascii)
        return self.unmapped.search(text) is not None

    def batch(self) -> PieceBatch:
        return PieceBatch(self)

    def word_starts(self, piece: str, at: int) -> bool | None:
        """Whether a word of the pre-tokenizer starts at character `at` (0 < at < len(piece)) of a piece
        between added tokens; None when the regex engines might disagree on a character read to decide."""
        if self.words is None:
            return None
        answer, after = None, None
        for m in self.words.finditer(piece):
            if answer is None:
                if m.end() < at:
                    continue
                answer = m.start() == at or m.end() == at  # a match (a word) starts or ends at `at`
                if m.start() >= at:
                    after = m
                    break
            else:
                after = m
                break
        # the pattern read up to the end of the first word at or after `at`, the whitespace run
        # after it (`\s+(?!\S)` looks past a run) and one character more
        r = after.end() if after is not None else len(piece)
        while r < len(piece) and piece[r] in _SPACE:
            r += 1
        return None if _UNCLEAR.search(piece, 0, r + 1) else answer


class PieceBatch:
    """The pieces of one batch, each distinct piece encoded once."""

    def __init__(self, encoder: PieceEncoder) -> None:
        self.encoder = encoder
        self.cache: dict[str, list[int]] = {"": []}

    def _encode_new(self, split: list[list[str]]) -> None:
        cache = self.cache
        new = list(dict.fromkeys(p for parts in split for p in parts[::2] if p not in cache))
        backend = self.encoder.backend
        if len(new) <= FEW:  # on this thread: a batch encode would queue behind the other batch's in the thread pool
            for p in new:
                cache[p] = backend.encode(p, add_special_tokens=False).ids
        else:
            for p, enc in zip(new, backend.encode_batch_fast(new, add_special_tokens=False), strict=True):
                cache[p] = enc.ids

    def positions(self, texts: list[str]) -> list:
        """Each text's ids (as `encode(text, add_special_tokens=False)` gives them) and where its
        characters lie among them: PiecePositions, or for a text holding a character BPE drops a byte
        of (`PieceEncoder.unmapped`), chat.Positions on its encoding with offsets."""
        from dataprep.tokenize.chat import Positions

        split = [self.encoder.parts(t) for t in texts]
        self._encode_new(split)
        out = [PiecePositions(self, text, parts) for text, parts in zip(texts, split, strict=True)]
        odd = [i for i, t in enumerate(texts) if self.encoder.has_unmapped(t)]
        if odd:
            encs = self.encoder.backend.encode_batch([texts[i] for i in odd], add_special_tokens=False)
            for i, enc in zip(odd, encs, strict=True):
                out[i] = Positions(enc, len(texts[i]), True, free=True)
        return out

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, as `encode(text, add_special_tokens=False).ids`."""
        split = [self.encoder.parts(t) for t in texts]
        self._encode_new(split)
        return [PiecePositions(self, text, parts).ids for text, parts in zip(texts, split, strict=True)]


class PiecePositions:
    """Where the characters of one text fall among its tokens, from its pieces and the tokens' byte
    lengths: the interface of `chat.Positions` (ids, first_at, start_of, end_of, word_starts, labels)."""

    offsets = None
    free = True

    def __init__(self, batch: PieceBatch, text: str, parts: list[str]) -> None:
        cache, added = batch.cache, batch.encoder.added
        self.encoder, self.text_len, self.parts = batch.encoder, len(text), parts
        ids: list[int] = []
        chars, toks, c = [], [], 0  # each part's first character and first token
        for k, p in enumerate(parts):
            chars.append(c)
            toks.append(len(ids))
            if k % 2:
                ids.append(added[p])
            else:
                ids += cache[p]
            c += len(p)
        self.ids, self.chars, self.toks = ids, chars, toks
        self.first_trained = len(ids)

    def _part_of_token(self, x: int) -> int:
        """The part that holds token x (the last part starting at or before it: never an empty one)."""
        return bisect_right(self.toks, x) - 1

    def _piece_end(self, k: int) -> int:
        return self.toks[k + 1] if k + 1 < len(self.toks) else len(self.ids)

    def _byte_ends(self, k: int, upto: int):
        """(token, its last byte + 1 within piece k) for the piece's tokens before `upto`."""
        nbytes, acc = self.encoder.nbytes, 0
        for x in range(self.toks[k], upto):
            acc += nbytes[self.ids[x]]
            yield x, acc

    def first_at(self, c: int, lo: int = 0) -> tuple[int, bool]:
        """(the first token starting at or after character `c`, whether a token before it reaches past `c`)."""
        if c >= self.text_len:
            return len(self.ids), False
        k = bisect_right(self.chars, c) - 1
        rel, first = c - self.chars[k], self.toks[k]
        if rel == 0:
            return first, False
        if k % 2:  # inside an added token
            return first + 1, True
        piece = self.parts[k]
        b = rel if piece.isascii() else len(piece[:rel].encode())
        for x, end in self._byte_ends(k, self._piece_end(k)):
            if end == b:
                return x + 1, False
            if end > b:
                return x + 1, True
        raise AssertionError("a character past its piece's tokens")  # the tokens cover the piece's bytes

    def _chars(self, k: int, b: int) -> int:
        """The character of piece k that its byte b falls in (its index within the piece)."""
        piece = self.parts[k]
        return b if piece.isascii() else len(piece.encode()[:b].decode("utf-8", "ignore"))

    def _bytes(self, k: int, x: int) -> int:
        """The bytes of piece k's tokens before token x."""
        return sum(map(self.encoder.nbytes.__getitem__, self.ids[self.toks[k] : x]))

    def start_of(self, x: int) -> int:
        k = self._part_of_token(x)
        if k % 2 or x == self.toks[k]:
            return self.chars[k]
        return self.chars[k] + self._chars(k, self._bytes(k, x))

    def end_of(self, x: int) -> int:
        k = self._part_of_token(x)
        if k % 2:
            return self.chars[k] + len(self.parts[k])
        return self.chars[k] + self._chars(k, self._bytes(k, x + 1) - 1) + 1

    def word_starts(self, j: int) -> bool:
        """Whether a word of the pre-tokenizer starts at token j (a piece's start always does; inside a
        piece `PieceEncoder.word_starts` decides, False when it cannot)."""
        if j == 0 or j >= len(self.ids):
            return True
        k = self._part_of_token(j)
        if j == self.toks[k]:
            return True
        return bool(self.encoder.word_starts(self.parts[k], self.start_of(j) - self.chars[k]))

    def labels(self, spans: list[tuple[int, int]]) -> list[int]:
        from dataprep.tokenize.chat import trained_labels

        return trained_labels(self, spans)


def piece_encoder(tok) -> PieceEncoder | None:
    """The tokenizer's PieceEncoder, or None when its pieces cannot be mapped by byte lengths (see the
    module doc). Built once per tokenizer (and again after tokens are added to it)."""
    from dataprep.tokenize.seam import _once, context_free_words, exact_offsets

    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or not exact_offsets(tok) or not context_free_words(tok):
        return None
    from dataprep.tokenize.masks import plain_backend

    with _BUILDING:  # the two batches in flight ask at once: built by the first
        plain_backend(tok)  # no padding or truncation saved in tokenizer.json (as masks.encode_batch)
        built = _once("pieces", tok, lambda t: {})
        size = backend.get_vocab_size(with_added_tokens=True)
        if size not in built:
            built[size] = _build(backend)
        return built[size]


_BUILDING = threading.Lock()


def _build(backend) -> PieceEncoder | None:
    if backend.encode_special_tokens:  # special tokens split like text
        return None
    added, normalized = {}, set()
    for i, t in backend.get_added_tokens_decoder().items():
        if t.lstrip or t.rstrip or t.single_word or not t.content:
            return None
        added[t.content] = i
        if t.normalized and not t.special:
            normalized.add(t.content)
    model = backend.model
    unmapped = _unmapped_chars([b for b, c in enumerate(_byte_alphabet()) if model.token_to_id(c) is None])
    if unmapped == "":
        return None
    return PieceEncoder(backend, added, normalized, _ByteLengths(model), _word_pattern(backend),
                        re.compile(unmapped) if unmapped else None)


class _ByteLengths(dict):
    """token id -> the bytes it encodes, looked up as tokens are met (the vocabulary is not read whole):
    a token string of the byte alphabet holds one byte a character; any other string is never the
    result of merging bytes, so never a token of a piece."""

    alphabet = frozenset(ByteLevel.alphabet())

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def __missing__(self, i: int) -> int:
        s = self.model.id_to_token(i)
        n = self[i] = len(s) if s is not None and self.alphabet.issuperset(s) else 0
        return n


def _byte_alphabet() -> list[str]:
    """The character byte-level BPE writes for each byte 0..255 (GPT-2's bytes_to_unicode)."""
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    hidden = [b for b in range(256) if b not in shown]
    table = {**{b: chr(b) for b in shown}, **{b: chr(256 + n) for n, b in enumerate(hidden)}}
    return [table[b] for b in range(256)]


def _unmapped_chars(missing: list[int]) -> str | None:
    """A regex class of the text characters one of whose UTF-8 bytes has no token (BPE drops such a
    byte: SmolLM2 lacks \x04, \x06, ... and the lead bytes of unassigned planes); None when every byte
    has one, "" when a continuation byte lacks one (nearly every non-ASCII text would be affected)."""
    ranges = []
    for b in missing:
        if b < 0x80:
            ranges.append((b, b))
        elif b < 0xC0:
            return ""
        elif 0xC2 <= b <= 0xDF:
            ranges.append(((b & 0x1F) << 6, ((b & 0x1F) << 6) | 0x3F))
        elif 0xE0 <= b <= 0xEF:
            ranges.append(((b & 0x0F) << 12, ((b & 0x0F) << 12) | 0xFFF))
        elif 0xF0 <= b <= 0xF4:
            ranges.append(((b & 0x07) << 18, min(((b & 0x07) << 18) | 0x3FFFF, 0x10FFFF)))
        # 0xC0, 0xC1 and 0xF5..0xFF never occur in UTF-8
    return "[" + "".join(f"\\U{a:08x}-\\U{z:08x}" for a, z in ranges) + "]" if ranges else None


def _word_pattern(backend):
    """The pre-tokenizer's split pattern compiled with `regex`: GPT-2's for ByteLevel(use_regex), a
    Split's (isolated) followed by a ByteLevel that does not split; None for anything else."""
    import regex

    spec = json.loads(backend.pre_tokenizer.__getstate__())
    steps = spec["pretokenizers"] if spec.get("type") == "Sequence" else [spec]
    patterns = []
    for step in steps:
        if step.get("type") == "ByteLevel":
            if step.get("use_regex", True):
                patterns.append(GPT2_WORDS)
        elif step.get("type") == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
            pattern = step.get("pattern", {})
            patterns.append(pattern["Regex"] if "Regex" in pattern else regex.escape(pattern.get("String", "")))
        else:
            return None
    return regex.compile(patterns[0]) if len(patterns) == 1 and patterns[0] else None
