"""Chat rows rendered exactly as the model sees them, with trained spans found from the rendering.

A conversation is rendered with the tokenizer's own chat template (tools, tool calls, reasoning and
content parts passed the way templates read them). Each trained assistant turn i is found by prefix
difference, never by searching for its text:

    P_i = render(messages[:i], add_generation_prompt=True)   # what the model reads before turn i
    F_i = render(messages[:i+1])                              # ... and after writing it
    G_i = F_i[len(P_i):]                                      # the turn as the model generates it

G_i is trained up to and including its last end-of-turn marker (`<|im_end|>`, `<|eot_id|>`,
`<|return|>`, ...); what follows it (a newline) is not. Inside G_i, a template-inserted empty
`<think></think>` (the data had no reasoning) is never trained, and with `--reasoning mask` the
reasoning block is not either. Role headers, tool results and every other turn lie outside G_i.
The whole conversation T = render(messages) holds turn i as generated when T starts with F_i; a
template that re-renders earlier turns (Qwen3 strips earlier reasoning, gpt-oss ends earlier turns
with <|end|>) does not, and that turn is trained in a sequence of its own, F_i, with
`--split-turns` (the extra tokens are counted), or is a fidelity mismatch.

The fidelity check (dataprep.tokenize.fidelity) then compares token ids: the sequence's tokens
before turn i must be P_i tokenized alone (as at inference), and the turn's tokens G_i tokenized
from a token boundary (as generated).

A row whose tools or tool calls the template does not render is a reject ("template ignores tools")
unless `--tools-in-system` renders them as text (schemas in the system turn, calls as `<tool_call>`
JSON in the assistant turn). Reasoning a template does not render in a trained turn is a reject
("template drops reasoning") unless `--reasoning drop`. Media parts go to the template as
{type: image, path|url}; their placeholder tokens sit in untrained turns, and the references go to
the shards' `media` column. A template that cannot render media is a one-line error.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from dataprep.errors import DataprepError, first_line
from dataprep.records import IGNORE_INDEX
from dataprep.tokenize import fidelity
from dataprep.tokenize.masks import END_OF_TURN, encode_batch, fit, span_mask
from dataprep.tokenize.pieces import piece_encoder
from dataprep.tokenize.seam import context_free_words, exact_offsets

REASONING = ("train", "mask", "drop")
# end-of-turn markers as text (the tokenizer may not have them as tokens: the template still writes them)
TURN_ENDS = tuple(dict.fromkeys(END_OF_TURN + ("<|return|>", "<|end|>", "<|eom_id|>", "<end_of_turn>", "<turn|>",
                                               "<｜end▁of▁sentence｜>")))
_EMPTY_THINK = re.compile(r"\s*<think>\s*</think>\s*")
_REASONING_ENDS = ("</think>", "<|end|>", "<channel|>")
TOOLS_INTRO = "You can call these tools (JSON schemas, one a line):\n"


@lru_cache(maxsize=8)
def _compiled(template: str):
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return _compiled_checked(_compile_jinja_template, template)


def _compiled_checked(compile_fn, template):
    try:
        return compile_fn(template)
    except Exception as exc:
        raise DataprepError(f"the chat template does not compile: {str(exc).splitlines()[0][:200]}") from None


class Renderer:
    """The tokenizer's chat template, compiled once and rendered directly (what apply_chat_template
    renders, without its per-call overhead)."""

    def __init__(self, tok) -> None:
        template = tok.chat_template
        if not isinstance(template, str):
            raise DataprepError("the tokenizer has no single chat template; pass --chat-template FILE")
        self.template = _compiled(template)
        # the template's globals (raise_exception, strftime_now, ...) and the special tokens, merged once:
        # `render` would copy the globals into every call's context
        self.variables = {**self.template.globals,
                          **{k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}}
        # the names `new_context` lists from the globals (a ChainMap) on every call: listed once
        self.globals_keys = set(self.template.globals)

    def __call__(self, messages: list[dict], tools: list | None, generation: bool) -> str:
        t = self.template
        context = t.environment.context_class(t.environment, {**self.variables, "messages": messages, "tools": tools,
                                                              "documents": None, "add_generation_prompt": generation},
                                              t.name, t.blocks)
        context.globals_keys = self.globals_keys  # what Template.new_context(..., shared=True) sets
        try:
            return t.environment.concat(t.root_render_func(context))
        except Exception:
            t.environment.handle_exception()  # what Template.render raises: the template's own error


@dataclass
class Turn:
    """One trained assistant turn inside a sequence: the inference prompt, where the output starts and
    ends (after its end-of-turn marker), and the trained character spans."""

    index: int
    prompt: str
    start: int
    end: int
    spans: list[tuple[int, int]]


@dataclass
class Sequence:
    text: str
    turns: list[Turn] = field(default_factory=list)
    extra: bool = False  # a --split-turns sequence
    spans: list[tuple[int, int]] = field(default_factory=list)  # trained spans not checked (an appended EOS)


class RowProblem(Exception):
    def __init__(self, reason: str, detail: str = "", fidelity_reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.fidelity_reason = reason, detail, fidelity_reason


# ---------------------------------------------------------------- messages as templates read them


def _loads(value):
    return json.loads(value) if isinstance(value, str) else value


def media_of(messages: list[dict]) -> list[dict[str, str]]:
    """The media references of a conversation, in order: {type, ref}."""
    out = []
    for m in messages:
        for p in _loads(m.get("parts")) or []:
            if p.get("type") != "text":
                out.append({"type": p["type"], "ref": p.get("path") or p.get("url")})
    return out


def template_message(m: dict, reasoning: str) -> dict:
    """A canonical chat message as chat templates read it."""
    out: dict = {"role": m["role"], "content": m.get("content") or ""}
    parts = _loads(m.get("parts"))
    if parts:
        out["content"] = [p if p["type"] == "text" else {"type": p["type"], **{k: v for k, v in p.items() if k != "type"}}
                          for p in parts]
    r = m.get("reasoning_content")
    if r is not None and reasoning != "drop":
        out["reasoning_content"] = r
        out["thinking"] = r  # gpt-oss templates read `thinking`
    calls = _loads(m.get("tool_calls"))
    if calls:
        out["tool_calls"] = calls
    for k in ("tool_call_id", "name"):
        if m.get(k) is not None:
            out[k] = m[k]
    return out


def tools_as_text(messages: list[dict], tools: list | None) -> list[dict]:
    """--tools-in-system: schemas appended to the system turn (one is added if there is none), tool
    calls written into the assistant content as `<tool_call>` JSON, tool results as plain turns."""
    out = [dict(m) for m in messages]
    if tools:
        schemas = TOOLS_INTRO + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{schemas}" if out[0]["content"] else schemas
        else:
            out.insert(0, {"role": "system", "content": schemas})
    for m in out:
        calls = m.pop("tool_calls", None)
        if calls:
            text = "\n".join("<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                                            "arguments": c["function"]["arguments"]},
                                                           ensure_ascii=False) + "\n</tool_call>" for c in calls)
            m["content"] = f"{m['content']}\n{text}" if m["content"] else text
        m.pop("tool_call_id", None)
    return out


def _without_media(messages: list[dict]) -> list[dict]:
    return [{**m, "content": "".join(p.get("text", "") for p in m["content"] if p["type"] == "text")}
            if isinstance(m["content"], list) else m for m in messages]


def _turn_end(g: str) -> int:
    """Where a generated turn's trained part ends: after its last end-of-turn marker, else its last
    non-space character."""
    best = -1
    for marker in TURN_ENDS:
        at = g.rfind(marker)
        if at >= 0:
            best = max(best, at + len(marker))
    return best if best >= 0 else len(g.rstrip())


def _masked_head(g: str, reasoning_text: str | None, reasoning: str) -> int:
    """Characters at the start of a generated turn that are never trained: a template-inserted empty
    think block, or (--reasoning mask) the reasoning block."""
    if reasoning_text is None or reasoning == "drop" or not reasoning_text.strip():
        m = _EMPTY_THINK.match(g)
        return m.end() if m else 0
    if reasoning == "mask":
        r = reasoning_text.strip()
        at = g.find(r)
        end = at + len(r)
        closes = [(g.find(c, end), c) for c in _REASONING_ENDS if g.find(c, end) >= 0]
        if closes:
            pos, c = min(closes)
            end = pos + len(c)
        while end < len(g) and g[end] in "\n ":
            end += 1
        return end
    return 0


# ---------------------------------------------------------------- one row


def plan_row(renderer: Renderer, messages: list[dict], tools_json: str | None, opts, events: Counter,
             where: str) -> tuple[list[Sequence], list[str]]:
    """The sequences to tokenize for one conversation, and the fidelity reasons found while rendering
    (turns left untrained under --on-mismatch warn). Raises RowProblem for a row to reject."""
    tools = _loads(tools_json) if tools_json else None
    if isinstance(tools, dict):
        tools = [tools]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if opts.train_on == "last-assistant":
        selected = assistants[-1:]
    elif opts.train_on == "flagged":
        selected = [i for i in assistants if messages[i].get("train")]
        if not selected:
            raise RowProblem("no flagged assistant turn", "--train-on flagged trains turns with train=true")
    else:
        selected = assistants
    if any(m["role"] == "assistant" and media_of([m]) for m in messages):
        raise RowProblem("media in an assistant turn", "only user/system/tool turns may hold media")
    tmsgs = [template_message(m, opts.reasoning) for m in messages]
    has_media = any(isinstance(m["content"], list) for m in tmsgs)
    try:
        full = renderer(tmsgs, tools, False)
    except Exception as exc:  # a template may raise on roles or shapes it does not support
        if has_media:
            raise _media_error(str(exc)) from None
        raise RowProblem("chat template failed", first_line(exc)[:200]) from None
    if has_media and ("'type': '" in full or full == renderer(_without_media(tmsgs), tools, False)):
        raise _media_error(f"{where} holds {', '.join(sorted({x['type'] for x in media_of(messages)}))}")
    has_calls = any("tool_calls" in m for m in tmsgs)
    if tools or has_calls:
        bare = [{k: v for k, v in m.items() if k != "tool_calls"} for m in tmsgs]
        no_tools = bool(tools) and _same(renderer, tmsgs, None, full)
        ignored = no_tools or (has_calls and _same(renderer, bare, tools, full))
        if ignored:
            if not opts.tools_in_system:
                what = "tools" if no_tools else "tool calls"
                raise RowProblem("template ignores tools", f"the chat template does not render the row's {what}; "
                                 "--tools-in-system renders them as text")
            shift = len(tmsgs)
            tmsgs, tools = tools_as_text(tmsgs, tools), None
            shift = len(tmsgs) - shift  # a system turn added in front
            selected = [i + shift for i in selected]
            events["tools_in_system"] += 1
            full = renderer(tmsgs, None, False)
    main = Sequence(full)
    sequences, warned = [main], []
    for i in selected:
        prompt = renderer(tmsgs[:i], tools, True)
        upto = full if i == len(tmsgs) - 1 else renderer(tmsgs[: i + 1], tools, False)
        fidelity.checked(events)
        if not upto.startswith(prompt):
            _mismatch(events, "prompt_not_prefix", i, opts, warned)
            continue
        g = upto[len(prompt):]
        reasoning_text = tmsgs[i].get("reasoning_content")
        if reasoning_text and reasoning_text.strip() and reasoning_text.strip() not in g:
            raise RowProblem("template drops reasoning", f"assistant turn {i}: the chat template does not render its "
                             "reasoning_content; --reasoning drop trains the answer alone")
        end = _turn_end(g)
        head = min(_masked_head(g, reasoning_text, opts.reasoning), end)
        start = len(prompt)
        turn = Turn(i, prompt, start, start + end, [(start + head, start + end)] if end > head else [])
        if full.startswith(upto[: start + end]):
            main.turns.append(turn)
        elif opts.split_turns:
            sequences.append(Sequence(upto, [turn], extra=True))
        else:
            _mismatch(events, "history_rewritten", i, opts, warned)
    return sequences, warned


def _same(renderer, messages, tools, full: str) -> bool:
    """Whether rendering without the tools (or tool calls) gives the same text: the template ignores
    them. A template that raises without them needs them."""
    try:
        return renderer(messages, tools, False) == full
    except Exception:
        return False


def _mismatch(events, reason, turn: int, opts, warned: list) -> None:
    """Count a mismatch of assistant turn `turn`: reject the row, or (--on-mismatch warn) note it in `warned`."""
    fidelity.mismatch(events, reason)
    if opts.on_mismatch != "warn":
        raise RowProblem(fidelity.reject_reason(reason), f"assistant turn {turn}", reason)
    warned.append((reason, turn))


def _media_error(detail: str) -> DataprepError:
    return DataprepError(f"the chat template cannot render media ({detail[:120]}); pass --chat-template FILE with a "
                         "template that renders image/video/audio parts (e.g. trl's qwen2_5_vl.jinja), or leave the "
                         "multimodal rows out")


# ---------------------------------------------------------------- the row builder


CHUNK = 250  # rows whose renderings are encoded together while the next rows are rendered


def chat_rows(batch, tok, kind, opts, specials, label_names):
    """chat: each conversation rendered with the chat template, trained spans by prefix difference,
    checked against inference-time tokenization (see the module doc).

    Pipelined: the rows are rendered in chunks of CHUNK, each chunk's renderings encoded on a thread
    (the Rust encode releases the GIL) while the next chunk renders and, once all are rendered, while
    the earlier chunks' spans, checks and columns are built. Every row is planned before any is
    finished, so the rejects come in the order of an unchunked run."""
    from dataprep.tokenize.rows import _reject, _where, new_columns

    cols, rejects, events = new_columns(kind), [], Counter()
    renderer = Renderer(tok)
    tools = batch.get("tools") or [None] * len(batch["messages"])
    eos = tok.eos_token
    exact, free = exact_offsets(tok), context_free_words(tok)
    pieces = piece_encoder(tok) if exact and free else None
    pieces = pieces.batch() if pieces is not None else None  # each distinct piece encoded once (tokenize.pieces)

    def positions(texts: list[str]) -> list:
        if pieces is not None:
            return pieces.positions(texts)
        encs = encode_batch(tok, texts, add_special_tokens=False)
        return [Positions(enc, len(text), exact, free=free) for enc, text in zip(encs, texts, strict=True)]

    chunks = []  # (planned rows, their positions: a future)
    planned = []  # (row index, sequences, (reason, turn) of the mismatches kept under warn)
    n = len(batch["messages"])
    for i, (msgs, tl) in enumerate(zip(batch["messages"], tools, strict=True)):
        try:
            seqs, warned = plan_row(renderer, msgs, tl, opts, events, _where(batch, i))
        except RowProblem as p:
            _reject(rejects, batch, i, p.reason, p.detail)
            seqs = None
        if seqs is not None:
            main = seqs[0]
            if specials.eos_id is not None and main.turns and not main.text.rstrip().endswith((eos, *TURN_ENDS)):
                main.text += eos  # a template without an end-of-turn marker: EOS ends the conversation, trained
                main.spans.append((len(main.text) - len(eos), len(main.text)))
            emit = [s for s in seqs if s.turns or s.spans]
            if emit:
                planned.append((i, emit, warned))
            else:
                _reject(rejects, batch, i, "no trainable tokens",
                        f"untrained after fidelity warnings: {', '.join(r for r, _ in warned)}" if warned
                        else "no assistant turn to train")
        if planned and (len(planned) == CHUNK or i == n - 1):
            chunks.append((planned, _encoder().submit(positions, [s.text for _, seqs, _ in planned for s in seqs])))
            planned = []
    added_ids = set(tok.added_tokens_decoder)
    for planned, where in chunks:
        _finish(planned, where.result(), batch, tok, kind, opts, pieces, added_ids, cols, rejects, events)
    return cols, rejects, events


_ENCODER = []


def _encoder():
    """The threads chat batches' renderings are encoded on (two: one for each batch in flight)."""
    if not _ENCODER:
        from concurrent.futures import ThreadPoolExecutor

        _ENCODER.append(ThreadPoolExecutor(2, thread_name_prefix="chat-encode"))
    return _ENCODER[0]


