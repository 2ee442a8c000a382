"""The filter stage's options (dataprep.options): CLI flags, recipe keys and `filter(**options)`.

Each family runs only when one of its options is given: length (--min-chars ... --max-turns),
language (--lang), PII (--pii), quality (--quality).
"""

from __future__ import annotations

from dataclasses import dataclass

from dataprep.filter.fields import spec_check
from dataprep.filter.language import LANGUAGES
from dataprep.filter.pii import MODES, TYPES
from dataprep.options import opt

FAMILIES = ("length", "language", "pii", "quality")  # the order filters run in
ENABLING = "--min-/--max-chars|words|tokens|turns, --lang, --pii or --quality"


def _langs(items) -> str | None:
    for item in items or ():
        field, _, codes = item.rpartition("=")
        bad = [c for c in codes.split("+") if c not in LANGUAGES]
        if bad or not codes:
            return (f"unknown language code {'+'.join(bad) or item!r}; use ISO 639-1 codes such as ko, en, zh, ja "
                    f"(known: {len(LANGUAGES)} codes, e.g. {', '.join(LANGUAGES[:12])}, ...)")
    return None


def _bound(unit: str, what: str):
    return opt(None, f"{what} {unit} per field: N (every field in --fields) or FIELD=N, comma-separated.",
               check=spec_check(f"--{what.split()[0].lower()}-{unit}", float), metavar="[FIELD=]N")


def _word_length(value) -> str | None:
    if len(value) != 2:
        return "give MIN,MAX"
    try:
        lo, hi = (float(v) for v in value)
    except ValueError:
        return "give two numbers MIN,MAX"
    return None if 0 <= lo < hi else "need 0 ≤ MIN < MAX"


@dataclass(frozen=True)
class FilterConfig:
    fields: tuple[str, ...] | None = opt(None, "Fields the length and language filters look at (default: prompt,answer "
                                         "for sft/chat/preference, text for text/classify).")
    min_chars: tuple[str, ...] | None = _bound("chars", "Minimum")
    max_chars: tuple[str, ...] | None = _bound("chars", "Maximum")
    min_words: tuple[str, ...] | None = _bound("words", "Minimum")
    max_words: tuple[str, ...] | None = _bound("words", "Maximum")
    min_tokens: tuple[str, ...] | None = _bound("tokens", "Minimum")
    max_tokens: tuple[str, ...] | None = _bound("tokens", "Maximum")
    min_turns: tuple[str, ...] | None = _bound("turns", "Minimum")
    max_turns: tuple[str, ...] | None = _bound("turns", "Maximum")
    tokenizer: str | None = opt(None, "Tokenizer for --min/--max-tokens: packaged name, path or Hub id.")
    lang: tuple[str, ...] | None = opt(None, "Languages to keep: ko,en (every field) or FIELD=ko+en per field.",
                                       check=_langs, metavar="LANGS")
    lang_threshold: float = opt(0.5, "Keep a field when its allowed languages' probability is at least this.",
                                min=0, max=1)
    lang_min_chars: int = opt(20, "Fields shorter than this (characters) are not judged by --lang.", min=0)
    pii: str | None = opt(None, "Find PII: redact (placeholders), drop (remove the row) or flag (a pii column).",
                          choices=MODES)
    pii_types: tuple[str, ...] = opt(TYPES, "PII types looked for.", choices=TYPES)
    quality: bool = opt(False, "Run the quality rules (empty/repeated answers, refusals, Gopher repetition and ratios).")
    quality_min_words: int = opt(50, "Gopher rules apply only to answers of at least this many words.", min=1)
    max_dup_line_frac: float = opt(0.5, "Largest share of repeated lines.", min=0, max=1)
    max_top_2gram_frac: float = opt(0.3, "Largest share of characters in the most frequent word 2-gram.", min=0, max=1)
    max_dup_5gram_frac: float = opt(0.3, "Largest share of characters in repeated word 5-grams.", min=0, max=1)
    max_symbol_ratio: float = opt(0.2, "Largest ratio of # and ellipses to words.", min=0)
    mean_word_length: tuple[str, ...] = opt(("2", "12"), "MIN,MAX mean word length (not for Han/Kana texts).",
                                            check=_word_length)
    max_bullet_frac: float = opt(1.0, "Largest share of lines starting with a bullet (answers of 3+ lines; 1 = off: lists are good SFT answers).",
                                 min=0, max=1)
    max_ellipsis_frac: float = opt(0.3, "Largest share of lines ending in an ellipsis (answers of 3+ lines).",
                                   min=0, max=1)
    dry_run: bool = opt(False, "Only annotate and count: write every row with filter, filter_reason, filter_score.")

    def enabled(self) -> tuple[str, ...]:
        length = any(getattr(self, f"{b}_{u}") for b in ("min", "max") for u in ("chars", "words", "tokens", "turns"))
        on = {"length": length, "language": bool(self.lang), "pii": self.pii is not None, "quality": self.quality}
        return tuple(f for f in FAMILIES if on[f])

    @property
    def word_length_bounds(self) -> tuple[float, float]:
        lo, hi = (float(v) for v in self.mean_word_length)
        return lo, hi
