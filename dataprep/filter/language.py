"""Language filter: keep rows whose fields are in the allowed languages, per field.

The identifier is py3langid (a maintained fork of langid.py: naive Bayes over byte n-grams, 140
languages, its model inside the wheel, numpy only; nothing is downloaded). Its probabilities are
normalised; a field passes when the probability of the allowed languages together is at least
the threshold. Fields shorter than `min_chars` characters (stripped) are not judged: the
identifier is less accurate there (benchmarks/RESULTS.md); empty fields never are. Only the
first MAX_CHARS characters of a text are read. The reason is `FIELD not LANG+LANG`; the score the
allowed languages' probability; the detail the detected language and its probability.
"""

from __future__ import annotations

import functools

import numpy as np

from dataprep.filter.fields import FilterResult, field_texts

MAX_CHARS = 1000
# the identifier's labels (py3langid 0.4), for checking --lang without loading the model
LANGUAGES = tuple("""af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi
hr ht hu hy id ig is it ja jv ka kk km kn ko ku ky la lg ln lo lt lv mg mk ml mn mr ms my ne nl no om or pa pl ps pt qu
ro ru sa si sk sl so sq sr sv sw ta te th tl tr ug uk ur uz vi xh yo zh zu zxx ace bcl dz ext gcf gom grc gug hbo kik
nso pcm rw se sn st an ary crh fo fuv gcr guw kab lb lij ltg uzs wa sdh arz ba mt nn oc tg tk tt vec vo wuu yue""".split())
# languages the identifier tells apart that one code stands for: `zh` also accepts Cantonese and Wu
# (py3langid labels much short written Chinese yue); asking for yue or wuu alone still works
ALIASES = {"zh": ("zh", "yue", "wuu")}


@functools.cache
def identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str) -> tuple[str, float, dict[str, float]]:
    """(top language, its probability, every language's probability) of one text."""
    ranked = identifier().rank(text[:MAX_CHARS])
    return ranked[0][0], float(ranked[0][1]), dict(ranked)


def expand(langs) -> set[str]:
    return {x for code in langs for x in ALIASES.get(code, (code,))}


def language_filter(frame, kind: str | None, langs: dict[str, tuple[str, ...]], threshold: float,
                    min_chars: int) -> FilterResult:
    """`langs`: field -> allowed codes. Pure: one result per row of `frame`."""
    n = frame.height
    res = FilterResult.empty(n)
    judged = np.zeros(n, dtype=bool)
    for fname, codes in langs.items():
        allowed, label = expand(codes), "+".join(codes)
        for i, text in enumerate(field_texts(frame, kind, fname)):
            if res.reason[i] is not None or len(text.strip()) < min_chars:
                continue
            top, p_top, probs = detect(text)
            p = sum(probs.get(c, 0.0) for c in allowed)
            judged[i] = True
            if p < threshold:
                res.reason[i], res.score[i], res.detail[i] = f"{fname} not {label}", p, f"{fname}: {top} {p_top:.2f}"
            elif np.isnan(res.margin[i]) or p - threshold < res.margin[i]:
                res.score[i], res.margin[i], res.detail[i] = p, p - threshold, f"{fname}: {top} {p_top:.2f}"
    res.stats["not_judged"] = int((~judged).sum())
    return res
