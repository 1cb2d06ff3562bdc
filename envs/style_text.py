"""Text in a user's own style: the requests users type and the writing samples in their history.

A user's style is a visible, honest cue to their hidden preferences (as in real chats), and their own
texts are data for retrieval, fine-tuning, perplexity and BLEU against the user.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from envs.scenarios import STRONG_PREFERENCE

def phrase_request(instruction: str, weights: Mapping[str, float]) -> str:
    """Write a request the way a user with these preferences talks: formal users write formally, etc.

    The style of the request is a visible, honest cue to the hidden preferences (as in real chats).
    """
    text = instruction[0].upper() + instruction[1:]
    if weights.get("formality", 0.0) > STRONG_PREFERENCE:
        text = f"Dear assistant, could you please {instruction}? Kind regards."
    elif weights.get("formality", 0.0) < -STRONG_PREFERENCE:
        text = f"hey, can you {instruction}? thanks!"
    else:
        text = f"{text}."
    if weights.get("brevity", 0.0) > STRONG_PREFERENCE:
        text += " Keep it short."
    elif weights.get("brevity", 0.0) < -STRONG_PREFERENCE:
        text += " Feel free to be thorough."
    return text


_STOPWORDS = frozenset("about much what when with from that this your have like there their would could should "
                       "which where while after before every some ask say tell".split())
_FILLER = (
    "There is more to say about {k}.",
    "It helps to think about {k} step by step.",
    "Most people find {k} easier once they start.",
    "The details of {k} matter here.",
    "A good plan for {k} takes a little time.",
)


def write_in_style(topic: str, weights: Mapping[str, float], rng: np.random.Generator) -> str:
    """A text about ``topic`` written the way a user with these preference weights writes (and likes to read).

    Used for users' writing samples: a retrieval corpus, fine-tuning data and a reference for perplexity
    and BLEU against the user. Each dimension the user cares about (|weight| > STRONG_PREFERENCE) shapes the text.
    """
    w = {d: float(weights.get(d, 0.0)) for d in set(weights) | {"brevity"}}
    key = [word for word in topic.replace(",", " ").split() if len(word) > 3 and word not in _STOPWORDS][:3] or [topic]
    parts: list[str] = []
    if w.get("formality", 0) > STRONG_PREFERENCE:
        parts.append("Dear reader,")
    elif w.get("formality", 0) < -STRONG_PREFERENCE:
        parts.append("Hey there!")
    if w.get("empathy", 0) > STRONG_PREFERENCE:
        parts.append("I understand this can feel hard.")
    if w.get("warmth", 0) > STRONG_PREFERENCE:
        parts.append("I hope you are well, and thanks so much for reading.")
    parts.append(f"This is about how to {topic}.")
    n_filler = 0 if w["brevity"] > STRONG_PREFERENCE else (4 if w["brevity"] < -STRONG_PREFERENCE else 2)
    for _ in range(n_filler):
        parts.append(str(rng.choice(_FILLER)).format(k=str(rng.choice(key))))
    if w.get("technical_depth", 0) > STRONG_PREFERENCE:
        parts.append("Systematically measuring performance characteristics improves implementation decisions.")
    if w.get("jargon", 0) > STRONG_PREFERENCE:
        parts.append("Check the router firmware, the DNS settings and the cache.")
    if w.get("examples", 0) > STRONG_PREFERENCE:
        parts.append(f"For example, start with {key[0]}, such as a small first step.")
    if w.get("caution", 0) > STRONG_PREFERENCE:
        parts.append("You may want to consult a professional before you change anything.")
    text = " ".join(parts)
    if w.get("simplicity", 0) > STRONG_PREFERENCE:
        text = text.replace(", ", ". ")
    if w.get("structure", 0) > STRONG_PREFERENCE:
        text += "\n" + "\n".join(f"- {k}" for k in key)
    if w.get("formality", 0) > STRONG_PREFERENCE:
        text += "\nKind regards."
    elif w.get("warmth", 0) > STRONG_PREFERENCE:
        text += "\nTake care!"
    return text
