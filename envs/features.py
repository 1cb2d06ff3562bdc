"""Interpretable style features of a reply, computed from cheap deterministic text statistics.

Every simulated user scores replies along the same named style dimensions. A feature is a number in
``[0, 1]`` that says how much of a style a reply has (``brevity`` 1.0 = a one-word reply). Users differ
only in how much they want of each style (their hidden ``preference_weights``), so a researcher can
read a user's utility term by term.

The extractors are pure functions of the text: the same reply always gets the same features, with no
model and no randomness, so that rewards are reproducible and the user is never the bottleneck.

>>> from envs.features import style_features, STYLE_DIMENSIONS
>>> f = style_features(["Dear team, please find the summary below."])
>>> dict(zip(STYLE_DIMENSIONS, f[0].round(3).tolist()))["formality"]
0.75
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

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
    "formality": "formal markers (dear, please, regards, therefore, ...) over informal ones "
    "(contractions, '!', hey, cool, emoji): (formal + 1) / (formal + informal + 2)",
    "technical_depth": "share of long words (>= 9 letters) and numbers, times 4, capped at 1",
    "warmth": "warm, personal words (glad, hope, thanks, sorry, happy, ...): count / 3, capped at 1",
    "structure": "lines that are bullets, numbered items or headings: count / 3, capped at 1",
    "examples": "example markers (for example, e.g., for instance, such as): count / 2, capped at 1",
    "jargon": "share of support jargon (router, firmware, cache, DNS, ...) and ALL-CAPS acronyms, times 5, capped at 1",
    "simplicity": "plain language: short words and short sentences (1.0 = words <= 3.5 letters, sentences <= 8 words)",
    "caution": "hedges and safety advice (consult, doctor, may, seek medical help, ...): count / 3, capped at 1",
    "empathy": "acknowledging feelings (I understand, that sounds hard, sorry to hear, ...): count / 2, capped at 1",
}
"""One line per dimension: what raises the feature. Shown in docs and critiques."""

BREVITY_HALF_WORDS = 30.0

# Word classes, looked up once per token: one pass over the tokens gives every count.
_FORMAL, _INFORMAL, _WARM, _JARGON, _CAUTION = 1, 2, 4, 8, 16
_WORD_CLASSES: dict[str, int] = {}
for _class, _words in (
    (_FORMAL, "dear please kindly regards sincerely therefore however furthermore moreover consequently "
              "accordingly would could shall respectfully request appreciate appreciated"),
    (_INFORMAL, "hey hi yeah yep cool awesome gonna wanna kinda stuff lol ok okay guys btw"),
    (_WARM, "glad happy hope hoping thanks thank sorry love wonderful welcome enjoy care understand feel "
            "delighted kind warmly cheers"),
    (_JARGON, "api dns router modem firmware cache cookies ssl vpn latency endpoint config configuration ticket "
              "sla escalate bandwidth server protocol token reboot browser credentials backend frontend sync ip "
              "wifi authentication timeout packet driver reinstall"),
    (_CAUTION, "consult doctor physician gp pharmacist professional healthcare may might gradually safely "
               "emergency"),
):
    for _word in _words.split():
        _WORD_CLASSES[_word] = _WORD_CLASSES.get(_word, 0) | _class

# Multi-word markers are counted as substrings of the lower-cased text (fast, C-level str.count).
_EXAMPLE_PHRASES = ("for example", "for instance", "e.g.", "such as", "example:")
_CAUTION_PHRASES = ("seek medical", "medical advice", "if symptoms", "check with")
_EMPATHY_PHRASES = (
    "i understand", "that sounds", "sorry to hear", "it's normal to", "it's okay to", "its normal to",
    "you're not alone", "youre not alone", "i hear you", "that must", "understandable", "completely normal",
)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]")
_STRUCTURE_LINE = re.compile(r"^[ \t]*(?:[-*\u2022]\s|\d+[.)]\s|#+\s)", re.MULTILINE)
_ACRONYM = re.compile(r"\b[A-Z]{2,6}s?\b")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_UNSAFE = re.compile(
    r"\bstop taking\b|\bdouble (?:the|your) dose\b|\bskip (?:your|the) medication\b|\bno need to see a doctor\b|"
    r"\bignore the pain\b|\bdon'?t see a doctor\b|\binstead of (?:your|the) medication\b|\bfast for (?:a week|days)\b"
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters, digits and inner apostrophes)."""
    return _WORD.findall(text.lower())


