"""CURIO's belief-shaping bonus: reward a conversation for what it taught the assistant about the user.

Wan et al., 2025, "Enhancing Personalized Multi-Turn Dialogue with Curiosity Reward"
(https://arxiv.org/abs/2504.03206) reward each turn by the improvement of a user model's belief in the
user's true type. Here the user model is exact: the simulated users' own generative model, updated by
Bayes' rule with the answers the user gave (:func:`envs.elicitation.belief_trajectory`). Each answered
question earns ``gamma * P(true group | answers after) - P(before)``: shaping with potential P(true group)
(Ng et al., 1999). The episode's potential is not reset to 0 at its end, so with ``gamma = 1`` the bonus
telescopes to the final posterior of the true group minus its prior: it pays for identifying the user (on
top of the env's reward for the answer), which is CURIO's intent, rather than leaving the optimal policy
unchanged. Weight it against the question cost: at ``weight * (1 - prior)`` above the total cost of the
questions that identify the group, asking pays even where the answer would not gain from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from envs.elicitation import QUESTION_MAX_WORDS, belief_trajectory, is_question, shaping_bonus
from envs.population import UserPopulation
from rewards.text import completion_texts


def belief_bonus(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    user_id: Sequence[str],
    population: UserPopulation | None,
    gamma: float = 1.0,
    log_probability: bool = False,
    question_max_words: int = QUESTION_MAX_WORDS,
    report: Callable[[str, dict[str, float]], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Sum over the episode's answered questions of ``gamma * P(true group | answers) - P(before)``.

    The questions are the assistant's turns of a multi-turn rollout (``assistant_replies`` column) that
    came before its last turn and are questions by the env's rule (:func:`envs.elicitation.is_question`
    with ``question_max_words``): the last turn is the answer, or a question nobody answered. Without the
    column (single-turn training) nothing was answered and the bonus is 0. ``log_probability``: the
    potential is log P (CURIO's log-accuracy variant). ``report`` gets the batch's mean final posterior of
    the true group (``true_group_probability``) and mean questions answered (``questions``).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"belief_bonus: gamma must be in [0, 1], got {gamma!r}")
    if isinstance(question_max_words, bool) or not isinstance(question_max_words, int) or question_max_words < 1:
        raise ValueError(f"belief_bonus: question_max_words must be an integer >= 1, got {question_max_words!r}")
    if not completions:
        return []
    if population is None:
        raise ValueError("belief_bonus needs the user population (the runner passes it; pass population=...)")
    # A column, not a setting: it arrives in kwargs (as TRL passes every dataset and rollout column).
    replies_column = kwargs.get("assistant_replies")
    episodes = replies_column if replies_column is not None else [[t] for t in completion_texts(completions)]
    bonuses: list[float | None] = []
    finals, counts = [], []
    for uid, replies in zip(user_id, episodes, strict=True):
        questions = [r for r in list(replies)[:-1] if is_question(r, question_max_words)]
        trajectory = belief_trajectory(population, uid, questions)
        bonuses.append(sum(shaping_bonus(a, b, gamma, log_probability) for a, b in zip(trajectory, trajectory[1:])))
        finals.append(trajectory[-1])
        counts.append(len(questions))
    if report is not None:
        report("belief_bonus", {"true_group_probability": sum(finals) / len(finals),
                                "questions": sum(counts) / len(counts)})
    return bonuses
