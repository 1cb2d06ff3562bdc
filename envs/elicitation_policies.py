"""Scripted policies for the elicitation env, the reference returns they define, and demonstrations for SFT.

- :func:`expert_policy`: asks about the dimensions that tell the groups apart, most telling first, until
  it is confident of the user's group (or has nothing left worth asking), then writes the reply that is
  best under what it learned. Behaviour cloning (BC) imitates its conversations.
- :func:`behaviour_policy`: a noisy policy: asks a random number of questions about random dimensions,
  then writes the best reply for a noisy guess of the user's weights (or a random reply). Filtered BC
  imitates only the top-return share of its episodes (LMRL-Gym keeps the top 10 % on its dialogue tasks).
- :func:`oracle_reply`: the best reply the reply family offers for the user's *true* weights, with no
  question asked: the "max" of the normalised return. :func:`worst_return`: the "min".

Replies come from one family (:func:`candidate_replies`): a plain on-topic body with optional parts
(formal or casual framing, a warm sentence, more detail, an example, a bulleted list, a technical
sentence), 96 in all per task; a policy picks the one whose expected utility is highest for the weights
it believes in, scored by the simulated user's own utility. Policies read the env's ``info`` (the levels
revealed so far and the posterior over groups), which is what the user's answers say in words.

Everything here is numpy and the standard library: it imports without torch or TRL.

Why one module over 300 lines: the scripted policies and the demonstrations drawn from them are one
reference set (expert, behaviour, random-question, oracle), used together by the metrics and by BC.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from envs.elicitation import (
    DIMENSION_CUES,
    DIMENSION_TOPICS,
    LEVEL_MIDPOINTS,
    ElicitationEnv,
    ElicitingUser,
)
from envs.population import UserPopulation
from envs.scenarios import Task
from envs.seeding import derive_seed
from envs.users import UserProfile

Policy = Callable[[ElicitationEnv, dict[str, Any], np.random.Generator], str]
"""A scripted policy: ``(env, info of the last step or reset, rng) -> the next reply``."""

# --- the reply family -----------------------------------------------------------------------------------

_QUESTION_WORDS: dict[str, str] = {
    "brevity": "Should it be short, or long and detailed?",
    "formality": "Should the tone be formal or casual?",
    "technical_depth": "How technical should it be?",
    "warmth": "Should it sound warm and friendly?",
    "structure": "Would you like it as a bulleted list, or as plain prose?",
    "examples": "Should I include an example?",
    "jargon": "Is it fine to use jargon?",
    "simplicity": "Should I keep the words simple?",
    "caution": "Should I be careful and mention safety?",
    "empathy": "Do you want me to acknowledge your feelings?",
}


def question_about(dimension: str) -> str:
    """The question a scripted policy asks about ``dimension`` (it names the dimension by a cue word)."""
    return "Before I write it: " + _QUESTION_WORDS.get(
        dimension, f"what do you prefer about {DIMENSION_TOPICS.get(dimension, dimension)}?")


@functools.lru_cache(maxsize=256)
def candidate_replies(task: Task) -> tuple[str, ...]:
    """The reply family for ``task``: an on-topic body in the task's own words with optional parts."""
    k0, k1, k2 = (list(task.keywords) * 3)[:3]
    body = (f"The {k0} comes first, so I put the main point at the top. "
            f"Then I cover the {k1} and what happens next with the {k2}.")
    detail = (f" I also explain why the {k1} matters now, what changed since last time, and who should "
              f"act on it. Finally I note the open questions about the {k2} and when we will know more.")
    example = f" For example, the {k0} could open with one clear sentence, such as the date and the reason."
    technical = (" Specifically, the implementation schedule accommodates approximately 3 additional "
                 "verification milestones.")
    warm = " I'm glad to help, and I hope this works well for you. Thanks for asking!"
    bullets = f"\n- Start with the {k0} and the main point.\n- Then explain the {k1}.\n- Close with the {k2}."
    openings = {"formal": ("Dear reader,\n", "\nKind regards."), "casual": ("Hey there! ", " Cheers, talk soon!"),
                "plain": ("", "")}
    replies = []
    for tone, with_warm, with_detail, with_example, with_bullets, with_technical in itertools.product(
            openings, *([(False, True)] * 5)):
        start, end = openings[tone]
        text = start + body + (detail if with_detail else "") + (example if with_example else "") + (
            technical if with_technical else "") + (warm if with_warm else "") + (bullets if with_bullets else "")
        replies.append(text + end)
    return tuple(replies)


