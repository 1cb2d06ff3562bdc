"""Simulated users with hidden, interpretable preferences, and the populations they are drawn from.

A :class:`UserProfile` is what a user *is* (hidden preference weights, a group, traits, their own
texts). A :class:`SimulatedUser` is how the user *reacts*: it scores replies with a hidden utility

    utility = sum_d term_d  +  relevance_weight * (2 * relevance - 1)  +  noise
    term_d  = relevance * w_d * (2 * feature_d(reply) - 1)  -  (1 - relevance) * |w_d|

and answers through feedback channels: a Likert rating, a pairwise choice (Bradley-Terry with a
temperature) and a short critique naming the dimension the user most wants changed.
A :class:`UserPopulation` samples users from seeded preference clusters (groups) and keeps a held-out
split that training never sees.

Relevance (:func:`envs.features.keyword_relevance`) is the task covered, with some substance, in the
reply's own sentences, less what is copied from the user's message, repeated, padding or stuffed style
words. A fully relevant reply is judged on its style at face value (``term_d = w_d * (2 * feature_d - 1)``);
one that does not answer at all meets none of the user's preferences (``term_d = -|w_d|``), so an echo of
the request, a list of warm words or an empty reply never beats an answer, whatever the user's style.

Everything here is numpy and the standard library: it imports without torch or TRL.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.features import ALL_DIMENSIONS, STYLE_DIMENSIONS, analyse, features, unsafe_advice

# The scenario modules each define a `SCENARIO`; looked up lazily to keep imports one-way.
# Users add their own with `register_scenario`.
SCENARIOS: dict[str, "str | Scenario"] = {
    "writing": "envs.writing_assistant:SCENARIO",
    "support": "envs.customer_support:SCENARIO",
    "tutor": "envs.tutor:SCENARIO",
    "health": "envs.health_coach:SCENARIO",
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One thing a user asks for: an instruction and the keywords an on-topic reply mentions."""

    task_id: str
    instruction: str
    keywords: tuple[str, ...]
    reference: str = ""
    """A plain, middling reply; the pairwise feedback channel compares first replies against it."""

    @functools.cached_property
    def keyword_set(self) -> frozenset[str]:
        return frozenset(self.keywords)

    def reference_reply(self) -> str:
        return self.reference or f"Here is some help with your request to {self.instruction}."


@dataclasses.dataclass(frozen=True)
class UserGroup:
    """A preference cluster: users of a group share a centre of preference weights.

    ``preference_center`` maps dimension names to weights in ``[-1, 1]`` (missing dimensions are 0);
    each user's weights are the centre plus Gaussian noise with standard deviation ``spread``.
    """

    name: str
    share: float
    preference_center: Mapping[str, float]
    spread: float = 0.15

    def __post_init__(self) -> None:
        unknown = set(self.preference_center) - set(ALL_DIMENSIONS)
        if unknown:
            raise ValueError(
                f"group {self.name!r}: unknown preference dimension(s) {sorted(unknown)}; "
                f"allowed: {', '.join(ALL_DIMENSIONS)}"
            )
        if not self.share > 0:
            raise ValueError(f"group {self.name!r}: share must be > 0, got {self.share}")
        if self.spread < 0:
            raise ValueError(f"group {self.name!r}: spread must be >= 0, got {self.spread}")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What a population needs from an application scenario.

    ``dimensions``: the preference dimensions its users have (the shared style dimensions plus the
    scenario's own). ``traits``: visible user attributes and their probabilities; ``trait_effects`` shift
    a user's preference weights by trait value (e.g. novice learners want simpler language).
    ``unsafe_penalty``: utility lost, by every user, for advice that is unsafe whoever asks.
    """

    name: str
    groups: tuple[UserGroup, ...]
    tasks: tuple[Task, ...]
    history_topics: tuple[str, ...]
    dimensions: tuple[str, ...] = STYLE_DIMENSIONS
    traits: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    trait_effects: Mapping[str, Mapping[str, Mapping[str, float]]] = dataclasses.field(default_factory=dict)
    unsafe_penalty: float = 0.0

    def __post_init__(self) -> None:
        for group in self.groups:
            extra = set(group.preference_center) - set(self.dimensions)
            if extra:
                raise ValueError(f"scenario {self.name!r}, group {group.name!r}: dimensions {sorted(extra)} "
                                 f"are not among the scenario's {self.dimensions}")
        if len({t.task_id for t in self.tasks}) != len(self.tasks):
            raise ValueError(f"scenario {self.name!r}: task ids must be unique")


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; available: {', '.join(sorted(SCENARIOS))}")
    entry = SCENARIOS[name]
    if isinstance(entry, Scenario):
        return entry
    module, attr = entry.split(":")
    return getattr(importlib.import_module(module), attr)


def register_scenario(scenario: Scenario, replace: bool = False) -> None:
    """Make a scenario of your own available to :class:`UserPopulation` (and envs) by its name."""
    if scenario.name in SCENARIOS and not replace:
        raise ValueError(f"scenario {scenario.name!r} already exists; pass replace=True to redefine it")
    SCENARIOS[scenario.name] = scenario


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
    retrieval, fine-tuning, perplexity and BLEU against the user.
    """

    user_id: str
    group: str
    preference_weights: Mapping[str, float]
    traits: Mapping[str, Any]
    history: tuple[str, ...]

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.preference_weights)

    def stated_preferences(self, threshold: float = 0.3) -> str:
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
        requests, samples = self.history[:HISTORY_REQUESTS], self.history[HISTORY_REQUESTS:]
        return list(zip(requests, samples))

    def weight_vector(self) -> np.ndarray:
        return np.array(list(self.preference_weights.values()), dtype=np.float64)

    def describe(self) -> str:
        """A plain-language profile (for prompting baselines and reports)."""
        likes = [d for d, w in self.preference_weights.items() if w > 0.25]
        dislikes = [d for d, w in self.preference_weights.items() if w < -0.25]
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
        values, relevance = analyse(
            replies, self.dimensions, [t.keyword_set for t in tasks], [self._request(t) for t in tasks]
        )
        assert relevance is not None
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


