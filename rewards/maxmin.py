"""The egalitarian reward of MaxMin-RLHF (Chakraborty et al., 2024): per reply, the worst-off group's utility.

One reward for everyone (``user_feedback``) is maximized by the replies the *average* user likes, which is
the majority's taste when groups disagree. ``maxmin`` scores each reply by the minimum, over the user
groups, of the group's utility for it, so a policy gains only by raising the group it serves worst.

A group's utility for a reply is the hidden utility under the group's mean preference weights, over the
group's *training* users (the utility is linear in the weights, so this is the group's average utility;
held-out users are never looked at), judged against the request the row's own user made.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.population import UserPopulation
from rewards.text import completion_texts
from rewards.user_feedback import _noise

_GROUP_WEIGHTS: weakref.WeakKeyDictionary[UserPopulation, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


def group_weights(population: UserPopulation) -> dict[str, np.ndarray]:
    """Each group's mean preference weights over its training users (cached per population)."""
    cached = _GROUP_WEIGHTS.get(population)
    if cached is None:
        by_group: dict[str, list[np.ndarray]] = {}
        for user in population.train_users:
            by_group.setdefault(user.group, []).append(user.weight_vector())
        cached = _GROUP_WEIGHTS[population] = {name: np.mean(vectors, axis=0) for name, vectors in by_group.items()}
    return cached


def group_utilities(population: UserPopulation, texts: Sequence[str], user_id: Sequence[str],
                    task_id: Sequence[str]) -> dict[str, np.ndarray]:
    """Noise-free utility of each reply for each group (group -> one value per reply)."""
    weights = group_weights(population)
    out = {name: np.empty(len(texts)) for name in weights}
    for i, (text, uid, tid) in enumerate(zip(texts, user_id, task_id, strict=True)):
        task = population.task(tid)
        for name, w in weights.items():
            user = population.simulated_user(uid, noise=0.0, weights=w)
            out[name][i] = float(user.utility([text], [task])[0])
    return out


def maxmin(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    user_id: Sequence[str],
    task_id: Sequence[str],
    population: UserPopulation,
    noise: float = 0.1,
    noise_seed: int = 0,
    report: Any = None,
    **kwargs: Any,
) -> list[float | None]:
    """``min over groups g of utility_g(reply)``, plus the row user's perception noise (as ``user_feedback``).

    ``noise`` is the std of the same per-(user, reply) noise ``user_feedback`` adds (0 = noise-free), so the
    pooled and the MaxMin arms of a benchmark see equally noisy feedback. ``report`` receives each group's
    mean utility and the mean of the minimum (``rewards/maxmin/<group>``, ``rewards/maxmin/min``).
    """
    if noise < 0:
        raise ValueError(f"maxmin: noise must be >= 0, got {noise}")
    texts = completion_texts(completions, kwargs)
    if not texts:
        return []
    per_group = group_utilities(population, texts, user_id, task_id)
    worst = np.min(np.stack(list(per_group.values())), axis=0)
    if report is not None:
        report("maxmin", {**{name: float(v.mean()) for name, v in per_group.items()}, "min": float(worst.mean())})
    return [float(value) + (_noise(noise_seed, uid, text, noise) if noise > 0 else 0.0)
            for value, uid, text in zip(worst, user_id, texts)]