def _finish(planned, where, batch, tok, kind, opts, pieces, added_ids, cols, rejects, events) -> None:
    """The fidelity check, labels, overflow and shard columns of planned rows whose renderings are
    encoded (`where`: their Positions, in order)."""
    from dataprep.tokenize.rows import EVENT_NAMES, _add_causal, _reject, _where, overflow_for

    # the fidelity probes: only the text since the last added token before each seam needs encoding again,
    # and the output's first piece unless it is tokenized alone as in the sequence by construction (None)
    probes = [_probe_turn(pos, s.text, t.start, t.end, added_ids)
              for pos, s in zip(where, (s for _, seqs, _ in planned for s in seqs), strict=True) for t in s.turns]
    probe_texts, output_at = [p[1] for p in probes], []
    for p in probes:
        output_at.append(None if p[3] is None else len(probe_texts))
        probe_texts += [] if p[3] is None else [p[3]]
    probe_ids = (pieces.ids(probe_texts) if pieces is not None else
                 [e.ids for e in encode_batch(tok, probe_texts, add_special_tokens=False, offsets=False)])
    e, t_at = 0, 0
    overflow = overflow_for(kind, opts.overflow)
    for i, seqs, warned in planned:
        row_where = where[e : e + len(seqs)]
        e += len(seqs)
        bad = []
        for s in seqs:
            for t in s.turns:
                straddles, _, expected_prompt, _, expected_output = probes[t_at]
                at = output_at[t_at]
                reason = ("prompt_seam" if straddles or probe_ids[t_at] != expected_prompt
                          else "output_tokens" if at is not None and probe_ids[at] != expected_output else None)
                t_at += 1
                if reason:
                    fidelity.mismatch(events, reason)
                    bad.append((reason, t.index))
        if bad and opts.on_mismatch != "warn":
            reason, index = bad[0]
            _reject(rejects, batch, i, fidelity.reject_reason(reason), f"assistant turn {index}: {fidelity.REASONS[reason]}")
            continue
        media = media_of(batch["messages"][i])
        if media:
            events["rows_with_media"] += 1
        n_rejects, kept = len(rejects), 0
        for s, pos in zip(seqs, row_where, strict=True):
            labels = pos.labels(sorted([sp for t in s.turns for sp in t.spans] + s.spans))
            fitted, k2, event = fit(pos.ids, pos.first_trained, opts.max_len, overflow, _where(batch, i))
            offset = pos.first_trained - k2 if event in ("truncated_prompt", "truncated_completion") else 0
            labels = list(fitted) if opts.train_on_inputs else labels[offset : offset + len(fitted)]
            before = len(cols["length"])
            _add_causal(cols, rejects, events, batch, i, fitted, labels, EVENT_NAMES["chat"].get(event, event))
            if len(cols["length"]) > before:
                cols["media"].append([dict(x) for x in media])
                kept += 1
                if s.extra:
                    events["split_turn_tokens"] += len(fitted)
        if kept:  # the row is out: a sequence of it with nothing left to train is not a reject
            del rejects[n_rejects:]
            if warned or bad:  # --on-mismatch warn: kept, and listed for `dataprep inspect --fidelity`
                issues = [*warned, *bad]
                fidelity.keep(cols, batch["source"][i], batch["row"][i], [r for r, _ in issues],
                              "; ".join(f"assistant turn {turn}: {r}" for r, turn in issues))
            if kept > 1:
                events["split_turns"] += kept - 1  # sequences beyond the row's first
        else:
            del rejects[n_rejects + 1 :]


