"""Can the embedding model read these texts? Scripts of the texts against the languages of the model.

Semantic dedupe trusts that unrelated texts get distant embeddings. A model that cannot read
a language does not give that: the English-only MiniLM puts unrelated Korean or Chinese texts
close together, and dedupe would remove them as duplicates. So before embedding:

- each text's script is the Unicode script of most of its letters (Latin, Hangul, Han, Kana,
  Cyrillic, Arabic, Devanagari, Thai, ...; digits, punctuation and symbols do not count); a
  text in Han with Kana in it is Japanese. Counting code points with numpy: no model, no package;
  the first MAX_CHARS characters of each text, of at most MAX_TEXTS texts (a seeded sample).
- the model's languages come from its model card (`language:` in the front matter of
  README.md in the model directory) or config.json, else from `KNOWN_MODELS` by name, and are
  mapped to the scripts they are written in. A model found in neither is unknown: a warning, no
  refusal.
- when more than `MISMATCH_SHARE` of the texts that have letters are in scripts the model does
  not cover, semantic dedupe does not run (dataprep.dedupe.methods decides: refused when asked
  for, skipped with a warning when it was only the default). Latin-script languages are not
  told apart: German under an English model is not refused; the separation warning (median
  nearest-neighbour similarity near the threshold) is the check that remains there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MISMATCH_SHARE = 0.5  # refuse (or skip) when more than this share of texts is in scripts the model does not cover
WARN_SHARE = 0.05  # warn when more than this share is
MAX_CHARS = 500  # characters of each text looked at
MAX_TEXTS = 10_000  # texts looked at: a seeded random sample of larger inputs
MULTILINGUAL_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"  # the model the refusal names
OVERRIDE_FLAG = "--allow-model-language-mismatch"

# (first code point, last code point, script); everything else (digits, punctuation, symbols, marks) is not counted
_RANGES = [
    (0x0041, 0x005A, "Latin"), (0x0061, 0x007A, "Latin"), (0x00C0, 0x024F, "Latin"), (0x1E00, 0x1EFF, "Latin"),
    (0xFF21, 0xFF3A, "Latin"), (0xFF41, 0xFF5A, "Latin"),
    (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x08A0, 0x08FF, "Arabic"), (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"), (0x0980, 0x09FF, "Bengali"), (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"), (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0C7F, "Telugu"), (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"), (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"), (0x0E80, 0x0EFF, "Lao"), (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"), (0x1100, 0x11FF, "Hangul"), (0x1200, 0x137F, "Ethiopic"), (0x1780, 0x17FF, "Khmer"),
    (0x3040, 0x30FF, "Kana"), (0x3130, 0x318F, "Hangul"), (0x31F0, 0x31FF, "Kana"), (0x3400, 0x4DBF, "Han"),
    (0x4E00, 0x9FFF, "Han"), (0xA960, 0xA97F, "Hangul"), (0xAC00, 0xD7FF, "Hangul"), (0xF900, 0xFAFF, "Han"),
    (0xFF66, 0xFF9F, "Kana"), (0x20000, 0x2FA1F, "Han"),
]
_RANGES.sort()
SCRIPTS = sorted({s for _, _, s in _RANGES})
_STARTS = np.array([r[0] for r in _RANGES], dtype=np.int64)
_ENDS = np.array([r[1] for r in _RANGES], dtype=np.int64)
_SCRIPT_ID = np.array([SCRIPTS.index(r[2]) for r in _RANGES], dtype=np.int64)

# the language a script is most likely to be, for messages ("Hangul (Korean)")
SCRIPT_LANGUAGE = {"Hangul": "Korean", "Han": "Chinese", "Kana": "Japanese", "Thai": "Thai", "Greek": "Greek",
                   "Hebrew": "Hebrew", "Armenian": "Armenian", "Georgian": "Georgian", "Bengali": "Bengali",
                   "Tamil": "Tamil", "Telugu": "Telugu", "Kannada": "Kannada", "Malayalam": "Malayalam",
                   "Gujarati": "Gujarati", "Gurmukhi": "Punjabi", "Sinhala": "Sinhala", "Lao": "Lao",
                   "Khmer": "Khmer", "Myanmar": "Burmese", "Ethiopic": "Amharic"}

# ISO 639-1 (and a few 639-3) codes of languages not written in Latin script; every other code a model card lists is Latin
_NON_LATIN = {
    "Cyrillic": "ru uk bg be mk mn kk ky tg sr ba tt cv ce os",
    "Arabic": "ar fa ur ps ug ckb sd ku arz ary",
    "Devanagari": "hi mr ne sa mai bho new",
    "Bengali": "bn as", "Gurmukhi": "pa", "Gujarati": "gu", "Tamil": "ta", "Telugu": "te", "Kannada": "kn",
    "Malayalam": "ml", "Sinhala": "si", "Thai": "th", "Lao": "lo", "Khmer": "km", "Myanmar": "my",
    "Georgian": "ka", "Armenian": "hy", "Hebrew": "he iw yi", "Greek": "el", "Ethiopic": "am ti",
    "Hangul": "ko", "Han": "zh yue wuu ja", "Kana": "ja",
}
LANGUAGE_SCRIPTS: dict[str, set[str]] = {}
for _script, _codes in _NON_LATIN.items():
    for _code in _codes.split():
        LANGUAGE_SCRIPTS.setdefault(_code, set()).add(_script)
ALL = frozenset(SCRIPTS)
ENGLISH = ("English", frozenset({"Latin"}))
MANY = ("many languages", ALL)

# Models known by name (the last part of a path or Hub id, lower-case): exact names, then prefixes.
KNOWN_MODELS = {
    "minilm": ENGLISH, "all-minilm-l6-v2": ENGLISH, "all-minilm-l12-v2": ENGLISH, "all-mpnet-base-v2": ENGLISH,
    "all-distilroberta-v1": ENGLISH, "paraphrase-minilm-l6-v2": ENGLISH, "paraphrase-minilm-l3-v2": ENGLISH,
    "paraphrase-mpnet-base-v2": ENGLISH, "multi-qa-minilm-l6-cos-v1": ENGLISH, "multi-qa-mpnet-base-dot-v1": ENGLISH,
    "bge-small-en-v1.5": ENGLISH, "bge-base-en-v1.5": ENGLISH, "bge-large-en-v1.5": ENGLISH,
    "e5-small-v2": ENGLISH, "e5-base-v2": ENGLISH, "e5-large-v2": ENGLISH,
    "gte-small": ENGLISH, "gte-base": ENGLISH, "gte-large": ENGLISH, "smollm2-135m": ENGLISH,
    "labse": MANY, "bge-m3": MANY,
}
KNOWN_PREFIXES = {"paraphrase-multilingual-": MANY, "distiluse-base-multilingual-": MANY, "multilingual-e5-": MANY,
                  "gte-multilingual-": MANY, "labse": MANY}


def text_scripts(texts: list[str]) -> np.ndarray:
    """Each text's script (its index in SCRIPTS), or -1 for a text without letters."""
    n = len(texts)
    if not n:
        return np.empty(0, dtype=np.int64)
    clipped = [t[:MAX_CHARS] for t in texts]
    points = np.frombuffer("".join(clipped).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    doc = np.repeat(np.arange(n), [len(t) for t in clipped])
    r = np.searchsorted(_STARTS, points, side="right") - 1  # the last range starting at or before each point
    inside = (r >= 0) & (points <= _ENDS[r.clip(min=0)])
    counts = np.zeros((n, len(SCRIPTS)), dtype=np.int64)
    np.add.at(counts, (doc[inside], _SCRIPT_ID[r[inside]]), 1)
    script = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)
    han, kana = SCRIPTS.index("Han"), SCRIPTS.index("Kana")
    japanese = (script == han) & (counts[:, kana] > 0)  # Japanese is written in Han and Kana together
    script[japanese] = kana
    return script


