"""Preference elicitation: the assistant may ask the user clarifying questions before it writes.

The simulated user asks for a piece of writing without saying how they like it (their preferences are
hidden, as in every attune env, and here their request does not hint at them either). The assistant
may ask questions first; the user answers each one truthfully from their hidden preference weights, and
every question costs a little. The episode ends with the assistant's answer, scored by the user's hidden
utility less what the questions cost. This is the information-gathering setting of LMRL-Gym's
Twenty Questions / Guess My City tasks (Abdulhai et al., 2023, https://arxiv.org/abs/2311.18232) applied
to personalisation, and the hidden-user-type POMDP of CURIO (Wan et al., 2025,
https://arxiv.org/abs/2504.03206), whose belief-shaping bonus :func:`belief_trajectory` computes exactly.

What counts as a question (:func:`is_question`): a reply that ends with ``?`` and has at most
``question_max_words`` words (default :data:`QUESTION_MAX_WORDS`). A longer reply that ends with a
question ("..., does that work for you?") is a draft with a closing question: it is the answer. On the
last allowed turn every reply is the answer, whatever it looks like.

How the user answers (:meth:`ElicitingUser.answer`): a question that mentions a preference dimension
(by cue words, :data:`DIMENSION_CUES`: "short", "length", "formal", "tone", "bullet", "example", ...) is
answered for every dimension it mentions with the sign and strength of the user's weight on it, in plain
words ("I really want short replies.", "I'd prefer a casual tone.", "I don't mind either way about
examples."): the strength is one of four levels (:func:`preference_level`). A question that mentions no
dimension gets a reply saying what the user could be asked about, and reveals nothing.

The belief over the user's group (:func:`group_posterior`) is Bayes' rule over the population's groups
under its generative model: prior = the groups' shares; likelihood of the revealed levels = the
probability that a user of the group has weights in those levels' intervals (each weight is Gaussian
around the group's centre with the group's spread, shifted by the trait effects, mixed over the trait
distribution; clipping to [-1, 1] never moves a weight across a level boundary).

Everything here is numpy and the standard library: it imports without torch or TRL.

Why one module over 300 lines: the question rule, the truthful answers and the exact posterior over groups
are one model of what a user reveals, and the env's step uses all three; the natural seam, if it grows,
is the posterior (a module of its own that the belief-shaping reward also reads).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.conversation import ConversationEnv, check_integer, check_number, render_transcript
from envs.population import UserPopulation
from envs.scenarios import Scenario, Task, UserGroup
from envs.style_text import phrase_request
from envs.users import _PHRASES, SimulatedUser, UserProfile
from envs.writing_assistant import SCENARIO as WRITING
from envs.writing_assistant import WRITING_TASKS

QUESTION_MAX_WORDS = 30
"""A reply ending with '?' is a clarifying question when it has at most this many words."""
QUESTION_COST = 0.1
"""Default utility a question costs (style terms are worth up to about +-0.8 each)."""

LEVEL_EDGES: tuple[float, float, float] = (0.1, 0.3, 0.6)
"""``|weight|`` at which a preference is slight (level 1), clear (2) and strong (3); below the first: 0."""
LEVEL_MIDPOINTS: dict[int, float] = {0: 0.0, 1: 0.2, 2: 0.45, 3: 0.8}
"""A weight typical of each level's interval: what an assistant can take a revealed level to mean."""