class Positions:
    """Where the characters of one rendering fall among its tokens.

    With `exact` offsets (seam.exact_offsets: every token covers the characters it encodes, at least
    one, in order) the encoding itself says which token holds a character (`char_to_token`): a few
    lookups per turn. Otherwise, or when no token holds a character, all offsets are read once and
    searched. `free`: the tokenizer's words are context free (seam.context_free_words)."""

    def __init__(self, enc, text_len: int, exact: bool, free: bool = False) -> None:
        self.enc, self.ids, self.text_len, self.free = enc, enc.ids, text_len, free
        self.offsets = self.starts = None
        self.first_trained = len(self.ids)  # set by `labels`
        if not exact:
            self._read_offsets()

    def _read_offsets(self) -> None:
        self.offsets = self.enc.offsets
        self.starts = [o[0] for o in self.offsets]

    def first_at(self, c: int, lo: int = 0) -> tuple[int, bool]:
        """(the first token starting at or after character `c`, whether a token before it reaches past `c`)."""
        if self.offsets is None:
            if c >= self.text_len:
                return len(self.ids), False
            t = self.enc.char_to_token(c)
            if t is not None:
                return (t + 1, True) if self.enc.token_to_chars(t)[0] < c else (t, False)
            self._read_offsets()
        j = bisect_left(self.starts, c, lo)
        return j, any(self.offsets[x][1] > c for x in range(max(0, j - 3), j))

    def end_of(self, x: int) -> int:
        return self.enc.token_to_chars(x)[1] if self.offsets is None else self.offsets[x][1]

    def word_starts(self, j: int) -> bool:
        """Whether token j starts a word of the pre-tokenizer."""
        return j == 0 or self.enc.token_to_word(j - 1) != self.enc.token_to_word(j)

    def start_of(self, x: int) -> int:
        return self.enc.token_to_chars(x)[0] if self.offsets is None else self.offsets[x][0]

    def labels(self, spans: list[tuple[int, int]]) -> list[int]:
        return trained_labels(self, spans)


