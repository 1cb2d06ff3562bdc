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
"""The named preference dimensions, in the column order of :func:`style_features`."""

DIMENSION_HELP: dict[str, str] = {
    "brevity": "short replies; 1 / (1 + words / 30): 0 words -> 1.0, 30 words -> 0.5, 90 words -> 0.25",
    "formality": "formal markers (dear, please, regards, therefore, ...) over informal ones "
    "(contractions, '!', hey, cool, emoji): (formal + 1) / (formal + informal + 2)",
    "technical_depth": "share of long words (>= 9 letters) and numbers, times 4, capped at 1",
    "warmth": "warm, personal words (glad, hope, thanks, sorry, happy, ...): count / 3, capped at 1",
    "structure": "lines that are bullets, numbered items or headings: count / 3, capped at 1",
    "examples": "example markers (for example, e.g., for instance, such as): count / 2, capped at 1",
}
"""One line per dimension: what raises the feature. Shown in docs and critiques."""

BREVITY_HALF_WORDS = 30.0

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_FORMAL = re.compile(
    r"\b(?:dear|please|kindly|regards|sincerely|therefore|however|furthermore|moreover|"
    r"consequently|accordingly|would|could|shall|respectfully|request|appreciated?)\b"
)
_INFORMAL = re.compile(
    r"[a-z]'[a-z]|!|\b(?:hey|hi|yeah|yep|cool|awesome|gonna|wanna|kinda|stuff|lol|ok|okay|guys|btw)\b"
    r"|[\U0001F300-\U0001FAFF\u2600-\u27BF]"
)
_WARM = re.compile(
    r"\b(?:glad|happy|hope|hoping|thanks|thank|sorry|love|wonderful|welcome|enjoy|care|"
    r"understand|feel|delighted|kind|warmly|cheers)\b"
)
_STRUCTURE_LINE = re.compile(r"^[ \t]*(?:[-*\u2022]\s|\d+[.)]\s|#+\s)", re.MULTILINE)
_EXAMPLE = re.compile(r"\bfor example\b|\bfor instance\b|\be\.g\.|\bsuch as\b|\bexample:")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters, digits and inner apostrophes)."""
    return _WORD.findall(text.lower())


def _one(text: str) -> tuple[float, float, float, float, float, float]:
    lower = text.lower()
    tokens = _WORD.findall(lower)
    n_words = len(tokens)
    brevity = 1.0 / (1.0 + n_words / BREVITY_HALF_WORDS)
    n_formal = len(_FORMAL.findall(lower))
    n_informal = len(_INFORMAL.findall(lower))
    formality = (n_formal + 1.0) / (n_formal + n_informal + 2.0)
    if n_words:
        n_technical = sum(1 for w in tokens if len(w) >= 9 or w.isdigit())
        technical = min(1.0, 4.0 * n_technical / n_words)
    else:
        technical = 0.0
    warmth = min(1.0, len(_WARM.findall(lower)) / 3.0)
    structure = min(1.0, len(_STRUCTURE_LINE.findall(text)) / 3.0)
    examples = min(1.0, len(_EXAMPLE.findall(lower)) / 2.0)
    return brevity, formality, technical, warmth, structure, examples


def style_features(texts: Sequence[str]) -> np.ndarray:
    """Style features of a batch of replies: an array of shape ``(len(texts), len(STYLE_DIMENSIONS))``.

    Values lie in ``[0, 1]``. Non-string items are rejected with a clear error rather than scored.
    """
    if isinstance(texts, str):
        raise TypeError("style_features expects a list of replies, got a single string; wrap it: [reply]")
    out = np.empty((len(texts), len(STYLE_DIMENSIONS)), dtype=np.float64)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"reply {i} is {type(text).__name__}, expected str")
        out[i] = _one(text)
    return out


def keyword_relevance(texts: Sequence[str], keywords: Sequence[Iterable[str]]) -> np.ndarray:
    """How well each reply stays on its task: distinct task keywords it mentions, over min(3, #keywords).

    ``keywords[i]`` are the lower-case keywords of the task that ``texts[i]`` answers. Returns values in
    ``[0, 1]``; a task without keywords counts every reply as relevant.
    """
    if len(texts) != len(keywords):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    out = np.empty(len(texts), dtype=np.float64)
    for i, (text, task_keywords) in enumerate(zip(texts, keywords)):
        task_keywords = set(task_keywords)
        if not task_keywords:
            out[i] = 1.0
            continue
        present = task_keywords.intersection(words(text))
        out[i] = min(1.0, len(present) / min(3, len(task_keywords)))
    return out
