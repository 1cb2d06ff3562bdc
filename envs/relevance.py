"""Task relevance: whether a reply answers its task in its own words, the term of a user's utility that
gates every style preference (see :class:`envs.users.SimulatedUser`).

A reply earns relevance with the task's keywords in its *own sentences* (not in runs copied from the user's
message, not in bare word lists or run-on lines) and some substance of its own, discounted by the share of
the reply that is copied, repeated, padding, or style words stuffed in; see :func:`keyword_relevance`.
Relevance reads the same tokens as the style features of :mod:`envs.features`, so
:func:`features_and_relevance` scores both in one pass over a batch: the simulated users call it for every
reply they score.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np

from envs.features import LEXICON_WORDS, WORD_PATTERN, check_batch, feature_table, reply_features

FREE_STYLE_WORDS = 4
STUFFED_SHARE = (0.25, 0.5)
"""Style words (lexicon words, long words, numbers) beyond the first FREE_STYLE_WORDS, as a share of the
reply's words: up to the first value relevance is untouched; from there it fades, to nothing at the
second. A reply made mostly of style words is a word list, not an answer, whatever its features say."""
SUBSTANCE_WORDS = 6
"""Distinct content words (not task keywords, function or style words) the reply's own sentences need for
full relevance: naming the task's keywords in an empty frame ("Here is your answer about X and Y") is not an
answer."""
PROSE_SHARE = 0.5
"""Share of the reply's words that must stand in its own sentences for full relevance: an answer padded
with word lists, fragments or run-on lines loses relevance in proportion."""
COPY_NGRAM = 4
"""A run of this many words (or more) shared with the user's message counts as copied from it."""
SENTENCE_WORDS = (3, 60)
"""A sentence of the reply's own has this many words (inclusive): fewer is a fragment, more a run-on line."""

# Words that carry grammar rather than content or style: a word list without any of them is not a sentence.
_FUNCTION_WORDS = frozenset(
    "the a an and or but if so to of in on at by for from with about as into than then that this these those "
    "it its it's is are was were be been being am do does did have has had will can not no you your yours i me "
    "my we us our they them their he she him her his there here what which who when where how why all any each "
    "some more most just also only very too up out over after before because while until again".split()
) - LEXICON_WORDS

# Sentences (for relevance) end at '.', '!', '?' and line breaks.
_SENTENCE_BREAKS = str.maketrans({".": "\n", "!": "\n", "?": "\n"})

# Restating a request swaps its pronouns and determiners ("my landlord" -> "your landlord", "a project" ->
# "your project"): for copy detection the words of a group match each other, so the copy still counts.
_COPY_GROUPS: dict[str, tuple[str, ...]] = {
    w: group for group in (("you", "i", "me"), ("a", "an", "the", "your", "my", "our"), ("yours", "mine"),
                           ("are", "am")) for w in group
}
_CANONICAL: dict[str, str] = {w: group[0] for w, group in _COPY_GROUPS.items()}


def _natural(n_style_words: int, n_words: int) -> float:
    """1.0, fading to 0.0 as style words past the first FREE_STYLE_WORDS go from one share of the reply's
    words to the other (:data:`STUFFED_SHARE`): past that the reply reads as a word list, not an answer."""
    if n_style_words <= FREE_STYLE_WORDS:
        return 1.0
    low, high = STUFFED_SHARE
    return min(1.0, max(0.0, (high - (n_style_words - FREE_STYLE_WORDS) / n_words) / (high - low)))


def _copy_word(word: str) -> str:
    """A regex for ``word`` that also matches its swaps (my -> your, a -> the)."""
    group = _COPY_GROUPS.get(word)
    return f"(?:{'|'.join(group)})" if group else re.escape(word)


