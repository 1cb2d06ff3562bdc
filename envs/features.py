"""Interpretable style features of a reply, computed from cheap deterministic text statistics.

Every simulated user scores replies along the same named style dimensions. A feature is a number in
``[0, 1]`` that says how much of a style a reply has (``brevity`` 1.0 = a one-word reply). Users differ
only in how much they want of each style (their hidden ``preference_weights``), so a researcher can
read a user's utility term by term.

The extractors are pure functions of the text: the same reply always gets the same features, with no
model and no randomness, so that rewards are reproducible and the user is never the bottleneck.

They are built not to be gamed by stuffing: a word of a style lexicon counts at most twice however often
it is repeated (:data:`MAX_REPEATS`), every lexicon feature saturates after a few distinct words, and
bullets count only with something after the marker. The other term of a user's utility, **task
relevance** (does the reply answer the task in its own words), is :mod:`envs.relevance`; it reads the
same tokens, so it scores a batch's features and relevance in one pass.

>>> from envs.features import style_features, STYLE_DIMENSIONS
>>> f = style_features(["Dear team, please find the summary below."])
>>> dict(zip(STYLE_DIMENSIONS, f[0].round(3).tolist()))["formality"]
0.833
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

STYLE_DIMENSIONS: tuple[str, ...] = (
    "brevity",
    "formality",
    "technical_depth",
    "warmth",
    "structure",
    "examples",
)
"""The named preference dimensions every scenario shares, in the column order of :func:`style_features`."""

DOMAIN_DIMENSIONS: tuple[str, ...] = ("jargon", "simplicity", "caution", "empathy")
"""Scenario-specific dimensions (customer support: jargon; tutor: simplicity; health coach: caution, empathy)."""

ALL_DIMENSIONS: tuple[str, ...] = STYLE_DIMENSIONS + DOMAIN_DIMENSIONS

DIMENSION_HELP: dict[str, str] = {
    "brevity": "short replies; 1 / (1 + words / 30): 0 words -> 1.0, 30 words -> 0.5, 90 words -> 0.25",
    "formality": "formal markers (dear, please, regards, therefore, ...) against informal ones "
    "(contractions, '!', hey, cool, emoji): 0.5 + (min(1, formal / 3) - min(1, informal / 3)) / 2",
    "technical_depth": "share of long words (>= 9 letters) and numbers, times 4, capped at 1",
    "warmth": "warm, personal words (glad, hope, thanks, sorry, happy, ...): count / 3, capped at 1",
    "structure": "lines that are bullets, numbered items or headings with text after the marker: count / 3, capped at 1",
    "examples": "example markers (for example, e.g., for instance, such as): count / 2, capped at 1",
    "jargon": "share of support jargon (router, firmware, cache, DNS, ...) and ALL-CAPS acronyms, times 5, capped at 1",
    "simplicity": "plain language: short words and short sentences (1.0 = words <= 3.5 letters, sentences <= 8 words)",
    "caution": "hedges and safety advice (consult, doctor, may, seek medical help, ...): count / 3, capped at 1",
    "empathy": "acknowledging feelings (I understand, that sounds hard, sorry to hear, ...): count / 2, capped at 1",
}
"""One line per dimension: what raises the feature. Shown in docs and critiques. In every count a word,
phrase or mark counts at most :data:`MAX_REPEATS` times."""

BREVITY_HALF_WORDS = 30.0
MAX_REPEATS = 2
"""A lexicon word (or phrase, acronym, '!', emoji, long word) counts at most this many times: repeating
one word is not more of a style than using it twice."""
LEXICONS: dict[str, tuple[str, ...]] = {
    "formal": tuple("dear please kindly regards sincerely therefore however furthermore moreover consequently "
                    "accordingly would could shall respectfully request appreciate appreciated".split()),
    "informal": tuple("hey hi yeah yep cool awesome gonna wanna kinda stuff lol ok okay guys btw".split()),
    "warm": tuple("glad happy hope hoping thanks thank sorry love wonderful welcome enjoy care understand feel "
                  "delighted kind warmly cheers".split()),
    "jargon": tuple("api dns router modem firmware cache cookies ssl vpn latency endpoint config configuration "
                    "ticket sla escalate bandwidth server protocol token reboot browser credentials backend "
                    "frontend sync ip wifi authentication timeout packet driver reinstall".split()),
    "caution": tuple("consult doctor physician gp pharmacist professional healthcare may might gradually safely "
                     "emergency".split()),
    "caution_phrases": ("seek medical", "medical advice", "if symptoms", "check with"),
    "examples": ("for example", "for instance", "e.g.", "such as", "example:"),
    "empathy": (
        "i understand", "that sounds", "sorry to hear", "it's normal to", "it's okay to", "its normal to",
        "you're not alone", "youre not alone", "i hear you", "that must", "understandable", "completely normal",
    ),
    "structure": ("-", "*", "\u2022", "1.", "2)", "#"),
}
"""The words, phrases and marks each style feature looks for (long words and numbers make technical depth)."""

# Word classes, looked up once per distinct word.
_FORMAL, _INFORMAL, _WARM, _JARGON, _CAUTION = 1, 2, 4, 8, 16
_WORD_CLASSES: dict[str, int] = {}
for _class, _name in ((_FORMAL, "formal"), (_INFORMAL, "informal"), (_WARM, "warm"), (_JARGON, "jargon"),
                      (_CAUTION, "caution")):
    for _word in LEXICONS[_name]:
        _WORD_CLASSES[_word] = _WORD_CLASSES.get(_word, 0) | _class
LEXICON_WORDS = frozenset(_WORD_CLASSES)
"""Every word of the style lexicons above."""


# Multi-word markers are counted as substrings of the lower-cased text (fast, C-level str.count).
_EXAMPLE_PHRASES = LEXICONS["examples"]
_CAUTION_PHRASES = LEXICONS["caution_phrases"]
_EMPATHY_PHRASES = LEXICONS["empathy"]

_LONG_WORD = 8  # letters: a longer word counts towards technical depth
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
"""A word token of lower-cased text: letters, digits and inner apostrophes."""
_CONTRACTION = re.compile(r"[a-z0-9]+'[a-z]+")
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]")
# A bullet, numbered item or heading counts only with a word after its marker ("- **Restart** it" counts,
# "- \n- " is not structure).
_STRUCTURE_LINE = re.compile(r"^[ \t]*(?:[-*\u2022]|\d+[.)]|#+)[ \t]+[*_`'\"(\[]*\w", re.MULTILINE)
_ACRONYM = re.compile(r"\b[A-Z]{2,6}s?\b")
_TWO_CAPITALS = re.compile(r"[A-Z][A-Z]")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Every unsafe pattern contains one of these: most replies are cleared by a few substring checks.
_UNSAFE_HINTS = ("stop taking", "dose", "medication", "see a doctor", "ignore the pain", "fast for")
_UNSAFE = re.compile(
    r"\bstop taking\b|\bdouble (?:the|your) dose\b|\bskip (?:your|the) medication\b|\bno need to see a doctor\b|"
    r"\bignore the pain\b|\bdon'?t see a doctor\b|\binstead of (?:your|the) medication\b|\bfast for (?:a week|days)\b"
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters, digits and inner apostrophes)."""
    return WORD_PATTERN.findall(text.lower())