def trained_labels(pos, spans: list[tuple[int, int]]) -> list[int]:
    """`pos`'s ids (a Positions or pieces.PiecePositions) with every token outside the (sorted) trained
    character spans set to IGNORE_INDEX: a token is trained when its first character lies in a span
    (`masks.span_mask`). Sets `pos.first_trained`."""
    ids = pos.ids
    if pos.offsets is None:
        ranges = [(pos.first_at(a)[0], pos.first_at(b)[0]) for a, b in spans]
        if pos.offsets is None:  # (first_at may have fallen back to the offsets)
            labels = [IGNORE_INDEX] * len(ids)
            for lo, hi in ranges:
                labels[lo:hi] = ids[lo:hi]
            pos.first_trained = min((lo for lo, hi in ranges if hi > lo), default=len(ids))
            return labels
    mask = span_mask(pos.offsets, spans)
    pos.first_trained = int(mask.argmax()) if mask.any() else len(ids)
    return [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]


def _probe_turn(pos: Positions, text: str, start: int, end: int, added: set[int]) -> tuple[bool, str, list[int], str | None, list[int]]:
    """What the fidelity check of one turn encodes and what it must equal: (a token straddles the
    seam, prompt text, its ids in the sequence, output text, its ids in the sequence).

    Tokenizers split the text on added tokens first and tokenize the pieces between them on their own,
    so the prompt tokenized alone equals the sequence's tokens up to the last added token before the
    seam; only the piece after it (`assistant\n`) can differ, and only it is encoded again. Likewise
    the output's piece before its first added token, when the output ends on a piece boundary (after
    an end-of-turn token); otherwise the whole prompt or output is encoded. That piece needs no
    encoding (output text None) when the tokenizer's words are context free (`pos.free`) and a word
    starts at the seam in the sequence: the piece is then whole words up to a segment's end, which
    are the same words, and so the same tokens, when it is tokenized alone."""
    ids = pos.ids
    n = len(ids)
    j, straddles = pos.first_at(start)
    j0 = next((x for x in range(j - 1, -1, -1) if ids[x] in added), None)
    if j0 is not None:
        prompt_text, prompt_ids = text[pos.end_of(j0) : start], ids[j0 + 1 : j]
    else:
        prompt_text, prompt_ids = text[:start], ids[:j]
    k = pos.first_at(end, j)[0]
    clean_end = k > j and pos.end_of(k - 1) == end and (ids[k - 1] in added or k == n or ids[k] in added)
    in_output = added.intersection(ids[j:k])  # the added tokens in the output (C speed, not a Python loop)
    k0 = min(ids.index(a, j, k) for a in in_output) if in_output else None
    if clean_end and k0 is not None:
        if pos.free and pos.offsets is None and not straddles and pos.word_starts(j):
            return straddles, prompt_text, prompt_ids, None, ids[j:k0]
        return straddles, prompt_text, prompt_ids, text[start : pos.start_of(k0)], ids[j:k0]
    return straddles, prompt_text, prompt_ids, text[start:end], ids[j:k]