@functools.lru_cache(maxsize=8192)
def _request_ngrams(request: str) -> tuple[re.Pattern[str] | None, frozenset[tuple[str, ...]]]:
    """What a reply can copy from a user's message, pronouns and articles made alike ("my" ~ "your"):
    a pattern finding any of its COPY_NGRAM-word runs in a reply's words joined by spaces, and the
    message's shorter runs (canonical words)."""
    tokens = WORD_PATTERN.findall(request.lower())
    runs = {" " + " ".join(map(_copy_word, tokens[i:i + COPY_NGRAM])) + " "
            for i in range(len(tokens) - COPY_NGRAM + 1)}
    canonical = [_CANONICAL.get(w, w) for w in tokens]
    short = {tuple(canonical[i:i + n]) for n in range(1, COPY_NGRAM) for i in range(len(canonical) - n + 1)}
    pattern = re.compile("|".join(sorted(runs))) if runs else None
    return pattern, frozenset(short)


def _copied_words(tokens: list[str], request: str) -> set[int]:
    """Positions of the reply's words inside runs of COPY_NGRAM or more words shared with ``request``."""
    pattern, short = _request_ngrams(request)
    n = len(tokens)
    if n < COPY_NGRAM:
        return set(range(n)) if tuple(map(_CANONICAL.get, tokens, tokens)) in short else set()
    if pattern is None or pattern.search(" " + " ".join(tokens) + " ") is None:
        return set()
    copied: set[int] = set()
    for i in range(n - COPY_NGRAM + 1):  # rare: the reply copies; mark every word of each copied run
        if pattern.fullmatch(" " + " ".join(tokens[i:i + COPY_NGRAM]) + " "):
            copied.update(range(i, i + COPY_NGRAM))
    return copied


def _sentence_relevance(sentences: list[list[str]], tokens: list[str], keywords: frozenset[str], request: str | None) -> float:
    """coverage x substance x framing x (1 - share copied from the request) x (1 - share in repeated
    sentences); see :func:`keyword_relevance`."""
    n = len(tokens)
    if n == 0:
        return 0.0 if keywords else 1.0
    shortest, longest = SENTENCE_WORDS
    prose: list[tuple[int, list[str]]] = []  # the reply's own sentences: (first word's position, words)
    on_topic = False
    seen: set[tuple[str, ...]] = set()
    n_repeated = n_prose = start = 0
    for sentence in sentences:
        m = len(sentence)
        if m > 1:
            key = tuple(sentence)
            if key in seen:
                n_repeated += m  # a sentence said again adds nothing
                start += m
                continue
            seen.add(key)
        if keywords and shortest <= m <= longest and not _FUNCTION_WORDS.isdisjoint(sentence):
            hits = len(keywords.intersection(sentence))
            if 2 * hits <= m:  # a sentence that is mostly task keywords is a keyword list, not an answer
                prose.append((start, sentence))
                n_prose += m
                on_topic = on_topic or hits > 0
        start += m
    repeated = 1.0 - n_repeated / n
    copied = _copied_words(tokens, request) if request is not None and (on_topic or not keywords) else None
    copied_share = 1.0 - len(copied) / n if copied else 1.0
    if not keywords:
        return copied_share * repeated
    if not on_topic:
        return 0.0
    if copied:  # words inside copied runs are not the reply's own
        prose = [(i, [w for j, w in enumerate(s, i) if j not in copied]) for i, s in prose]
    own = set().union(*(s for _, s in prose))
    coverage = min(1.0, len(keywords.intersection(own)) / min(3, len(keywords)))
    substance = min(1.0, len(own.difference(keywords, _FUNCTION_WORDS, LEXICON_WORDS)) / SUBSTANCE_WORDS)
    framing = min(1.0, n_prose / (PROSE_SHARE * n))
    return coverage * substance * framing * copied_share * repeated