def script_name(script: str) -> str:
    return f"{script} ({SCRIPT_LANGUAGE[script]})" if script in SCRIPT_LANGUAGE else script


def _listed(value) -> list[str]:
    return [str(x) for x in (value if isinstance(value, list) else [value])] if value else []


def _card_languages(path: Path) -> tuple[list[str], str]:
    """(the `language:` of the model card's YAML front matter, or config.json's language(s), where it was read)."""
    card = path / "README.md"
    if card.is_file():
        front = re.match(r"---\s*\n(.*?)\n---", card.read_text(encoding="utf-8", errors="replace"), re.S)
        if front:
            import yaml

            try:
                meta = yaml.safe_load(front.group(1))
            except yaml.YAMLError:
                meta = None
            if isinstance(meta, dict) and _listed(meta.get("language")):
                return _listed(meta["language"]), "its model card"
    config = path / "config.json"
    if config.is_file():
        try:
            meta = json.loads(config.read_text())
        except (ValueError, OSError):
            meta = None
        if isinstance(meta, dict) and _listed(meta.get("language") or meta.get("languages")):
            return _listed(meta.get("language") or meta.get("languages")), "its config.json"
    return [], ""


def _scripts_of(languages: list[str]) -> tuple[str, frozenset[str]]:
    """(the languages in words, the scripts they are written in); a code not in LANGUAGE_SCRIPTS is Latin."""
    codes = [re.split(r"[-_]", x.strip().lower())[0] for x in languages]
    if "multilingual" in codes:
        return MANY
    scripts = set()
    for code in codes:
        scripts |= LANGUAGE_SCRIPTS.get(code, {"Latin"})
    if codes == ["en"]:
        return "English", frozenset(scripts)
    label = ", ".join(languages[:8]) + (f", ... ({len(languages)} in all)" if len(languages) > 8 else "")
    return label, frozenset(scripts)


