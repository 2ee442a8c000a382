"""Quality rules for SFT, chat and text data, in this order (the first a row breaks is its reason):

- `empty answer`: the answer (sft output, chat assistant turns, text) is empty or whitespace.
- `repeats prompt`: the answer, normalised (case, whitespace, punctuation at the ends), equals the
  instruction or the whole prompt (sft/chat only; an answer equal to the *input* alone is a fair
  answer to "fix the grammar" and is kept).
- `refusal`: refusal boilerplate ("As an AI language model", "I'm sorry, but I cannot ...", and
  Korean and Chinese equivalents) in the answer's first REFUSAL_CHARS characters.
- Gopher-style rules (Rae et al. 2021), only on answers of at least `quality_min_words` words:
  `duplicate lines` (share of lines that repeat an earlier line), `top 2-gram` (share of the
  words' characters in the most frequent word 2-gram), `duplicate 5-grams` (share of characters
  in word 5-grams seen before), `symbol ratio` (# and ellipses per word), `mean word length`
  (outside [min, max]; not for texts mostly in Han/Kana, which do not space words),
  `bullet lines` and `ellipsis lines` (share of lines starting with a bullet / ending in an ellipsis).

The score is the measured value; the margin how far inside its threshold a kept row's closest rule was.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from dataprep.filter.fields import FilterResult, field_texts

REFUSAL_CHARS = 300
REFUSALS = re.compile("|".join([
    r"\bas an ai language model\b", r"\bas an ai(?: assistant| model)?,? i (?:do not|don't|cannot|can't|am not|am unable)\b",
    r"\bas a (?:large )?language model\b", r"\bi(?:'m| am) sorry,? but i (?:can ?not|can't|am unable)\b",
    r"\bi (?:can ?not|can't) (?:fulfill|comply with|assist with) (?:this|that|your) request\b",
    r"\bi(?:'m| am) not able to (?:provide|help|assist)\b",
    r"(?:ai|인공지능) ?(?:언어 ?모델|어시스턴트|비서)?(?:로서|으로서)[^.!?\n]{0,30}(?:수 없|않습니다|없습니다)", r"저는 (?:ai|인공지능)(?: 언어 모델)?(?:이기| 모델이기)",
    r"죄송하지만[^.!?\n]{0,40}(?:수 없습니다|할 수 없어요|드릴 수 없)",
    r"作为(?:一个|一名)?(?:ai|人工智能)(?:语言模型|助手)?", r"抱歉，?我(?:无法|不能)",
]), re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•●▪◦‣]|\d+[.)])\s")
_HAN_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
_NORM = re.compile(r"^[\W_]+|[\W_]+$")


def _norm(text: str) -> str:
    return _NORM.sub("", " ".join(text.lower().split()))


def _ngram_shares(words: list[str]) -> tuple[float, float]:
    """(share of characters in the most frequent 2-gram, share of characters in repeated 5-grams)."""
    chars = sum(len(w) for w in words) or 1
    top = 0.0
    if len(words) >= 2:
        grams = Counter(zip(words, words[1:], strict=False))
        gram, count = grams.most_common(1)[0]
        top = (len(gram[0]) + len(gram[1])) * count / chars if count > 1 else 0.0
    dup = np.zeros(len(words), dtype=bool)
    seen: set = set()
    for i in range(len(words) - 4):
        g = tuple(words[i:i + 5])
        if g in seen:
            dup[i:i + 5] = True
        seen.add(g)
    return top, sum(len(w) for w, d in zip(words, dup, strict=True) if d) / chars


def rule_values(answer: str, prompt: str, instruction: str, cfg) -> list[tuple[str, float, float, bool]]:
    """(rule, value, distance inside its threshold, fails) for each rule that applies, in order."""
    out = []
    if not answer.strip():
        return [("empty answer", 0.0, 0.0, True)]
    if prompt:
        a = _norm(answer)
        same = bool(a) and (a == _norm(prompt) or a == _norm(instruction))
        out.append(("repeats prompt", float(same), 1.0, same))
    hit = REFUSALS.search(answer[:REFUSAL_CHARS])
    out.append(("refusal", float(bool(hit)), 1.0, bool(hit)))
    words = answer.split()
    if len(words) < cfg.quality_min_words:
        return out
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    n_lines = len(lines) or 1
    dup_lines = (len(lines) - len(set(lines))) / n_lines
    top2, dup5 = _ngram_shares(words)
    symbols = (answer.count("#") + answer.count("...") + answer.count("…")) / len(words)
    mean_len = sum(len(w) for w in words) / len(words)
    bullets = sum(1 for ln in lines if _BULLET.match(ln)) / n_lines
    ellipsis = sum(1 for ln in lines if ln.endswith(("...", "…"))) / n_lines
    out += [("duplicate lines", dup_lines, cfg.max_dup_line_frac - dup_lines, dup_lines > cfg.max_dup_line_frac),
            ("top 2-gram", top2, cfg.max_top_2gram_frac - top2, top2 > cfg.max_top_2gram_frac),
            ("duplicate 5-grams", dup5, cfg.max_dup_5gram_frac - dup5, dup5 > cfg.max_dup_5gram_frac),
            ("symbol ratio", symbols, cfg.max_symbol_ratio - symbols, symbols > cfg.max_symbol_ratio)]
    if len(_HAN_KANA.findall(answer)) * 2 < len(answer.replace(" ", "")):
        lo, hi = cfg.word_length_bounds
        out.append(("mean word length", mean_len, min(mean_len - lo, hi - mean_len) / hi, not lo <= mean_len <= hi))
    if len(lines) >= 3:
        out += [("bullet lines", bullets, cfg.max_bullet_frac - bullets, bullets > cfg.max_bullet_frac),
                ("ellipsis lines", ellipsis, cfg.max_ellipsis_frac - ellipsis, ellipsis > cfg.max_ellipsis_frac)]
    return out


def quality_filter(frame, kind: str | None, cfg) -> FilterResult:
    """Pure: one result per row of `frame` (options from `cfg`, a FilterConfig)."""
    n = frame.height
    res = FilterResult.empty(n)
    answer_field = "answer" if kind in ("sft", "chat", "preference", "kto") else "text"
    answers = field_texts(frame, kind, answer_field)
    prompts = field_texts(frame, kind, "prompt") if answer_field == "answer" else [""] * n
    instr = (field_texts(frame, kind, "instruction") if kind == "sft" and "instruction" in frame.columns else prompts)
    for i in range(n):
        best = None
        for rule, value, inside, fails in rule_values(answers[i] or "", prompts[i] or "", instr[i] or "", cfg):
            if fails:
                res.reason[i], res.score[i], res.detail[i] = rule, value, rule
                break
            if rule not in ("repeats prompt", "refusal") and (best is None or inside < best[2]):
                best = (rule, value, inside)
        if res.reason[i] is None and best is not None:
            res.detail[i], res.score[i], res.margin[i] = best[0], best[1], max(best[2], 0.0)
    return res