DIMENSION_CUES: dict[str, frozenset[str]] = {
    # Words that make a question about a dimension (lower-case whole words).
    "brevity": frozenset("short shorter long longer length lengthy brief briefer concise detail detailed thorough "
                         "brevity".split()),
    "formality": frozenset("formal informal casual tone professional formality polite".split()),
    "technical_depth": frozenset("technical precise precision depth technicality".split()),
    "warmth": frozenset("warm warmth friendly friendliness pleasantries personal cold".split()),
    "structure": frozenset("bullet bullets bulleted list lists structure structured headings prose".split()),
    "examples": frozenset("example examples instance instances".split()),
    "jargon": frozenset("jargon terminology acronyms".split()),
    "simplicity": frozenset("simple simpler simply plain complicated basic advanced".split()),
    "caution": frozenset("careful caution cautious safety safe hedge hedging risk risks".split()),
    "empathy": frozenset("feelings feel empathy sympathy sympathetic emotional".split()),
}
DIMENSION_TOPICS: dict[str, str] = {
    "brevity": "length", "formality": "tone", "technical_depth": "technical detail", "warmth": "warmth",
    "structure": "structure", "examples": "examples", "jargon": "jargon", "simplicity": "how simple it is",
    "caution": "caution", "empathy": "sympathy",
}
INVITATION = " Feel free to ask me a question first if you need to know how I'd like it."

_WORD = re.compile(r"[a-z]+")
_TRAILING = " \t\n\r\"')]\u201d\u2019*_"


def is_question(reply: str, max_words: int = QUESTION_MAX_WORDS) -> bool:
    """Whether ``reply`` is a clarifying question: it ends with '?' and has at most ``max_words`` words."""
    text = reply.rstrip(_TRAILING)
    return text.endswith("?") and 0 < len(text.split()) <= max_words


def mentioned_dimensions(question: str, dimensions: Sequence[str]) -> list[str]:
    """The dimensions of ``dimensions`` that ``question`` mentions by a cue word, in ``dimensions``' order."""
    tokens = set(_WORD.findall(question.lower()))
    return [d for d in dimensions if tokens & DIMENSION_CUES.get(d, frozenset())]


def preference_level(weight: float) -> int:
    """The signed strength a user states for a weight: 0 (no preference), +-1 slight, +-2 clear, +-3 strong."""
    size = sum(abs(weight) >= edge for edge in LEVEL_EDGES)
    return int(math.copysign(size, weight)) if size else 0


def level_interval(level: int) -> tuple[float, float]:
    """The weights that state ``level``: ``[low, high)`` for a positive level, ``(low, high]`` for a negative one."""
    if level == 0:
        return -LEVEL_EDGES[0], LEVEL_EDGES[0]
    size = abs(level)
    if size > len(LEVEL_EDGES):
        raise ValueError(f"a preference level is an integer in [-3, 3], got {level}")
    low, high = LEVEL_EDGES[size - 1], LEVEL_EDGES[size] if size < len(LEVEL_EDGES) else math.inf
    return (low, high) if level > 0 else (-high, -low)


def answer_sentence(dimension: str, level: int) -> str:
    """The user's words for their preference on ``dimension`` at ``level``."""
    if level == 0 or dimension not in _PHRASES:
        return f"I don't mind either way about {DIMENSION_TOPICS.get(dimension, dimension.replace('_', ' '))}."
    phrase = _PHRASES[dimension][0 if level > 0 else 1]
    if abs(level) == 3:
        return f"I really want {phrase}."
    if abs(level) == 2:
        return f"I'd prefer {phrase}."
    return f"If anything I'd lean towards {phrase}, but only slightly."


def answer_question(question: str, preference_weights: Mapping[str, float]) -> tuple[str, dict[str, int]]:
    """A truthful answer to ``question`` from a user with ``preference_weights``: ``(text, revealed levels)``."""
    dimensions = list(preference_weights)
    asked = mentioned_dimensions(question, dimensions)
    if not asked:
        topics = [DIMENSION_TOPICS.get(d, d) for d in dimensions]
        return ("I'm not sure what you're asking. You could ask me about the "
                + ", ".join(topics[:-1]) + f" or {topics[-1]}."), {}
    revealed = {d: preference_level(float(preference_weights[d])) for d in asked}
    return " ".join(answer_sentence(d, level) for d, level in revealed.items()), revealed


