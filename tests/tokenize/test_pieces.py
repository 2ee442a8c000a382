"""The chat fast path (dataprep.tokenize.pieces): renderings encoded piece by piece without offsets
must give the ids, token positions and word starts the tokenizer itself gives."""

from __future__ import annotations

import random

import pytest

from dataprep.tokenize.pieces import PieceEncoder, PiecePositions, _build, piece_encoder

QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ODD = ["  \n\nhi there", "😀 ok 😀", "데이터 준비", '"yes"', "\n", "é\u0301 x", " ", "::x", "12 3", "\t x", "'s it",
       "\n\n\n", "!?", "a\x06b", "\U00040000z", "x\x1c y", "  ", "don't", "\r\n x"]


@pytest.fixture(scope="module")
def smol():
    from dataprep.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


def texts_of(tok) -> list[str]:
    out = []
    for a in ODD:
        for b in ODD[:6]:
            out.append(f"<|im_start|>user\n{a}<|im_end|>\n<|im_start|>assistant\n{b}{a}<|im_end|>\n")
            out.append(f"{a}<|im_start|>{b}<|endoftext|><|im_end|>{a}")
    return out


def test_ids_are_the_whole_texts_encoding(smol):
    """Pieces between added tokens encoded apart, each distinct piece once, give the ids of the whole text."""
    texts = texts_of(smol)
    batch = piece_encoder(smol).batch()
    assert batch.ids(texts) == [e.ids for e in smol.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert len(batch.cache) < sum(len(piece_encoder(smol).parts(t)) for t in texts) / 2  # pieces repeat: encoded once


def test_positions_equal_the_encodings_offsets(smol):
    """first_at, start_of and end_of from byte lengths equal what the offsets say, for every character
    and token (multi-byte characters split across tokens, emoji, Korean, combining marks); a text with a
    character whose byte has no token (SmolLM2 drops \\x06) is answered from its offsets instead."""
    from dataprep.tokenize.chat import Positions, trained_labels

    texts = texts_of(smol)
    batch = piece_encoder(smol).batch()
    positions = batch.positions(texts)
    kinds = set()
    for text, pos, enc in zip(texts, positions, smol.backend_tokenizer.encode_batch(texts, add_special_tokens=False),
                              strict=True):
        exact = Positions(enc, len(text), False)  # every offset read and searched
        assert pos.ids == enc.ids
        kinds.add(type(pos).__name__)
        if not isinstance(pos, PiecePositions):
            assert "\x06" in text or "\U00040000" in text
            continue
        for c in range(len(text) + 1):
            assert pos.first_at(c) == exact.first_at(c), (text, c)
        spans = [(1, 5), (len(text) // 2, len(text))]  # trained spans starting inside tokens and at their starts
        assert trained_labels(pos, spans) == trained_labels(exact, spans) and pos.first_trained == exact.first_trained
        for x in range(len(enc.ids)):
            assert (pos.start_of(x), pos.end_of(x)) == enc.offsets[x], (text, x)
    assert kinds == {"PiecePositions", "Positions"}


def _word_starts_of(pre_tokenizer, piece: str) -> set[int]:
    return {a for _, (a, _) in pre_tokenizer.pre_tokenize_str(piece)} | {b for _, (_, b) in pre_tokenizer.pre_tokenize_str(piece)}


@pytest.mark.parametrize("style", ["gpt2", "qwen2"])
def test_word_starts_match_the_pre_tokenizer(smol, style):
    """The seam's word check runs the pre-tokenizer's pattern with `regex`: on every position of random
    texts of letters, digits, spaces, newlines, tabs, apostrophes and punctuation it says what the Rust
    pre-tokenizer's words say, and it declines (None) only where a character outside printable ASCII
    is read."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    if style == "gpt2":
        backend = smol.backend_tokenizer
    else:
        backend = Tokenizer.from_str(smol.backend_tokenizer.to_str())
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), "isolated"),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    encoder = _build(backend)
    assert encoder is not None and encoder.words is not None
    rng = random.Random(13)
    alphabet = list("ab Z09 \n\n\t'.:!\"-_") + ["'s", "'ll", "é", "😀", "\x1c", "\r\n", "   "]
    answered = declined = 0
    for _ in range(400):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 12)))
        truth = _word_starts_of(backend.pre_tokenizer, piece)
        for at in range(1, len(piece)):
            said = encoder.word_starts(piece, at)
            if said is None:
                declined += 1
                assert not (piece.isascii() and piece.isprintable()), (piece, at)
            else:
                answered += 1
                assert said == (at in truth), (piece, at)
    assert answered > 1000 and declined > 100


def test_added_tokens_split_as_the_tokenizer_does(smol):
    """Added tokens that are not normalized are matched first, then normalized ones in the pieces
    between (`xabcx`: `bc` wins over `ab`), longest first; the ids equal the tokenizer's."""
    from tokenizers import AddedToken, Tokenizer

    backend = Tokenizer.from_str(smol.backend_tokenizer.to_str())
    backend.add_tokens([AddedToken("ab", normalized=True, special=False), AddedToken("bc", normalized=False, special=False),
                        AddedToken("<|im_end|>x", normalized=False, special=False)])
    encoder = _build(backend)
    texts = ["xabcx ab bc", "<|im_end|>x<|im_end|>", "abab<|im_start|>bcbc"]
    assert encoder.batch().ids(texts) == [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    assert encoder.parts("xabcx") == ["xa", "bc", "x"]


def test_not_used_where_bytes_cannot_be_counted(smol):
    """No fast path for an added token that strips spaces, for special tokens split as text, or for a
    tokenizer whose offsets are not exact (a Metaspace tokenizer)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import LlamaTokenizer

    assert isinstance(piece_encoder(smol), PieceEncoder)
    backend = Tokenizer.from_str(smol.backend_tokenizer.to_str())
    backend.add_tokens([AddedToken("<mask>", lstrip=True)])
    assert _build(backend) is None
    backend = Tokenizer.from_str(smol.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    assert _build(backend) is None
    assert piece_encoder(LlamaTokenizer(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4}, merges=[])) is None


def test_output_encoded_again_unless_a_word_starts_at_the_seam(smol):
    """The fidelity probe of a turn skips re-encoding its output exactly where the offsets path does (a
    word of the sequence starts at the seam), for printable ASCII; elsewhere it may encode more, never
    less. `assistant:` + `.x` continues the word `:.`, which BPE cuts at the seam: encoded again."""
    from dataprep.tokenize.chat import Positions, _probe_turn

    added = set(smol.added_tokens_decoder)
    batch = piece_encoder(smol).batch()
    contents = ["x y", ".x", "..", " x", "  x", "\nx", "'s", "x", "😀x", "é", "1", ":", "-\n", "\t\tx", ""]
    same = 0
    for content in contents:
        text = f"<|im_start|>user:hi<|im_end|>\n<|im_start|>assistant:{content}<|im_end|>\n"
        start = text.index("assistant:") + len("assistant:")
        end = text.rindex("<|im_end|>") + len("<|im_end|>")
        enc = smol.backend_tokenizer.encode(text, add_special_tokens=False)
        exact = _probe_turn(Positions(enc, len(text), True, free=True), text, start, end, added)
        fast = _probe_turn(batch.positions([text])[0], text, start, end, added)
        assert fast[:3] == exact[:3] and fast[4] == exact[4], content
        if content.isascii():
            assert fast[3] == exact[3], content
            same += 1
        else:
            assert fast[3] == exact[3] or fast[3] == content, content
    skipped = {c for c in contents if _probe_turn(batch.positions([t := f"<|im_start|>assistant:{c}<|im_end|>"])[0], t,
                                                  t.index(":") + 1, len(t), added)[3] is None}
    assert {"x y", " x", "\nx", "x", ""} <= skipped and ".x" not in skipped and same >= 12


def test_padding_or_truncation_saved_in_the_tokenizer_is_off(smol):
    """A tokenizer.json that pads or truncates (sentence-transformers save them) must not pad or cut
    the pieces: they are encoded with both off, as the whole texts are."""
    import copy

    tok = copy.deepcopy(smol)
    tok.backend_tokenizer.enable_truncation(4)
    tok.backend_tokenizer.enable_padding(length=64)
    text = "<|im_start|>user\nA longer question than four tokens<|im_end|>\n"
    ids = piece_encoder(tok).batch().ids([text])[0]
    assert ids == smol.backend_tokenizer.encode(text, add_special_tokens=False).ids and len(ids) > 8


@pytest.mark.parametrize("template", ["qwen2_5", "qwen3", "llama3_1"])
def test_alpaca_rows_same_on_every_path(smol, shared_data, monkeypatch, template):
    """Real rows (alpaca_en_demo's first 200 instructions: prose, code, lists, numbers, unicode) under
    trl's templates: the piece-by-piece path gives the rows, labels, rejects, fidelity counts and kept mismatches of
    the path that reads every offset and encodes every output again, whether the batch is encoded in
    chunks of 7 rows or at once."""
    import copy
    import json
    from pathlib import Path

    import dataprep.tokenize.chat as chat
    from dataprep.tokenize.masks import Specials
    from dataprep.tokenize.rows import TokenizeOptions, tokenize_batch

    trl = pytest.importorskip("trl")
    tok = copy.deepcopy(smol)
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja").read_text()
    rows = json.loads((shared_data / "alpaca_en_demo.json").read_text())[:200]

    def msg(role, content):
        return {"role": role, "content": content, "parts": None, "reasoning_content": None, "tool_calls": None,
                "tool_call_id": None, "name": None, "train": None}

    convs = [[msg("user", r["instruction"] + ("\n" + r["input"] if r.get("input") else "")),
              msg("assistant", r["output"])] for r in rows]
    convs += [c + [msg("user", "Again?"), msg("assistant", c[1]["content"][::-1])] for c in convs[:40]]
    batch = {"messages": convs, "tools": [None] * len(convs), "source": ["a"] * len(convs),
             "row": list(range(len(convs)))}
    sp = Specials(2, 0, "<|endoftext|>", "existing special token")
    opts = TokenizeOptions(on_mismatch="warn", split_turns=True)
    assert chat.piece_encoder(tok) is not None
    kept = {"pieces": [], "chunked": [], "slow": []}  # the rows each path keeps with a fidelity mismatch
    pieces = tokenize_batch(batch, tok, "chat", opts, sp, kept=kept["pieces"])
    strict = TokenizeOptions(max_len=48, overflow="drop")  # rejects from planning and from finishing rows
    whole = tokenize_batch(batch, tok, "chat", strict, sp)
    monkeypatch.setattr(chat, "CHUNK", 7)  # rendered and encoded in chunks: the same output, rejects in order
    assert tokenize_batch(batch, tok, "chat", opts, sp, kept=kept["chunked"]) == pieces
    assert tokenize_batch(batch, tok, "chat", strict, sp) == whole and len(whole[1]) > 20
    monkeypatch.setattr(chat, "CHUNK", 10_000)
    monkeypatch.setattr(chat, "exact_offsets", lambda tok: False)
    monkeypatch.setattr(chat, "context_free_words", lambda tok: False)
    slow = tokenize_batch(batch, tok, "chat", opts, sp, kept=kept["slow"])
    assert pieces == slow and len(pieces[0]["input_ids"]) >= 200
    assert kept["pieces"] == kept["chunked"] == kept["slow"]


def test_a_pre_tokenizer_that_drops_text_gets_no_fast_path(smol):
    """A Split with behaviour "Removed" drops its matches (`#`) before BPE, so token byte lengths no
    longer follow the text: no pieces fast path, no byte-level shortcut, and each row trains exactly
    its assistant turn (the old fast path shifted the positions or failed on an AssertionError)."""
    import copy
    import json

    from tokenizers import pre_tokenizers

    from dataprep.tokenize.masks import Specials
    from dataprep.tokenize.rows import TokenizeOptions, tokenize_batch
    from dataprep.tokenize.seam import _lossless, _spec, context_free_words, exact_offsets

    tok = copy.deepcopy(smol)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("#", "removed"), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    assert piece_encoder(tok) is None and not exact_offsets(tok) and not context_free_words(tok)
    for pre in (pre_tokenizers.Whitespace(), pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Punctuation("removed")):
        spec = _spec(smol.backend_tokenizer)
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            json.loads(pre.__getstate__()), spec["pre_tokenizer"]]}
        assert not _lossless(spec), pre

    def msg(role, content):
        return {"role": role, "content": content, "parts": None, "reasoning_content": None, "tool_calls": None,
                "tool_call_id": None, "name": None, "train": None}

    convs = [[msg("user", "a # b ## c"), msg("assistant", "x y z ok")], [msg("user", "##"), msg("assistant", "y z ok")],
             [msg("user", "a#b"), msg("assistant", "y z ok")]]
    batch = {"messages": convs, "tools": [None] * 3, "source": ["a"] * 3, "row": [0, 1, 2]}
    cols, rejects, _ = tokenize_batch(batch, tok, "chat", TokenizeOptions(), Specials(2, 0, "<|endoftext|>", "x"))
    trained = [[tok.convert_ids_to_tokens(i) for i, lab in zip(ids, labels, strict=True) if lab != -100]
               for ids, labels in zip(cols["input_ids"], cols["labels"], strict=True)]
    assert rejects == [] and trained == [["Ġx", "Ġy", "Ġz", "Ġok", "<|im_end|>"]] + [["Ġy", "Ġz", "Ġok", "<|im_end|>"]] * 2
