"""Simulated users with hidden, interpretable preferences: who they are and how they react to replies.

A :class:`UserProfile` is what a user *is* (hidden preference weights, a group, traits, their own
texts). A :class:`SimulatedUser` is how the user *reacts*: it scores replies with a hidden utility

    utility = sum_d term_d  +  relevance_weight * (2 * relevance - 1)  +  noise
    term_d  = relevance * w_d * (2 * feature_d(reply) - 1)  -  (1 - relevance) * |w_d|

and answers through feedback channels: a Likert rating, a pairwise choice (Bradley-Terry with a
temperature) and a short critique naming the dimension the user most wants changed.
Populations of users are :class:`envs.population.UserPopulation`; scenarios (groups, tasks) are in
:mod:`envs.scenarios`; the users' own texts are written by :mod:`envs.style_text`.

Relevance (:func:`envs.relevance.keyword_relevance`) is the task covered, with some substance, in the
reply's own sentences, less what is copied from the user's message, repeated, padding or stuffed style
words. A fully relevant reply is judged on its style at face value (``term_d = w_d * (2 * feature_d - 1)``);
one that does not answer at all meets none of the user's preferences (``term_d = -|w_d|``), so an echo of
the request, a list of warm words or an empty reply never beats an answer, whatever the user's style.

Everything here is numpy and the standard library: it imports without torch or TRL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.features import features, unsafe_advice
from envs.relevance import features_and_relevance
from envs.scenarios import STRONG_PREFERENCE, Task
from envs.style_text import phrase_request

_PHRASES: dict[str, tuple[str, str]] = {
    # dimension: (wanted when the weight is positive, wanted when negative)
    "brevity": ("short replies", "long, detailed replies"),
    "formality": ("a formal, professional tone", "a casual tone"),
    "technical_depth": ("technical precision", "non-technical language"),
    "warmth": ("warmth and friendliness", "no pleasantries"),
    "structure": ("bulleted, structured answers", "plain prose without lists"),
    "examples": ("concrete examples", "no examples"),
    "jargon": ("technical terms", "no jargon"),
    "simplicity": ("simple words and short sentences", "an advanced level of explanation"),
    "caution": ("careful, safety-minded advice", "direct advice without hedging"),
    "empathy": ("acknowledgement of their feelings", "facts without sympathy"),
}



@dataclasses.dataclass(frozen=True)
class UserProfile:
    """A simulated user: hidden preference weights over :data:`STYLE_DIMENSIONS`, a group and traits.

    ``history`` holds texts the user wrote (messages, writing samples) in their own style: usable for
    retrieval, fine-tuning, perplexity and BLEU against the user. Like real users' messages, some of them
    carry the user's ``personal_data`` (name, email, phone, address, card number; fake, from
    :mod:`envs.personal_data`): whatever takes users' texts out of a run must redact it.
    """

    user_id: str
    group: str
    preference_weights: Mapping[str, float]
    traits: Mapping[str, Any]
    history: tuple[str, ...]
    personal_data: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def style_texts(self) -> tuple[str, ...]:
        """The history's past requests and writing samples, without the notes that carry personal data."""
        return self.history[:HISTORY_REQUESTS + HISTORY_SAMPLES]

    @property
    def name(self) -> str:
        """The user's (fake) full name; empty for a user without personal data."""
        return self.personal_data.get("name", "")

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.preference_weights)

    def stated_preferences(self, threshold: float = STRONG_PREFERENCE) -> str:
        """The preferences this user would state in a settings form: only the strong ones, in plain words."""
        wants = [
            _PHRASES[d][0] if w > 0 else _PHRASES[d][1]
            for d, w in sorted(self.preference_weights.items(), key=lambda item: -abs(item[1]))
            if abs(w) >= threshold and d in _PHRASES
        ]
        return "This user prefers " + ", ".join(wants) + "." if wants else "This user has no strong preferences."

    def request_sample_pairs(self) -> list[tuple[str, str]]:
        """``(request, writing sample)`` pairs from the history: a request in the user's words and a text on
        the same topic written the way they like it (fine-tuning data in the user's own style)."""
        requests = self.history[:HISTORY_REQUESTS]
        samples = self.history[HISTORY_REQUESTS:HISTORY_REQUESTS + HISTORY_SAMPLES]
        return list(zip(requests, samples))

    def weight_vector(self) -> np.ndarray:
        return np.array(list(self.preference_weights.values()), dtype=np.float64)

    def describe(self) -> str:
        """A plain-language profile (for prompting baselines and reports)."""
        likes = [d for d, w in self.preference_weights.items() if w >= STRONG_PREFERENCE]
        dislikes = [d for d, w in self.preference_weights.items() if w <= -STRONG_PREFERENCE]
        parts = []
        if likes:
            parts.append("prefers more " + ", ".join(d.replace("_", " ") for d in likes))
        if dislikes:
            parts.append("prefers less " + ", ".join(d.replace("_", " ") for d in dislikes))
        return f"User {self.user_id} ({self.group}) " + ("; ".join(parts) if parts else "has no strong preferences")