def opening_request(task: Task, preference_weights: Mapping[str, float], styled: bool = False,
                    invite: bool = True) -> str:
    """The user's first message: the bare request (or phrased in the user's style), then an invitation to ask."""
    text = phrase_request(task.instruction, preference_weights) if styled else (
        task.instruction[0].upper() + task.instruction[1:] + ".")
    return text + (INVITATION if invite else "")


class ElicitingUser(SimulatedUser):
    """A :class:`~envs.users.SimulatedUser` who opens with a plain request and answers clarifying questions.

    Scores replies as every simulated user does; ``request`` (if given) is the opening message for every
    task, e.g. the one an assistant saw, for scoring replies under a belief about the user.
    """

    def __init__(self, profile: UserProfile, *, styled_request: bool = False, invite_questions: bool = True,
                 request: str | None = None, **user_kwargs: Any) -> None:
        super().__init__(profile, **user_kwargs)
        self.styled_request = styled_request
        self.invite_questions = invite_questions
        self.request = request

    def ask(self, task: Task) -> str:
        if self.request is not None:
            return self.request
        return opening_request(task, self.profile.preference_weights, self.styled_request, self.invite_questions)

    def answer(self, question: str) -> tuple[str, dict[str, int]]:
        """Truthful answer from the weights this user scores with now (drifted ones included)."""
        return answer_question(question, dict(zip(self.dimensions, self.weights.tolist())))


# --- the belief over the user's group ------------------------------------------------------------------


def _normal_cdf(x: float, mean: float, spread: float) -> float:
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    return 0.5 * (1.0 + math.erf((x - mean) / (spread * math.sqrt(2.0))))


def level_probability(level: int, mean: float, spread: float) -> float:
    """Probability that a weight ~ Normal(mean, spread) states ``level`` (spread 0: the weight is ``mean``)."""
    if spread == 0:
        return 1.0 if preference_level(mean) == level else 0.0
    low, high = level_interval(level)
    return max(0.0, _normal_cdf(high, mean, spread) - _normal_cdf(low, mean, spread))


def group_posterior(groups: Sequence[UserGroup], revealed: Mapping[str, int],
                    scenario: Scenario | None = None) -> dict[str, float]:
    """P(group | revealed levels): Bayes over ``groups`` (prior = shares) under the population's model.

    ``scenario`` supplies the trait distribution and trait effects (weights shifted by trait value); the
    likelihood mixes over every combination of the traits that shift a revealed dimension. When no group
    can produce the revealed levels (possible only with ``spread == 0`` or drifted weights) the prior is
    returned.
    """
    shares = np.array([g.share for g in groups], dtype=np.float64)
    prior = shares / shares.sum()
    if not revealed:
        return {g.name: float(p) for g, p in zip(groups, prior)}
    effects = dict(scenario.trait_effects) if scenario is not None else {}
    traits = [t for t in effects if scenario is not None and t in scenario.traits
              and any(set(shift) & set(revealed) for shift in effects[t].values())]
    combos: list[tuple[float, dict[str, float]]] = []
    for values in itertools.product(*(list(scenario.traits[t]) for t in traits)) if traits else [()]:
        probability, shifts = 1.0, {}
        for trait, value in zip(traits, values):
            distribution = scenario.traits[trait]  # type: ignore[union-attr]
            probability *= distribution[value] / sum(distribution.values())
            for dimension, shift in effects[trait].get(value, {}).items():
                shifts[dimension] = shifts.get(dimension, 0.0) + shift
        combos.append((probability, shifts))
    likelihood = np.array([
        sum(p * math.prod(level_probability(level, g.preference_center.get(d, 0.0) + shifts.get(d, 0.0), g.spread)
                          for d, level in revealed.items()) for p, shifts in combos)
        for g in groups
    ])
    joint = prior * likelihood
    if joint.sum() <= 0:
        return {g.name: float(p) for g, p in zip(groups, prior)}
    return {g.name: float(p) for g, p in zip(groups, joint / joint.sum())}