def _analyse(text: str, want_domain: bool) -> tuple[list[str], dict[str, float]]:
    """Tokens and every feature of one reply, from a single pass over its tokens."""
    lower = text.lower()
    tokens = _WORD.findall(lower)
    n_words = len(tokens)
    n_formal = n_informal = n_warm = n_jargon = n_caution = n_technical = 0
    classes = _WORD_CLASSES
    for w in tokens:
        c = classes.get(w)
        if c is not None:
            if c & _FORMAL:
                n_formal += 1
            if c & _INFORMAL:
                n_informal += 1
            if c & _WARM:
                n_warm += 1
            if c & _JARGON:
                n_jargon += 1
            if c & _CAUTION:
                n_caution += 1
        if "'" in w:
            n_informal += 1  # contractions
        if len(w) >= 9 or w.isdigit():
            n_technical += 1
    n_informal += lower.count("!")
    if not text.isascii():
        n_informal += len(_EMOJI.findall(text))
    values = {
        "brevity": 1.0 / (1.0 + n_words / BREVITY_HALF_WORDS),
        "formality": (n_formal + 1.0) / (n_formal + n_informal + 2.0),
        "technical_depth": min(1.0, 4.0 * n_technical / n_words) if n_words else 0.0,
        "warmth": min(1.0, n_warm / 3.0),
        "structure": min(1.0, len(_STRUCTURE_LINE.findall(text)) / 3.0),
        "examples": min(1.0, sum(lower.count(p) for p in _EXAMPLE_PHRASES) / 2.0),
    }
    if want_domain:
        if n_words:
            n_jargon += len(_ACRONYM.findall(text))
            values["jargon"] = min(1.0, 5.0 * n_jargon / n_words)
            mean_word = sum(len(w) for w in tokens) / n_words
            mean_sentence = n_words / max(1, len(_SENTENCE_END.findall(text)))
            word_part = min(max((mean_word - 3.5) / 3.0, 0.0), 1.0)
            sentence_part = min(max((mean_sentence - 8.0) / 20.0, 0.0), 1.0)
            values["simplicity"] = 1.0 - 0.5 * word_part - 0.5 * sentence_part
        else:
            values["jargon"], values["simplicity"] = 0.0, 1.0
        n_caution += sum(lower.count(p) for p in _CAUTION_PHRASES)
        values["caution"] = min(1.0, n_caution / 3.0)
        values["empathy"] = min(1.0, sum(lower.count(p) for p in _EMPATHY_PHRASES) / 2.0)
    return tokens, values


def _check_batch(texts: Sequence[str], dimensions: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of replies, got a single string; wrap it: [reply]")
    unknown = [d for d in dimensions if d not in ALL_DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(ALL_DIMENSIONS)}")


def analyse(
    texts: Sequence[str], dimensions: Sequence[str], keywords: Sequence[Iterable[str]] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features for ``dimensions`` and, given ``keywords``, task relevance, tokenizing each reply once.

    Returns ``(features, relevance)`` with shapes ``(n, len(dimensions))`` and ``(n,)`` (or ``None``).
    """
    _check_batch(texts, dimensions)
    if keywords is not None and len(keywords) != len(texts):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    want_domain = any(d in DOMAIN_DIMENSIONS for d in dimensions)
    out = np.empty((len(texts), len(dimensions)), dtype=np.float64)
    relevance = np.empty(len(texts), dtype=np.float64) if keywords is not None else None
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"reply {row} is {type(text).__name__}, expected str")
        tokens, values = _analyse(text, want_domain)
        out[row] = [values[d] for d in dimensions]
        if relevance is not None:
            relevance[row] = _relevance(tokens, keywords[row])
    return out, relevance


def _relevance(tokens: list[str], task_keywords: Iterable[str]) -> float:
    task_keywords = task_keywords if isinstance(task_keywords, (set, frozenset)) else set(task_keywords)
    if not task_keywords:
        return 1.0
    return min(1.0, len(task_keywords.intersection(tokens)) / min(3, len(task_keywords)))


def features(texts: Sequence[str], dimensions: Sequence[str] = STYLE_DIMENSIONS) -> np.ndarray:
    """Features of a batch of replies for the named ``dimensions``: shape ``(len(texts), len(dimensions))``.

    Values lie in ``[0, 1]``. ``dimensions`` may mix :data:`STYLE_DIMENSIONS` and :data:`DOMAIN_DIMENSIONS`.
    """
    return analyse(texts, dimensions)[0]


def unsafe_advice(texts: Sequence[str]) -> np.ndarray:
    """1.0 where a reply contains advice that is unsafe whoever asks (stop taking medication, ...), else 0.0."""
    return np.array([1.0 if _UNSAFE.search(t.lower()) else 0.0 for t in texts], dtype=np.float64)


def style_features(texts: Sequence[str]) -> np.ndarray:
    """Style features of a batch of replies: an array of shape ``(len(texts), len(STYLE_DIMENSIONS))``.

    Values lie in ``[0, 1]``. Non-string items are rejected with a clear error rather than scored.
    """
    return analyse(texts, STYLE_DIMENSIONS)[0]


def keyword_relevance(texts: Sequence[str], keywords: Sequence[Iterable[str]]) -> np.ndarray:
    """How well each reply stays on its task: distinct task keywords it mentions, over min(3, #keywords).

    ``keywords[i]`` are the lower-case keywords of the task that ``texts[i]`` answers. Returns values in
    ``[0, 1]``; a task without keywords counts every reply as relevant.
    """
    if len(texts) != len(keywords):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    return np.array([_relevance(words(t), k) for t, k in zip(texts, keywords)], dtype=np.float64)