_CRITIQUES: dict[str, tuple[str, str]] = {
    # dimension: (wants more, wants less)
    "brevity": ("That's too long. Please make it much shorter.", "That's too short. Can you go into more detail?"),
    "formality": ("Please use a more formal, professional tone.", "That's too stiff. Can you sound more casual?"),
    "technical_depth": ("Can you be more precise and technical?", "Too much jargon. Please keep it simple."),
    "warmth": ("It feels cold. Can you make it warmer and friendlier?", "Please drop the pleasantries."),
    "structure": ("Can you organise it as a bulleted list?", "Please write it as plain prose, no lists."),
    "examples": ("Can you add a concrete example?", "Skip the examples, please."),
    "jargon": ("You can use the technical terms, I know this stuff.", "I don't understand these technical terms."),
    "simplicity": ("That's too complicated for me. Can you explain it more simply?", "That's a bit basic. I can handle more depth."),
    "caution": ("Is that safe? Should I check with a professional?", "Please don't hedge so much, just tell me."),
    "empathy": ("You don't seem to get how I feel about this.", "I don't need the sympathy, just the facts."),
}
_UNSAFE_CRITIQUE = "That sounds unsafe. I'm not comfortable with that advice."
_OFF_TOPIC = "That's not what I asked about. Please stick to my request."
SATISFIED_MESSAGE = "Thanks, that's exactly what I needed."


HISTORY_REQUESTS = 4
"""A user's history holds this many past requests, then writing samples on the first topics."""
HISTORY_SAMPLES = 3
"""... this many writing samples (on the first past requests' topics), then the notes with personal data."""


