"""Interpretable style features of a reply, computed from cheap deterministic text statistics.

Every simulated user scores replies along the same named style dimensions. A feature is a number in
``[0, 1]`` that says how much of a style a reply has (``brevity`` 1.0 = a one-word reply). Users differ
only in how much they want of each style (their hidden ``preference_weights``), so a researcher can
read a user's utility term by term.

The extractors are pure functions of the text: the same reply always gets the same features, with no
model and no randomness, so that rewards are reproducible and the user is never the bottleneck.

They are built not to be gamed by stuffing: a word of a style lexicon counts at most twice however often
it is repeated (:data:`MAX_REPEATS`), every lexicon feature saturates after a few distinct words, and
bullets count only with something after the marker. :func:`analyse` also gives **task relevance**: the
task's keywords found in the reply's *own sentences* (not in runs copied from the user's message, not in
bare word lists or run-on lines), with some substance of its own, discounted by the share of the reply
that is copied, repeated, padding, or style words stuffed in; see :func:`keyword_relevance`.

>>> from envs.features import style_features, STYLE_DIMENSIONS
>>> f = style_features(["Dear team, please find the summary below."])
>>> dict(zip(STYLE_DIMENSIONS, f[0].round(3).tolist()))["formality"]
0.833
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
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
_LEXICON_WORDS = frozenset(_WORD_CLASSES)


# Multi-word markers are counted as substrings of the lower-cased text (fast, C-level str.count).
_EXAMPLE_PHRASES = LEXICONS["examples"]
_CAUTION_PHRASES = LEXICONS["caution_phrases"]
_EMPATHY_PHRASES = LEXICONS["empathy"]

# Words that carry grammar rather than content or style: a word list without any of them is not a sentence.
_FUNCTION_WORDS = frozenset(
    "the a an and or but if so to of in on at by for from with about as into than then that this these those "
    "it its it's is are was were be been being am do does did have has had will can not no you your yours i me "
    "my we us our they them their he she him her his there here what which who when where how why all any each "
    "some more most just also only very too up out over after before because while until again".split()
) - _LEXICON_WORDS

_LONG_WORD = 8  # letters: a longer word counts towards technical depth
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CONTRACTION = re.compile(r"[a-z0-9]+'[a-z]+")
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]")
# A bullet, numbered item or heading counts only with a word after its marker ("- **Restart** it" counts,
# "- \n- " is not structure).
_STRUCTURE_LINE = re.compile(r"^[ \t]*(?:[-*\u2022]|\d+[.)]|#+)[ \t]+[*_`'\"(\[]*\w", re.MULTILINE)
_ACRONYM = re.compile(r"\b[A-Z]{2,6}s?\b")
_TWO_CAPITALS = re.compile(r"[A-Z][A-Z]")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Sentences (for relevance) end at '.', '!', '?' and line breaks.
_SENTENCE_BREAKS = str.maketrans({".": "\n", "!": "\n", "?": "\n"})
# Every unsafe pattern contains one of these: most replies are cleared by a few substring checks.
_UNSAFE_HINTS = ("stop taking", "dose", "medication", "see a doctor", "ignore the pain", "fast for")
_UNSAFE = re.compile(
    r"\bstop taking\b|\bdouble (?:the|your) dose\b|\bskip (?:your|the) medication\b|\bno need to see a doctor\b|"
    r"\bignore the pain\b|\bdon'?t see a doctor\b|\binstead of (?:your|the) medication\b|\bfast for (?:a week|days)\b"
)
# Restating a request swaps its pronouns and determiners ("my landlord" -> "your landlord", "a project" ->
# "your project"): for copy detection the words of a group match each other, so the copy still counts.
_COPY_GROUPS: dict[str, tuple[str, ...]] = {
    w: group for group in (("you", "i", "me"), ("a", "an", "the", "your", "my", "our"), ("yours", "mine"),
                           ("are", "am")) for w in group
}
_CANONICAL: dict[str, str] = {w: group[0] for w, group in _COPY_GROUPS.items()}


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters, digits and inner apostrophes)."""
    return _WORD.findall(text.lower())


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


def _analyse(text: str, lower: str, tokens: list[str], want_domain: bool) -> tuple[tuple[float, ...], float]:
    """Every feature of one reply, in :data:`ALL_DIMENSIONS` order (domain ones only if ``want_domain``), and
    how natural its share of style words is (1.0, down to 0.0 for a reply made of style words)."""
    n_words = len(tokens)
    n_formal = n_informal = n_warm = n_jargon = n_caution = n_technical = n_stuffing = 0
    counts = Counter(tokens)
    classes = _WORD_CLASSES
    for w in counts.keys() & _LEXICON_WORDS:
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
            if w not in _LEXICON_WORDS:
                n_stuffing += n
    # Past a natural share of style words the reply reads as a word list, not an answer (see STUFFED_SHARE).
    natural = 1.0
    if n_stuffing > FREE_STYLE_WORDS:
        low, high = STUFFED_SHARE
        natural = min(1.0, max(0.0, (high - (n_stuffing - FREE_STYLE_WORDS) / n_words) / (high - low)))
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
        return row, natural
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
    ), natural