def population_posterior(population: UserPopulation, revealed: Mapping[str, int]) -> dict[str, float]:
    """:func:`group_posterior` for a population's groups and scenario."""
    return group_posterior(population.groups, revealed, population.scenario)


def belief_trajectory(population: UserPopulation, user_id: str, questions: Sequence[str]) -> list[float]:
    """P(the user's true group | answers so far), before any question and after each of ``questions``.

    The answers are the user's own truthful ones (:func:`answer_question`, profile weights).
    """
    profile = population.user(user_id)
    revealed: dict[str, int] = {}
    trajectory = [population_posterior(population, revealed)[profile.group]]
    for question in questions:
        revealed.update(answer_question(question, profile.preference_weights)[1])
        trajectory.append(population_posterior(population, revealed)[profile.group])
    return trajectory


def shaping_bonus(before: float, after: float, gamma: float = 1.0, log: bool = False) -> float:
    """Potential-based shaping (Ng et al., 1999) with potential = P(true group): ``gamma * phi' - phi``.

    ``log``: the potential is ``log P(true group)`` (CURIO's log-accuracy variant), floored at 1e-6.
    """
    if log:
        before, after = math.log(max(before, 1e-6)), math.log(max(after, 1e-6))
    return gamma * after - before


# --- the scenario ---------------------------------------------------------------------------------------

ELICITATION_GROUPS: tuple[UserGroup, ...] = (
    # Two questions (length, tone) tell the groups apart; the best reply differs a lot between them.
    UserGroup("brief_formal", share=0.4, preference_center={
        "brevity": 0.8, "formality": 0.6, "technical_depth": 0.0, "warmth": -0.3, "structure": 0.2, "examples": -0.3}),
    UserGroup("brief_casual", share=0.3, preference_center={
        "brevity": 0.7, "formality": -0.6, "technical_depth": -0.2, "warmth": 0.5, "structure": -0.2, "examples": -0.2}),
    UserGroup("detailed_formal", share=0.2, preference_center={
        "brevity": -0.7, "formality": 0.6, "technical_depth": 0.4, "warmth": -0.2, "structure": 0.6, "examples": 0.5}),
    UserGroup("detailed_warm", share=0.1, preference_center={
        "brevity": -0.7, "formality": -0.5, "technical_depth": -0.3, "warmth": 0.8, "structure": -0.3, "examples": 0.6}),
)

SCENARIO = Scenario(
    name="elicitation",
    groups=ELICITATION_GROUPS,
    tasks=WRITING_TASKS,
    history_topics=WRITING.history_topics[:6],  # the writing assistant's users' past requests
)