def model_languages(name: str, path: str | None) -> tuple[str, frozenset[str] | None, str]:
    """(what it covers in words, scripts it covers or None if unknown, where that was read)."""
    if path and Path(path).is_dir():
        langs, source = _card_languages(Path(path))
        if langs:
            label, scripts = _scripts_of(langs)
            return label, scripts, source
    for key in dict.fromkeys([name.rstrip("/").rsplit("/", 1)[-1].lower(), Path(path or "").name.lower()]):
        if key in KNOWN_MODELS:
            label, scripts = KNOWN_MODELS[key]
            return label, scripts, "dataprep's table of known models"
        for prefix, (label, scripts) in KNOWN_PREFIXES.items():
            if key and key.startswith(prefix):
                return label, scripts, "dataprep's table of known models"
    return "unknown languages", None, "neither a model card nor dataprep's table of known models"


@dataclass
class LanguageCheck:
    model: str
    texts: int  # texts with letters (of the sample)
    scripts: dict[str, int]  # texts per script, most first
    covers: str  # the model's languages in words
    covered: frozenset[str] | None  # scripts the model covers; None: unknown
    source: str
    outside: dict[str, int] = field(default_factory=dict)  # texts per script the model does not cover
    sampled_from: int | None = None  # the number of texts when only a sample was looked at

    @property
    def n_outside(self) -> int:
        return sum(self.outside.values())

    @property
    def share_outside(self) -> float:
        return self.n_outside / self.texts if self.texts else 0.0

    @property
    def mismatch(self) -> bool:
        return self.share_outside > MISMATCH_SHARE

    def what(self) -> str:
        """`1038 of 1040 texts (99.8%) are in Hangul (Korean), which model 'minilm' does not read (English, per its model card)`."""
        top = ", ".join(script_name(s) for s in self.outside)
        texts = f"sampled texts (of {self.sampled_from})" if self.sampled_from else "texts"
        return (f"{self.n_outside} of {self.texts} {texts} ({self.share_outside:.1%}) are in {top}, which "
                f"model {self.model!r} does not read ({self.covers}, per {self.source})")

    def remedy(self) -> str:
        return (f"for semantic dedupe pass a model that reads them, e.g. --model {MULTILINGUAL_MODEL} (from the Hub: "
                f"needs network; or a local directory of it), or {OVERRIDE_FLAG} to run {self.model!r} anyway")

    def to_json(self) -> dict:
        return {"model": self.model, "texts_with_letters": self.texts, "scripts": self.scripts,
                "model_covers": self.covers, "model_scripts": sorted(self.covered) if self.covered is not None else None,
                "source": self.source, "outside": self.outside, "share_outside": round(self.share_outside, 4),
                "sampled_from": self.sampled_from}


def check(texts: list[str], model: str, path: str | None) -> LanguageCheck:
    """The scripts of `texts` against the languages of `model` (at `path`, its resolved directory)."""
    sampled_from = None
    if len(texts) > MAX_TEXTS:
        pick = np.sort(np.random.default_rng(0).choice(len(texts), MAX_TEXTS, replace=False))
        texts, sampled_from = [texts[i] for i in pick.tolist()], len(texts)
    script = text_scripts(texts)
    ids, counts = np.unique(script[script >= 0], return_counts=True)
    found = {SCRIPTS[i]: int(c) for i, c in sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda x: -x[1])}
    covers, covered, source = model_languages(model, path)
    outside = {s: c for s, c in found.items() if covered is not None and s not in covered}
    return LanguageCheck(model, int((script >= 0).sum()), found, covers, covered, source, outside, sampled_from)