def _copy_word(word: str) -> str:
    """A regex for ``word`` that also matches its swaps (my -> your, a -> the)."""
    group = _COPY_GROUPS.get(word)
    return f"(?:{'|'.join(group)})" if group else re.escape(word)


@functools.lru_cache(maxsize=8192)
def _request_ngrams(request: str) -> tuple[re.Pattern[str] | None, frozenset[tuple[str, ...]]]:
    """What a reply can copy from a user's message, pronouns and articles made alike ("my" ~ "your"):
    a pattern finding any of its COPY_NGRAM-word runs in a reply's words joined by spaces, and the
    message's shorter runs (canonical words)."""
    tokens = _WORD.findall(request.lower())
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


def _relevance(sentences: list[list[str]], tokens: list[str], keywords: frozenset[str], request: str | None) -> float:
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
    substance = min(1.0, len(own.difference(keywords, _FUNCTION_WORDS, _LEXICON_WORDS)) / SUBSTANCE_WORDS)
    framing = min(1.0, n_prose / (PROSE_SHARE * n))
    return coverage * substance * framing * copied_share * repeated


def _check_batch(texts: Sequence[str], dimensions: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of replies, got a single string; wrap it: [reply]")
    unknown = [d for d in dimensions if d not in ALL_DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(ALL_DIMENSIONS)}")


def analyse(
    texts: Sequence[str],
    dimensions: Sequence[str],
    keywords: Sequence[Iterable[str]] | None = None,
    requests: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features for ``dimensions`` and, given ``keywords``, task relevance, tokenizing each reply once.

    ``requests[i]``, when given, is the user's message that ``texts[i]`` answers: spans copied from it
    earn no relevance (see :func:`keyword_relevance`). Returns ``(features, relevance)`` with shapes
    ``(n, len(dimensions))`` and ``(n,)`` (or ``None``).
    """
    _check_batch(texts, dimensions)
    if keywords is not None and len(keywords) != len(texts):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    if requests is not None and len(requests) != len(texts):
        raise ValueError(f"got {len(texts)} replies but {len(requests)} requests")
    want_domain = any(d in DOMAIN_DIMENSIONS for d in dimensions)
    columns = [ALL_DIMENSIONS.index(d) for d in dimensions]
    rows: list[tuple[float, ...]] = []
    relevance = np.empty(len(texts), dtype=np.float64) if keywords is not None else None
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"reply {row} is {type(text).__name__}, expected str")
        lower = text.lower()
        if relevance is None:
            rows.append(_analyse(text, lower, _WORD.findall(lower), want_domain)[0])
            continue
        sentences = list(map(_WORD.findall, lower.translate(_SENTENCE_BREAKS).split("\n")))
        tokens = list(itertools.chain.from_iterable(sentences))
        values, natural = _analyse(text, lower, tokens, want_domain)
        rows.append(values)
        task_keywords = keywords[row]  # type: ignore[index]
        if not isinstance(task_keywords, frozenset):
            task_keywords = frozenset(task_keywords)
        request = None if requests is None else requests[row]
        relevance[row] = natural * _relevance(sentences, tokens, task_keywords, request) if natural else 0.0
    width = len(ALL_DIMENSIONS) if want_domain else len(STYLE_DIMENSIONS)
    out = np.array(rows, dtype=np.float64).reshape(len(texts), width)[:, columns]
    return out, relevance


def features(texts: Sequence[str], dimensions: Sequence[str] = STYLE_DIMENSIONS) -> np.ndarray:
    """Features of a batch of replies for the named ``dimensions``: shape ``(len(texts), len(dimensions))``.

    Values lie in ``[0, 1]``. ``dimensions`` may mix :data:`STYLE_DIMENSIONS` and :data:`DOMAIN_DIMENSIONS`.
    """
    return analyse(texts, dimensions)[0]


def _unsafe(lower: str) -> bool:
    return any(map(lower.__contains__, _UNSAFE_HINTS)) and _UNSAFE.search(lower) is not None


def unsafe_advice(texts: Sequence[str]) -> np.ndarray:
    """1.0 where a reply contains advice that is unsafe whoever asks (stop taking medication, ...), else 0.0."""
    return np.array([1.0 if _unsafe(t.lower()) else 0.0 for t in texts], dtype=np.float64)


def style_features(texts: Sequence[str]) -> np.ndarray:
    """Style features of a batch of replies: an array of shape ``(len(texts), len(STYLE_DIMENSIONS))``.

    Values lie in ``[0, 1]``. Non-string items are rejected with a clear error rather than scored.
    """
    return analyse(texts, STYLE_DIMENSIONS)[0]


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
    if len(texts) != len(keywords):
        raise ValueError(f"got {len(texts)} replies but {len(keywords)} keyword sets")
    return analyse(texts, (), keywords, requests)[1]
