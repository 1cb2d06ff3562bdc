"""Rewards that read only the text of a completion and know nothing of the user."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envs.features import words


def completion_texts(completions: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> list[str]:
    """The assistant's text of each completion, whatever shape TRL hands over.

    Accepts plain strings and conversational completions (lists of ``{"role", "content"}`` messages).
    A multi-turn rollout passes ``assistant_replies`` (the model's own turns, without the user's
    messages in between); those are joined and used instead.
    """
    if kwargs and kwargs.get("assistant_replies") is not None:
        return ["\n\n".join(turns) for turns in kwargs["assistant_replies"]]
    texts = []
    for completion in completions:
        if isinstance(completion, str):
            texts.append(completion)
        elif isinstance(completion, list):
            texts.append("".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant"))
        else:
            raise TypeError(f"cannot read completion of type {type(completion).__name__}; expected str or messages")
    return texts


def length_target(
    prompts: Sequence[Any], completions: Sequence[Any], target_words: int = 40, **kwargs: Any
) -> list[float | None]:
    """``-|words - target_words| / target_words``: 0 at the target length, -1 for an empty reply.

    A user-agnostic baseline reward: it wants every reply to be the same length, whoever asks.
    """
    if target_words <= 0:
        raise ValueError(f"length_target: target_words must be > 0, got {target_words}")
    return [-abs(len(words(t)) - target_words) / target_words for t in completion_texts(completions, kwargs)]


def keyword_coverage(
    prompts: Sequence[Any], completions: Sequence[Any], keywords: Sequence[str] = (), **kwargs: Any
) -> list[float | None]:
    """Share of ``keywords`` (lower case) that the reply mentions: 0.0 to 1.0.

    A rule reward a practitioner might write for "stay on topic"; without ``keywords`` it uses the words
    of the request itself (the last user message of the prompt), minus words of three letters or fewer.
    """
    texts = completion_texts(completions, kwargs)
    out: list[float | None] = []
    for prompt, text in zip(prompts or [None] * len(texts), texts):
        wanted = {k.lower() for k in keywords} or {w for w in words(_last_user_text(prompt)) if len(w) > 3}
        out.append(len(wanted.intersection(words(text))) / len(wanted) if wanted else 0.0)
    return out


def _last_user_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), "")
    return ""


def _syllables(word: str) -> int:
    groups, previous = 0, False
    for char in word:
        vowel = char in "aeiouy"
        groups += vowel and not previous
        previous = vowel
    if word.endswith("e") and groups > 1:
        groups -= 1
    return max(groups, 1)


def readability(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Flesch reading ease scaled to [0, 1] (1 = very easy). Empty replies score 0.

    ``206.835 - 1.015 * words/sentences - 84.6 * syllables/words``, clipped to [0, 100], divided by 100;
    syllables are counted as vowel groups (a standard approximation).
    """
    out: list[float | None] = []
    for text in completion_texts(completions, kwargs):
        tokens = [w for w in words(text) if any(c.isalpha() for c in w)]
        if not tokens:
            out.append(0.0)
            continue
        sentences = max(1, sum(text.count(mark) for mark in ".!?"))
        syllables = sum(_syllables(w) for w in tokens)
        score = 206.835 - 1.015 * len(tokens) / sentences - 84.6 * syllables / len(tokens)
        out.append(min(max(score, 0.0), 100.0) / 100.0)
    return out


def structure(prompts: Sequence[Any], completions: Sequence[Any], target_items: int = 3, **kwargs: Any) -> list[float | None]:
    """Bulleted or numbered lines, up to ``target_items``: ``min(items, target) / target``.

    Deliberately hackable: three empty bullets score as well as a good list (useful in compare-rewards).
    """
    if target_items <= 0:
        raise ValueError(f"structure: target_items must be > 0, got {target_items}")
    out: list[float | None] = []
    for text in completion_texts(completions, kwargs):
        items = sum(1 for line in text.splitlines() if line.lstrip()[:2] in ("- ", "* ", "• ") or
                    (line.lstrip()[:1].isdigit() and line.lstrip()[1:3] in (". ", ") ")))
        out.append(min(items, target_items) / target_items)
    return out