def best_reply(task: Task, weights: Mapping[str, float], request: str, unsafe_penalty: float = 0.0) -> str:
    """The reply of :func:`candidate_replies` with the highest expected utility for a user with ``weights``."""
    believed = ElicitingUser(UserProfile("belief", "", dict(weights), {}, ()), request=request, noise=0.0,
                             unsafe_penalty=unsafe_penalty)
    candidates = candidate_replies(task)
    return candidates[int(np.argmax(believed.utility(list(candidates), [task] * len(candidates))))]


def believed_weights(population: UserPopulation, belief: Mapping[str, float], revealed: Mapping[str, int]
                     ) -> dict[str, float]:
    """What the policy takes the user's weights to be: the revealed levels' typical weights, and for the
    other dimensions the group centres averaged under the posterior ``belief``."""
    weights = {}
    for d in population.scenario.dimensions:
        if d in revealed:
            level = revealed[d]
            weights[d] = LEVEL_MIDPOINTS[abs(level)] * (1 if level > 0 else -1)
        else:
            weights[d] = float(sum(belief[g.name] * g.preference_center.get(d, 0.0) for g in population.groups))
    return weights


def telling_dimensions(population: UserPopulation, min_std: float = 0.2) -> list[str]:
    """Dimensions whose group centres differ (share-weighted standard deviation >= ``min_std``), most first."""
    shares = np.array([g.share for g in population.groups], dtype=np.float64)
    shares /= shares.sum()
    spread = {}
    for d in population.scenario.dimensions:
        centres = np.array([g.preference_center.get(d, 0.0) for g in population.groups])
        spread[d] = float(np.sqrt(np.sum(shares * (centres - np.sum(shares * centres)) ** 2)))
    return [d for d in sorted(spread, key=lambda d: -spread[d]) if spread[d] >= min_std]


# --- policies -------------------------------------------------------------------------------------------


def _request(info: Mapping[str, Any]) -> str:
    return info["messages"][0]["content"]


def _write(env: ElicitationEnv, info: Mapping[str, Any], weights: Mapping[str, float]) -> str:
    task = env.population.task(info["task_id"])
    return best_reply(task, weights, _request(info), env.population.scenario.unsafe_penalty)


def expert_policy(confidence: float = 0.95, max_questions: int | None = None) -> Policy:
    """Ask about the telling dimensions, most telling first, while the most likely group has posterior
    below ``confidence`` (and turns remain), then write the best reply for the believed weights."""

    def policy(env: ElicitationEnv, info: dict[str, Any], rng: np.random.Generator) -> str:
        revealed, belief = info["revealed"], info["belief"]
        left = [d for d in telling_dimensions(env.population) if d not in revealed]
        budget = max_questions if max_questions is not None else env.max_turns - 1
        turns_left = env.max_turns - info["turn"]
        if left and turns_left > 1 and info["questions_asked"] < budget and max(belief.values()) < confidence:
            return question_about(left[0])
        return _write(env, info, believed_weights(env.population, belief, revealed))

    return policy


def behaviour_policy(ask_probability: float = 0.5, weight_noise: float = 0.5, random_reply: float = 0.2) -> Policy:
    """A noisy policy: each turn asks (probability ``ask_probability``) about a random dimension, else
    answers: a random reply of the family (probability ``random_reply``), or the best one for the believed
    weights plus Gaussian noise of standard deviation ``weight_noise``."""

    def policy(env: ElicitationEnv, info: dict[str, Any], rng: np.random.Generator) -> str:
        dimensions = env.population.scenario.dimensions
        if env.max_turns - info["turn"] > 1 and rng.random() < ask_probability:
            return question_about(dimensions[int(rng.integers(len(dimensions)))])
        if rng.random() < random_reply:
            candidates = candidate_replies(env.population.task(info["task_id"]))
            return candidates[int(rng.integers(len(candidates)))]
        weights = believed_weights(env.population, info["belief"], info["revealed"])
        noisy = {d: float(np.clip(w + rng.normal(0.0, weight_noise), -1, 1)) for d, w in weights.items()}
        return _write(env, info, noisy)

    return policy


def random_question_policy(max_questions: int | None = None) -> Policy:
    """Asks a uniformly random number of questions (0 .. turns - 1) about random dimensions, then writes
    the best reply for what it learned: questions without a plan."""

    plan: dict[str, int] = {}

    def policy(env: ElicitationEnv, info: dict[str, Any], rng: np.random.Generator) -> str:
        if info["turn"] == 0:  # a new episode: draw how many questions it asks
            budget = env.max_turns - 1 if max_questions is None else min(max_questions, env.max_turns - 1)
            plan["questions"] = int(rng.integers(budget + 1))
        if info["questions_asked"] < plan["questions"]:
            dimensions = env.population.scenario.dimensions
            return question_about(dimensions[int(rng.integers(len(dimensions)))])
        return _write(env, info, believed_weights(env.population, info["belief"], info["revealed"]))

    return policy