def phrase_request(instruction: str, weights: Mapping[str, float]) -> str:
    """Write a request the way a user with these preferences talks: formal users write formally, etc.

    The style of the request is a visible, honest cue to the hidden preferences (as in real chats).
    """
    text = instruction[0].upper() + instruction[1:]
    if weights.get("formality", 0.0) > 0.3:
        text = f"Dear assistant, could you please {instruction}? Kind regards."
    elif weights.get("formality", 0.0) < -0.3:
        text = f"hey, can you {instruction}? thanks!"
    else:
        text = f"{text}."
    if weights.get("brevity", 0.0) > 0.4:
        text += " Keep it short."
    elif weights.get("brevity", 0.0) < -0.4:
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
    and BLEU against the user. Each dimension the user cares about (|weight| > 0.3) shapes the text.
    """
    w = {d: float(weights.get(d, 0.0)) for d in set(weights) | {"brevity"}}
    key = [word for word in topic.replace(",", " ").split() if len(word) > 3 and word not in _STOPWORDS][:3] or [topic]
    parts: list[str] = []
    if w.get("formality", 0) > 0.3:
        parts.append("Dear reader,")
    elif w.get("formality", 0) < -0.3:
        parts.append("Hey there!")
    if w.get("empathy", 0) > 0.3:
        parts.append("I understand this can feel hard.")
    if w.get("warmth", 0) > 0.3:
        parts.append("I hope you are well, and thanks so much for reading.")
    parts.append(f"This is about how to {topic}.")
    n_filler = 0 if w["brevity"] > 0.3 else (4 if w["brevity"] < -0.3 else 2)
    for _ in range(n_filler):
        parts.append(str(rng.choice(_FILLER)).format(k=str(rng.choice(key))))
    if w.get("technical_depth", 0) > 0.3:
        parts.append("Systematically measuring performance characteristics improves implementation decisions.")
    if w.get("jargon", 0) > 0.3:
        parts.append("Check the router firmware, the DNS settings and the cache.")
    if w.get("examples", 0) > 0.3:
        parts.append(f"For example, start with {key[0]}, such as a small first step.")
    if w.get("caution", 0) > 0.3:
        parts.append("You may want to consult a professional before you change anything.")
    text = " ".join(parts)
    if w.get("simplicity", 0) > 0.3:
        text = text.replace(", ", ". ")
    if w.get("structure", 0) > 0.3:
        text += "\n" + "\n".join(f"- {k}" for k in key)
    if w.get("formality", 0) > 0.3:
        text += "\nKind regards."
    elif w.get("warmth", 0) > 0.3:
        text += "\nTake care!"
    return text


class UserPopulation:
    """A seeded population of simulated users in preference groups, with a held-out split.

    Args:
        scenario: name of the application scenario (``writing``); gives groups, tasks and topics.
        n_users: number of users in the population.
        held_out_fraction: share of each group kept for evaluation only (never used in training).
        seed: the same seed gives the same users, weights, traits, histories and split.
        groups: override the scenario's preference groups.

    >>> population = UserPopulation("writing", n_users=20, seed=0)
    >>> len(population.train_users), len(population.held_out_users)
    (16, 4)
    >>> population.user(population.held_out_users[0].user_id).group in {g.name for g in population.groups}
    True
    """

    def __init__(
        self,
        scenario: str = "writing",
        n_users: int = 100,
        held_out_fraction: float = 0.2,
        seed: int = 0,
        groups: Sequence[UserGroup] | None = None,
    ) -> None:
        if n_users < 2:
            raise ValueError(f"n_users must be at least 2 (one train, one held-out), got {n_users}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be strictly between 0 and 1, got {held_out_fraction}")
        self.scenario = get_scenario(scenario)
        self.scenario_name = scenario
        self.groups = tuple(groups) if groups is not None else self.scenario.groups
        if not self.groups:
            raise ValueError("a population needs at least one group")
        for group in self.groups:
            extra = set(group.preference_center) - set(self.scenario.dimensions)
            if extra:
                raise ValueError(
                    f"group {group.name!r}: dimension(s) {sorted(extra)} are not used in scenario {scenario!r}; "
                    f"its dimensions: {', '.join(self.scenario.dimensions)}"
                )
        self.seed = seed
        self.tasks = self.scenario.tasks
        self._task_index = {t.task_id: t for t in self.tasks}
        rng = np.random.default_rng(seed)

        shares = np.array([g.share for g in self.groups], dtype=np.float64)
        counts = np.floor(shares / shares.sum() * n_users).astype(int)
        counts[np.argmax(shares)] += n_users - counts.sum()
        users: list[UserProfile] = []
        held_out: set[str] = set()
        for group, count in zip(self.groups, counts):
            group_users = [self._sample_user(len(users) + k, group, rng) for k in range(count)]
            users.extend(group_users)
            # Stratified split: every group (minorities included) appears in both splits when it can.
            n_held = int(round(count * held_out_fraction))
            if count >= 2:
                n_held = min(max(n_held, 1), count - 1)
            for k in rng.permutation(count)[:n_held]:
                held_out.add(group_users[k].user_id)
        self.users: tuple[UserProfile, ...] = tuple(users)
        self._by_id = {u.user_id: u for u in users}
        self.train_users = tuple(u for u in users if u.user_id not in held_out)
        self.held_out_users = tuple(u for u in users if u.user_id in held_out)

    def _sample_user(self, index: int, group: UserGroup, rng: np.random.Generator) -> UserProfile:
        dimensions = self.scenario.dimensions
        center = np.array([group.preference_center.get(d, 0.0) for d in dimensions])
        weights = center + rng.normal(0.0, group.spread, size=center.shape)
        traits: dict[str, Any] = {"age_band": str(rng.choice(["18-29", "30-44", "45-64", "65+"]))}
        for trait, distribution in self.scenario.traits.items():
            values = list(distribution)
            p = np.array([distribution[v] for v in values], dtype=np.float64)
            uniform = bool(np.all(p == p[0]))  # drawn without p: keeps populations stable across versions
            traits[trait] = str(values[int(rng.choice(len(values)) if uniform else rng.choice(len(values), p=p / p.sum()))])
            for dimension, shift in self.scenario.trait_effects.get(trait, {}).get(traits[trait], {}).items():
                weights[dimensions.index(dimension)] += shift
        weights = np.clip(weights, -1.0, 1.0)
        preference_weights = {d: float(round(w, 4)) for d, w in zip(dimensions, weights)}
        topics = rng.choice(len(self.scenario.history_topics), size=HISTORY_REQUESTS, replace=False)
        chosen = [self.scenario.history_topics[t] for t in sorted(topics.tolist())]
        # Writing samples come from their own generator, so adding them left the population draws unchanged.
        sample_rng = np.random.default_rng([self.seed, index, 7])
        history = tuple(phrase_request(topic, preference_weights) for topic in chosen) + tuple(
            write_in_style(topic, preference_weights, sample_rng) for topic in chosen[:3]
        )
        return UserProfile(f"u{index:04d}", group.name, preference_weights, traits, history)

    def __len__(self) -> int:
        return len(self.users)

    def user(self, user_id: str) -> UserProfile:
        try:
            return self._by_id[user_id]
        except KeyError:
            raise KeyError(
                f"unknown user_id {user_id!r}; this population has ids u0000..u{len(self.users) - 1:04d}"
            ) from None

    def task(self, task_id: str) -> Task:
        try:
            return self._task_index[task_id]
        except KeyError:
            raise KeyError(f"unknown task_id {task_id!r} in scenario {self.scenario_name!r}") from None

    def split(self, name: str) -> tuple[UserProfile, ...]:
        """Users of a split: ``train``, ``held_out`` or ``all``."""
        splits = {"train": self.train_users, "held_out": self.held_out_users, "all": self.users}
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; choose one of: train, held_out, all")
        return splits[name]

    def simulated_user(self, user_id: str, **user_kwargs: Any) -> SimulatedUser:
        user_kwargs.setdefault("unsafe_penalty", self.scenario.unsafe_penalty)
        return SimulatedUser(self.user(user_id), **user_kwargs)