def features_and_relevance(
    texts: Sequence[str],
    dimensions: Sequence[str],
    keywords: Sequence[Iterable[str]],
    requests: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features for ``dimensions`` (as :func:`envs.features.features`) and task relevance (as
    :func:`keyword_relevance`) of a batch of replies, tokenizing each reply once.

    ``requests[i]``, when given, is the user's message that ``texts[i]`` answers: spans copied from it
    earn no relevance. Returns ``(features, relevance)`` with shapes ``(n, len(dimensions))`` and ``(n,)``.
    """
    want_domain, columns = check_batch(texts, dimensions)
    if len(keywords) != len(texts):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    if requests is not None and len(requests) != len(texts):
        raise ValueError(f"got {len(texts)} replies but {len(requests)} requests")
    rows: list[tuple[float, ...]] = []
    relevance = np.empty(len(texts), dtype=np.float64)
    for row, text in enumerate(texts):
        lower = text.lower()
        sentences = list(map(WORD_PATTERN.findall, lower.translate(_SENTENCE_BREAKS).split("\n")))
        tokens = list(itertools.chain.from_iterable(sentences))
        values, n_style_words = reply_features(text, lower, tokens, want_domain)
        rows.append(values)
        natural = _natural(n_style_words, len(tokens))
        task_keywords = keywords[row]
        if not isinstance(task_keywords, frozenset):
            task_keywords = frozenset(task_keywords)
        request = None if requests is None else requests[row]
        relevance[row] = natural * _sentence_relevance(sentences, tokens, task_keywords, request) if natural else 0.0
    return feature_table(rows, want_domain, columns), relevance


def keyword_relevance(
    texts: Sequence[str], keywords: Sequence[Iterable[str]], requests: Sequence[str | None] | None = None
) -> np.ndarray:
    """How well each reply answers its task in its own words, in ``[0, 1]``: the product of

    - ``coverage``: distinct task keywords (``keywords[i]``, lower case) in the reply's own sentences, over
      ``min(3, #keywords)``, capped at 1. An own sentence has 3 to 60 words (:data:`SENTENCE_WORDS`; they
      end at '.', '!', '?' or a line break), at least one function word (the, to, is, you, ...) and at
      most half task keywords, and is not a repeat of an earlier one: bare keyword lists, one-word bullets
      and run-on lines earn nothing. Words inside a run copied from the request do not count.
    - ``substance``: distinct content words of its own in those sentences (not keywords, function or
      style words) over :data:`SUBSTANCE_WORDS`, capped at 1: "Here is your answer about X and Y" is not
      an answer.
    - ``framing``: the share of the reply's words in its own sentences, over :data:`PROSE_SHARE`, capped
      at 1: an answer padded with word lists or fragments loses in proportion.
    - ``1 - copied share``: the share of the reply's words inside runs of :data:`COPY_NGRAM` or more words
      shared with the user's message ``requests[i]`` (pronouns and determiners may differ: "my" ~ "your",
      "a" ~ "your"); a reply shorter than that counts as copied when it is a piece of the message.
    - ``1 - repeated share``: the share of the reply's words in sentences that repeat an earlier one.
    - ``natural``: 1, fading to 0 as style words (lexicon words, long words, numbers) beyond the first
      :data:`FREE_STYLE_WORDS` go from 25 % to 50 % of the reply (:data:`STUFFED_SHARE`).

    A task without keywords has coverage, substance and framing 1 (every reply is on its topic).
    So echoing the request ("Sure, here is a note to your landlord about a broken heater") scores 0, as
    do the request's keywords as a list; restating the request before a real answer costs its share.

    >>> request = "Write a note to my landlord about a broken heater."
    >>> keywords = ("note", "landlord", "heater", "broken", "repair")
    >>> keyword_relevance(["Sure, here is a note to your landlord about a broken heater.",
    ...                    "The heater in the flat has been broken since Monday, so please send someone today "
    ...                    "for a repair."], [keywords] * 2, [request] * 2).tolist()
    [0.0, 1.0]
    """
    return features_and_relevance(texts, (), keywords, requests)[1]