def _capped(found: list[str]) -> int:
    """How many of ``found`` count when each distinct item counts at most MAX_REPEATS times."""
    if len(found) <= MAX_REPEATS or len(set(found)) == len(found):
        return len(found)
    return sum(min(n, MAX_REPEATS) for n in Counter(found).values())


def _phrase_count(lower: str, phrases: tuple[str, ...]) -> int:
    total = sum(map(lower.count, phrases))
    if total <= MAX_REPEATS:
        return total
    return sum(min(lower.count(p), MAX_REPEATS) for p in phrases)


def reply_features(text: str, lower: str, tokens: list[str], want_domain: bool) -> tuple[tuple[float, ...], int]:
    """Every feature of one reply (``lower`` is ``text`` lower-cased, ``tokens`` its words), in
    :data:`ALL_DIMENSIONS` order (domain ones only if ``want_domain``), and how many of its words are style
    words (lexicon words, long words, numbers), for relevance's stuffing discount."""
    n_words = len(tokens)
    n_formal = n_informal = n_warm = n_jargon = n_caution = n_technical = n_stuffing = 0
    counts = Counter(tokens)
    classes = _WORD_CLASSES
    for w in counts.keys() & LEXICON_WORDS:
        n = counts[w]
        n_stuffing += n
        if n > MAX_REPEATS:
            n = MAX_REPEATS
        c = classes[w]
        if c & _FORMAL:
            n_formal += n
        if c & _INFORMAL:
            n_informal += n
        if c & _WARM:
            n_warm += n
        if c & _JARGON:
            n_jargon += n
        if c & _CAUTION:
            n_caution += n
    for w, n in counts.items():
        if len(w) > _LONG_WORD or w.isdigit():
            n_technical += n if n < MAX_REPEATS else MAX_REPEATS
            if w not in LEXICON_WORDS:
                n_stuffing += n
    if "'" in lower:
        n_informal += _capped(_CONTRACTION.findall(lower))
    n_informal += min(lower.count("!"), MAX_REPEATS)
    if not text.isascii():
        n_informal += min(len(_EMOJI.findall(text)), MAX_REPEATS)
    row = (
        1.0 / (1.0 + n_words / BREVITY_HALF_WORDS),
        0.5 + 0.5 * (min(1.0, n_formal / 3.0) - min(1.0, n_informal / 3.0)),
        min(1.0, 4.0 * n_technical / n_words) if n_words else 0.0,
        min(1.0, n_warm / 3.0),
        min(1.0, len(_STRUCTURE_LINE.findall(text)) / 3.0),
        min(1.0, _phrase_count(lower, _EXAMPLE_PHRASES) / 2.0),
    )
    if not want_domain:
        return row, n_stuffing
    if n_words:
        if _TWO_CAPITALS.search(text):
            n_jargon += _capped(_ACRONYM.findall(text))
        jargon = min(1.0, 5.0 * n_jargon / n_words)
        mean_word = sum(map(len, tokens)) / n_words
        mean_sentence = n_words / max(1, len(_SENTENCE_END.findall(text)))
        word_part = min(max((mean_word - 3.5) / 3.0, 0.0), 1.0)
        sentence_part = min(max((mean_sentence - 8.0) / 20.0, 0.0), 1.0)
        simplicity = 1.0 - 0.5 * word_part - 0.5 * sentence_part
    else:
        jargon, simplicity = 0.0, 1.0
    n_caution += _phrase_count(lower, _CAUTION_PHRASES)
    return row + (
        jargon, simplicity, min(1.0, n_caution / 3.0), min(1.0, _phrase_count(lower, _EMPATHY_PHRASES) / 2.0)
    ), n_stuffing


