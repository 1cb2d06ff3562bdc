"""The discrete variants' fixed styles answer in their own words, so which style is best depends on the user."""

import collections

import numpy as np
import pytest

from envs.discrete import RESPONSE_STYLES, render_style
from envs.relevance import keyword_relevance
from envs.population import UserPopulation

SCENARIOS = ["writing", "support", "tutor", "health"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_style_answers_the_task_without_restating_it(scenario):
    population = UserPopulation(scenario, n_users=20, seed=0)
    user = population.simulated_user(population.users[0].user_id, noise=0.0)
    for task in population.tasks[::8]:
        replies = [render_style(style, task) for style in RESPONSE_STYLES]
        relevance = keyword_relevance(replies, [task.keywords] * len(replies), [user.ask(task)] * len(replies))
        assert relevance.min() >= 0.5, dict(zip(RESPONSE_STYLES, relevance.round(2)))
        assert all(task.instruction not in reply for reply in replies)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_best_style_differs_between_groups(scenario):
    population = UserPopulation(scenario, n_users=60, seed=0)
    best_by_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for profile in population.users[::2]:
        user = population.simulated_user(profile.user_id, noise=0.0)
        for task in population.tasks[::8]:
            utility = user.utility([render_style(style, task) for style in RESPONSE_STYLES], [task] * len(RESPONSE_STYLES))
            best_by_group[profile.group][RESPONSE_STYLES[int(np.argmax(utility))]] += 1
    modal = {group: counts.most_common(1)[0][0] for group, counts in best_by_group.items()}
    assert len(set(modal.values())) == len(modal), f"groups share a best style: {modal}"
