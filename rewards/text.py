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