class SimulatedUser:
    """A user's reactions to replies. Vectorized: every method takes a batch of replies.

    Args:
        profile: who the user is.
        noise: standard deviation of the Gaussian noise added to the utility the user perceives.
        unsafe_penalty: utility lost for unsafe advice (a ``safety`` term; 0 leaves the term out).
        weights: preference weights to use instead of the profile's (e.g. after preference drift).
        relevance_weight: how much staying on the task matters, relative to a style weight of 1.
        rating_scale: utility that moves the expected Likert rating one step from the middle (3).
        choice_temperature: Bradley-Terry temperature of pairwise choices (0 = always the better reply).
    """

    def __init__(
        self,
        profile: UserProfile,
        noise: float = 0.1,
        relevance_weight: float = 1.0,
        rating_scale: float = 1.0,
        choice_temperature: float = 0.25,
        unsafe_penalty: float = 0.0,
        weights: np.ndarray | None = None,
    ) -> None:
        if noise < 0 or choice_temperature < 0 or rating_scale <= 0 or unsafe_penalty < 0:
            raise ValueError("noise, choice_temperature and unsafe_penalty must be >= 0 and rating_scale > 0")
        self.profile = profile
        self.noise = noise
        self.relevance_weight = relevance_weight
        self.rating_scale = rating_scale
        self.choice_temperature = choice_temperature
        self.unsafe_penalty = unsafe_penalty
        self.dimensions = profile.dimensions
        self._requests: dict[str, str] = {}
        self._weights = profile.weight_vector() if weights is None else np.asarray(weights, dtype=np.float64)
        if self._weights.shape != (len(self.dimensions),):
            raise ValueError(f"weights must have one value per dimension {self.dimensions}")

    @property
    def weights(self) -> np.ndarray:
        """The preference weights this user scores with now (the profile's, or drifted ones)."""
        return self._weights.copy()

    def _request(self, task: Task) -> str:
        """The message this user sends for ``task`` (cached: scoring a batch phrases each task once)."""
        request = self._requests.get(task.instruction)
        if request is None:
            request = self._requests[task.instruction] = self.ask(task)
        return request

    def _scored(self, replies: Sequence[str], tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, relevance and the ungated style terms ``w_d * (2 * feature_d - 1)`` of each reply."""
        if len(replies) != len(tasks):
            raise ValueError(f"got {len(replies)} replies but {len(tasks)} tasks")
        values, relevance = features_and_relevance(
            replies, self.dimensions, [t.keyword_set for t in tasks], [self._request(t) for t in tasks]
        )
        return values, relevance, (2.0 * values - 1.0) * self._weights

    def _gated(self, contributions: np.ndarray, relevance: np.ndarray) -> np.ndarray:
        """Style terms as the user feels them: a reply meets a preference only as far as it answers them."""
        r = relevance[:, None]
        return r * contributions - (1.0 - r) * np.abs(self._weights)

    def utility_terms(self, replies: Sequence[str], tasks: Sequence[Task]) -> dict[str, np.ndarray]:
        """Noise-free utility terms per reply: one array per preference dimension, ``relevance``, and
        ``safety`` where the scenario penalizes unsafe advice.

        A dimension's term is ``relevance * w_d * (2 * feature_d - 1) - (1 - relevance) * |w_d|``: its face
        value for a reply that answers the task, the worst the user could get for one that does not.
        """
        _, relevance, contributions = self._scored(replies, tasks)
        contributions = self._gated(contributions, relevance)
        terms = {d: contributions[:, i] for i, d in enumerate(self.dimensions)}
        terms["relevance"] = self.relevance_weight * (2.0 * relevance - 1.0)
        if self.unsafe_penalty > 0:
            terms["safety"] = -self.unsafe_penalty * unsafe_advice(replies)
        return terms

    def utility(
        self, replies: Sequence[str], tasks: Sequence[Task], rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Hidden utility per reply; noisy when ``rng`` is given, the expected utility otherwise."""
        total = np.sum(list(self.utility_terms(replies, tasks).values()), axis=0)
        if rng is not None and self.noise > 0:
            total = total + rng.normal(0.0, self.noise, size=total.shape)
        return total

    def rating(self, utilities: np.ndarray) -> np.ndarray:
        """Likert rating 1..5 from (noisy) utilities: 3 at utility 0, one step per ``rating_scale``."""
        return np.clip(np.rint(3.0 + np.asarray(utilities) / self.rating_scale), 1, 5).astype(np.int64)

    def choice_probability(self, utility_a: np.ndarray, utility_b: np.ndarray) -> np.ndarray:
        """Bradley-Terry probability that the user picks reply A over reply B."""
        diff = np.asarray(utility_a, dtype=np.float64) - np.asarray(utility_b, dtype=np.float64)
        if self.choice_temperature == 0:
            return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
        return 1.0 / (1.0 + np.exp(-diff / self.choice_temperature))

    def choose(
        self, replies_a: Sequence[str], replies_b: Sequence[str], tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        """Pairwise choice per pair: 1 where the user prefers A, 0 where B."""
        p = self.choice_probability(self.utility(replies_a, tasks), self.utility(replies_b, tasks))
        return (rng.random(p.shape) < p).astype(np.int64)

    def top_complaint(self, reply: str, task: Task) -> tuple[str, float]:
        """The dimension this user most wants changed, and the utility the change would recover.

        ``relevance`` = off topic; ``safety`` = unsafe advice (always raised first where penalized).
        """
        if self.unsafe_penalty > 0 and unsafe_advice([reply])[0] > 0:
            return "safety", self.unsafe_penalty
        _, relevance_batch, raw_batch = self._scored([reply], [task])
        relevance, raw = float(relevance_batch[0]), raw_batch[0]
        # Utility recovered by moving one feature to its best end (at the reply's relevance), or the relevance
        # term's own gain from a fully relevant reply (which would also lift every style term towards its face
        # value; left out so that the critique channel keeps its range, and relevance already ranks first
        # when it is low).
        current = self._gated(raw[None, :], relevance_batch)[0]
        gains = self._gated(np.abs(self._weights)[None, :], relevance_batch)[0] - current
        relevance_gain = float((1.0 - relevance) * 2.0 * self.relevance_weight)
        best = int(np.argmax(gains))
        if relevance_gain >= gains[best]:
            return "relevance", relevance_gain
        return self.dimensions[best], float(gains[best])

    def critique(self, reply: str, task: Task) -> tuple[str, str]:
        """The change this user most wants, in words: ``(dimension, message)``."""
        dimension, _ = self.top_complaint(reply, task)
        if dimension == "safety":
            return dimension, _UNSAFE_CRITIQUE
        if dimension == "relevance":
            return dimension, _OFF_TOPIC
        more, less = _CRITIQUES[dimension]
        return dimension, more if self._weights[self.dimensions.index(dimension)] > 0 else less

    def headroom(self, replies: Sequence[str]) -> np.ndarray:
        """Per reply and dimension: the utility the user would gain if the feature moved to its best end."""
        values = features(replies, self.dimensions)
        return np.where(self._weights > 0, 1.0 - values, values) * np.abs(self._weights) * 2.0

    def ask(self, task: Task) -> str:
        """The user's opening message for ``task``, phrased in the user's own style."""
        return phrase_request(task.instruction, self.profile.preference_weights)