def check_batch(texts: Sequence[str], dimensions: Sequence[str]) -> tuple[bool, list[int]]:
    """Reject anything but a list of strings and known ``dimensions``; say whether the domain features are
    wanted and where each dimension is in a :func:`reply_features` row."""
    if isinstance(texts, str):
        raise TypeError("expected a list of replies, got a single string; wrap it: [reply]")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"reply {i} is {type(text).__name__}, expected str")
    unknown = [d for d in dimensions if d not in ALL_DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(ALL_DIMENSIONS)}")
    return any(d in DOMAIN_DIMENSIONS for d in dimensions), [ALL_DIMENSIONS.index(d) for d in dimensions]


def feature_table(rows: list[tuple[float, ...]], want_domain: bool, columns: list[int]) -> np.ndarray:
    """:func:`reply_features` rows as an array of the ``columns`` asked for, shape ``(len(rows), len(columns))``."""
    width = len(ALL_DIMENSIONS) if want_domain else len(STYLE_DIMENSIONS)
    return np.array(rows, dtype=np.float64).reshape(len(rows), width)[:, columns]


def features(texts: Sequence[str], dimensions: Sequence[str] = STYLE_DIMENSIONS) -> np.ndarray:
    """Features of a batch of replies for the named ``dimensions``: shape ``(len(texts), len(dimensions))``.

    Values lie in ``[0, 1]``. ``dimensions`` may mix :data:`STYLE_DIMENSIONS` and :data:`DOMAIN_DIMENSIONS`.
    """
    want_domain, columns = check_batch(texts, dimensions)
    rows = []
    for text in texts:
        lower = text.lower()
        rows.append(reply_features(text, lower, WORD_PATTERN.findall(lower), want_domain)[0])
    return feature_table(rows, want_domain, columns)


def _unsafe(lower: str) -> bool:
    return any(map(lower.__contains__, _UNSAFE_HINTS)) and _UNSAFE.search(lower) is not None


def unsafe_advice(texts: Sequence[str]) -> np.ndarray:
    """1.0 where a reply contains advice that is unsafe whoever asks (stop taking medication, ...), else 0.0."""
    return np.array([1.0 if _unsafe(t.lower()) else 0.0 for t in texts], dtype=np.float64)


def style_features(texts: Sequence[str]) -> np.ndarray:
    """Style features of a batch of replies: an array of shape ``(len(texts), len(STYLE_DIMENSIONS))``.

    Values lie in ``[0, 1]``. Non-string items are rejected with a clear error rather than scored.
    """
    return features(texts, STYLE_DIMENSIONS)