def oracle_reply(env: ElicitationEnv) -> str:
    """The best reply of the family for the current user's true (possibly drifted) weights."""
    user, task = env.current_user, env._task
    assert user is not None and task is not None
    return best_reply(task, dict(zip(user.dimensions, user.weights.tolist())), user.ask(task), user.unsafe_penalty)


# --- episodes, reference returns, demonstrations -------------------------------------------------------


@dataclasses.dataclass
class Episode:
    """One played conversation: its messages, per-turn rewards and what the metrics need."""

    user_id: str
    group: str
    task_id: str
    messages: list[dict[str, str]]
    rewards: list[float]
    expected_return: float
    """Noise-free return: the answer's expected utility minus the question costs (no shaping bonus)."""
    questions: int
    satisfied: bool

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    @property
    def turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)


def play(env: ElicitationEnv, policy: Policy, seed: int, options: Mapping[str, Any] | None = None) -> Episode:
    """One episode of ``policy`` in ``env``, reset with ``seed`` (and ``options``: user_id, task_id)."""
    _, info = env.reset(seed=seed, options=dict(options or {}))
    # The policy's own randomness: per seed and conversation, so one seed over many conversations varies.
    rng = np.random.default_rng(derive_seed(seed, "policy", info["user_id"], info["task_id"]))
    rewards, expected = [], 0.0
    while True:
        _, reward, terminated, truncated, info = env.step(policy(env, info, rng))
        rewards.append(reward)
        expected += info["expected_utility"]
        if terminated or truncated:
            break
    return Episode(info["user_id"], info["group"], info["task_id"], info["messages"], rewards, expected,
                   info["questions_asked"], bool(info["satisfied"]))


def worst_return(env: ElicitationEnv) -> float:
    """The lowest expected return possible with the current user: every allowed question asked, then no
    answer at all (every style term at ``-|w_d|``, relevance at its minimum, the safety penalty)."""
    user, task = env.current_user, env._task
    assert user is not None and task is not None
    questions = env.max_turns - 1 if env.patience is None else min(env.max_turns - 1, env.patience + 1)
    worst = -float(np.sum(np.abs(user.weights))) - user.relevance_weight - user.unsafe_penalty
    return worst - env.question_cost * questions


def oracle_return(env: ElicitationEnv) -> float:
    """The expected return of :func:`oracle_reply` with the current user (no question asked)."""
    user, task = env.current_user, env._task
    assert user is not None and task is not None
    return float(user.utility([oracle_reply(env)], [task])[0])


def demonstrations(env: ElicitationEnv, n_episodes: int, seed: int, policy: Policy | None = None) -> list[Episode]:
    """Behaviour-cloning data: ``n_episodes`` conversations of ``policy`` (default: the expert), each on
    its own seed (``derive_seed(seed, "demonstration", i)``) with the env's users and tasks."""
    policy = policy or expert_policy()
    return [play(env, policy, derive_seed(seed, "demonstration", i)) for i in range(n_episodes)]


def filtered_demonstrations(env: ElicitationEnv, n_episodes: int, seed: int, keep: float = 0.1,
                            policy: Policy | None = None) -> list[Episode]:
    """Filtered-BC data: ``n_episodes`` of a noisy ``policy`` (default :func:`behaviour_policy`), of which the
    top ``keep`` share by episode return is kept (at least one), best first."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    episodes = demonstrations(env, n_episodes, seed, policy or behaviour_policy())
    ranked = sorted(episodes, key=lambda e: -e.episode_return)
    return ranked[: max(1, int(round(keep * len(ranked))))]


def sft_rows(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """TRL conversational prompt-completion rows: one per assistant turn, the conversation before it as
    the prompt and the turn as the completion (so only the assistant's words are trained on)."""
    rows = []
    for episode in episodes:
        for i, message in enumerate(episode.messages):
            if message["role"] == "assistant":
                rows.append({"prompt": [dict(m) for m in episode.messages[:i]], "completion": [dict(message)],
                             "user_id": episode.user_id, "task_id": episode.task_id, "group": episode.group})
    return rows


__all__ = [
    "DIMENSION_CUES",
    "Episode",
    "Policy",
    "behaviour_policy",
    "believed_weights",
    "best_reply",
    "candidate_replies",
    "demonstrations",
    "expert_policy",
    "filtered_demonstrations",
    "oracle_reply",
    "oracle_return",
    "play",
    "question_about",
    "random_question_policy",
    "sft_rows",
    "telling_dimensions",
    "worst_return",
]