class ElicitationEnv(ConversationEnv):
    """A user asks for a piece of writing; the assistant may ask clarifying questions, then answers.

    ## Description
    Each episode draws a user (four preference groups of unequal size, hidden weights over brevity,
    formality, technical depth, warmth, structure and examples) and a writing task (the writing
    assistant's 64). The opening message is the bare request and an invitation to ask; it does not hint
    at the user's style (``styled_request=True`` phrases it in the user's style, as the other envs do).
    A reply that is a question (:func:`is_question`) gets a truthful answer revealing the user's
    preference on every dimension it mentions (:meth:`ElicitingUser.answer`); any other reply is the
    answer, and ends the episode.

    ## Observation
    The conversation so far as text, as in :class:`~envs.conversation.ConversationEnv`.

    ## Action
    The assistant's reply (a question or the answer), a string.

    ## Reward
    Sparse by default (``reward_mode="episode_end"``): 0 after each question, then the user's feedback on
    the answer (``feedback``: ``utility``, the default here, or any other channel) minus ``question_cost``
    per question asked. ``reward_mode="per_turn"`` charges each question's cost when it is asked: the same
    return. ``shaping_weight > 0`` adds ``shaping_weight * (shaping_gamma * P' - P)`` to each question's
    reward, P being the posterior probability of the user's true group before and after the answer
    (CURIO's belief bonus, potential-based); its terms are always in ``info["belief_bonus"]``.
    ``info["terms"]`` on a question turn is 0 for every utility term and ``questions = -question_cost``;
    on the answer turn it is the answer's utility terms with ``questions = 0``: summed over the episode
    they make the noise-free return (``info["expected_utility"]`` likewise). ``info["belief"]`` is the
    posterior over groups, ``info["revealed"]`` the levels revealed so far.

    ## Episode end
    Terminated by the answer (a reply that is not a question), or when the user leaves: after
    ``patience`` answered questions the next question makes them leave without a reply (scored as no
    answer at all, the worst utility). Truncated when ``max_turns > 1`` and the reply on the last turn is a
    question: it is scored as the answer. With ``max_turns=1`` every reply is the answer (single-turn).

    ## Arguments
    Those of :class:`~envs.conversation.ConversationEnv` (``leave_utility`` must stay ``None``: a reply
    ends the episode anyway), and ``question_cost`` (>= 0), ``question_max_words``, ``shaping_weight``,
    ``shaping_gamma``, ``styled_request``, ``invite_questions``, and ``scenario`` (elicit from another
    scenario's users, e.g. ``"writing"``; register such an id with ``kwargs={"scenario": ...}``).

    ## Version history
    - v1: initial release.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/Elicitation-v1", max_turns=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step("Do you prefer short replies or long ones?")
    >>> reward, terminated, info["feedback"]["message"].startswith("I")
    (0.0, False, True)
    >>> obs, reward, terminated, truncated, info = env.step("The new date is Friday; I will send details soon.")
    >>> terminated and info["questions_asked"] == 1
    True
    """

    scenario = "elicitation"

    def __init__(
        self,
        max_turns: int = 4,
        feedback: str = "utility",
        reward_mode: str = "episode_end",
        leave_utility: float | None = None,
        question_cost: float = QUESTION_COST,
        question_max_words: int = QUESTION_MAX_WORDS,
        shaping_weight: float = 0.0,
        shaping_gamma: float = 1.0,
        styled_request: bool = False,
        invite_questions: bool = True,
        scenario: str | None = None,
        **options: Any,
    ) -> None:
        """Every :class:`~envs.conversation.ConversationEnv` option (``population``, ``split``, ``noise``,
        ``patience``, ...) is taken as it is there; the ones above have this env's defaults or are its own."""
        if leave_utility is not None:
            raise ValueError("leave_utility does not apply to the elicitation env: its episode ends with the "
                             "assistant's first answer; leave env.leave_utility unset")
        check_number("question_cost", question_cost, minimum=0.0)
        check_integer("question_max_words", question_max_words, 1)
        check_number("shaping_weight", shaping_weight)
        check_number("shaping_gamma", shaping_gamma, 0.0, 1.0)
        for name, value in (("styled_request", styled_request), ("invite_questions", invite_questions)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        if scenario is not None:
            self.scenario = scenario
        super().__init__(max_turns=max_turns, feedback=feedback, reward_mode=reward_mode, leave_utility=None, **options)
        self.question_cost = float(question_cost)
        self.question_max_words = question_max_words
        self.shaping_weight = float(shaping_weight)
        self.shaping_gamma = float(shaping_gamma)
        self.styled_request = styled_request
        self.invite_questions = invite_questions
        self._revealed: dict[str, int] = {}
        self._belief: dict[str, float] = {}
        self._questions = 0
        self._term_names: list[str] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed, options=options)  # draws the user, the task and any drift
        assert self._user is not None and self._task is not None
        drawn = self._user
        self._user = ElicitingUser(drawn.profile, styled_request=self.styled_request,
                                   invite_questions=self.invite_questions, noise=self.noise,
                                   unsafe_penalty=drawn.unsafe_penalty, weights=drawn.weights)
        opening = self._user.ask(self._task)
        if self.group_tag:
            opening = f"[group: {self._user.profile.group}] {opening}"
        self._messages = [{"role": "user", "content": opening}]
        self._revealed = {}
        self._questions = 0
        self._belief = population_posterior(self.population, self._revealed)
        self._term_names = list(self._user.utility_terms([""], [self._task]))
        return render_transcript(self._messages), self._info()

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self._user is not None
        return super()._info(
            belief=dict(self._belief),
            true_group_probability=self._belief.get(self._user.profile.group, 0.0),
            revealed=dict(self._revealed),
            questions_asked=self._questions,
            **extra,
        )

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._user is None or self._task is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"the action is the reply text (str), got {type(action).__name__}")
        user = self._user
        assert isinstance(user, ElicitingUser)
        self._messages.append({"role": "assistant", "content": action})
        self._turn += 1
        asks = is_question(action, self.question_max_words)
        if asks and self._turn < self.max_turns:
            self._questions += 1
            if self.patience is None or self._questions <= self.patience:
                return self._answer_question(action)
            return self._finish("", action, left=True)
        return self._finish(action, action, left=False, truncated=asks and self.max_turns > 1)

    def _answer_question(self, question: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        user = self._user
        assert isinstance(user, ElicitingUser)
        answer, revealed = user.answer(question)
        before = self._belief[user.profile.group]
        self._revealed.update(revealed)
        self._belief = population_posterior(self.population, self._revealed)
        bonus = shaping_bonus(before, self._belief[user.profile.group], self.shaping_gamma)
        self._messages.append({"role": "user", "content": answer})
        reward = self.shaping_weight * bonus - (self.question_cost if self.reward_mode == "per_turn" else 0.0)
        terms = {name: 0.0 for name in self._term_names} | {"questions": -self.question_cost}
        info = self._info(
            terms=terms, utility=-self.question_cost, expected_utility=-self.question_cost, rating=None,
            satisfied=False, left=False, question=True, answer=answer, belief_bonus=bonus,
            feedback={"channel": self.feedback, "value": -self.question_cost, "rating": None, "critique": None,
                      "message": answer, "signal": "answers", "corrupted": None},
        )
        return render_transcript(self._messages), float(reward), False, False, info

    def _finish(self, scored: str, action: str, *, left: bool, truncated: bool = False
                ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score ``scored`` (the answer; "" when the user left) and end the episode."""
        user, task = self._user, self._task
        assert user is not None and task is not None
        terms = {k: float(v[0]) for k, v in user.utility_terms([scored], [task]).items()}
        expected_utility = float(sum(terms.values()))
        utility = float(user.utility([scored], [task], rng=self.np_random)[0])
        rating = int(user.rating(np.array([utility]))[0])
        satisfied = not left and expected_utility >= self.satisfaction_utility
        if left:
            critique, message, signal = None, "I'll leave it there, thanks.", "leaves"
        elif satisfied:
            critique, message, signal = None, "Thanks, that's exactly what I needed.", "satisfied"
        else:
            critique, message = user.critique(scored, task)
            signal = "continues" if utility >= 0 else "rephrases"
        self._previous_reply = None  # pairwise feedback compares the answer with the task's reference reply
        value, corruption = self._corrupt(self._channel_value(scored, utility, rating, signal))
        self._feedback_so_far.append(value)
        spent = self.question_cost * self._questions
        if self.reward_mode == "episode_end":
            reward = value - spent
        else:  # the earlier questions were charged when asked; a question that made the user leave is charged now
            reward = value - (self.question_cost if left else 0.0)
        terms["questions"] = -self.question_cost if left else 0.0
        info = self._info(
            terms=terms, utility=utility, expected_utility=float(sum(terms.values())), rating=rating,
            satisfied=satisfied, left=left, question=False, answer=None, belief_bonus=0.0,
            feedback={"channel": self.feedback, "value": value, "rating": rating, "critique": critique,
                      "message": message, "signal": signal, "corrupted": corruption},
        )
        return render_transcript(self._messages), float(reward), not truncated, truncated, info
