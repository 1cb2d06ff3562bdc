"""The users' past choices: K candidate replies to a request, and how the user ranked them.

PersonalLLM (Zollo et al., ICLR 2025) gives every prompt several high-quality replies from different
models, and every simulated user a history of past prompts with the replies they preferred. The miniature
here: a request's K = 8 candidates are the eight fixed response styles of the discrete-action envs
(:func:`envs.discrete.render_style`: brief, formal, bulleted, warm, ...), each answering the task in its own
words; the user ranks them by Plackett-Luce with their own Bradley-Terry temperature (their noise-free
hidden utility over the temperature, plus Gumbel noise). The top of the ranking is the reply the user
*chose* (the winner); the bottom is the one they liked least (the loser).

Histories are deterministic in (population seed, user, length): every method and metric sees the same
past. Everything here is numpy: it imports without torch.

>>> from envs.population import UserPopulation
>>> population = UserPopulation("writing", n_users=6, seed=0, dirichlet_alpha=0.3)
>>> past = choice_history(population, "u0000", 3)
>>> len(past), len(past[0].candidates), past[0].winner == past[0].candidates[past[0].ranking[0]]
(3, 8, True)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from envs.discrete import RESPONSE_STYLES, render_style
from envs.population import UserPopulation
from envs.scenarios import Task
from envs.seeding import seed_sequence

K_CANDIDATES = len(RESPONSE_STYLES)
"""Candidate replies per request (PersonalLLM's eight responses per prompt)."""


@functools.lru_cache(maxsize=4096)
def candidate_replies(task: Task) -> tuple[str, ...]:
    """The K candidate replies to ``task``: one per response style, in :data:`~envs.discrete.RESPONSE_STYLES` order."""
    return tuple(render_style(style, task) for style in RESPONSE_STYLES)


@dataclasses.dataclass(frozen=True)
class PastChoice:
    """One past request of a user: the K candidates they were shown and their ranking (best first)."""

    task_id: str
    request: str
    candidates: tuple[str, ...]
    ranking: tuple[int, ...]

    @property
    def chosen(self) -> int:
        return self.ranking[0]

    @property
    def winner(self) -> str:
        """The reply the user chose."""
        return self.candidates[self.ranking[0]]

    @property
    def loser(self) -> str:
        """The reply the user ranked last."""
        return self.candidates[self.ranking[-1]]


def choice_history(population: UserPopulation, user_id: str, length: int) -> list[PastChoice]:
    """The user's ``length`` past requests (distinct tasks) with their rankings of the K candidates.

    A longer history extends a shorter one: its first ``n`` choices are ``choice_history(..., n)``.
    """
    return list(_history(population, user_id, max(length, 0)))


@functools.lru_cache(maxsize=65536)
def _history(population: UserPopulation, user_id: str, length: int) -> tuple[PastChoice, ...]:
    user = population.simulated_user(user_id)
    rng = np.random.default_rng(seed_sequence(population.seed, "choice-history", int(user_id.lstrip("u"))))
    order = rng.permutation(len(population.tasks))
    past = []
    for i in order[: min(length, len(order))]:
        task = population.tasks[int(i)]
        candidates = candidate_replies(task)
        utilities = user.utility(list(candidates), [task] * len(candidates))
        temperature = max(user.choice_temperature, 1e-9)
        ranking = np.argsort(-(utilities / temperature + rng.gumbel(size=len(candidates))), kind="stable")
        past.append(PastChoice(task.task_id, user.ask(task), candidates, tuple(int(r) for r in ranking)))
    return tuple(past)
