"""Rewards that come from the simulated users themselves."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.population import UserPopulation
from rewards.text import completion_texts

FEEDBACK = ("utility", "expected_utility", "rating", "env")
"""What ``user_feedback``'s ``feedback`` parameter takes: the user's feedback, as ``env.feedback`` names the env's."""


def _noise(seed: int, user_id: str, text: str, std: float) -> float:
    # A pure function of (seed, user, reply): the same user always perceives the same reply the same way.
    key = zlib.crc32(f"{seed}\x00{user_id}\x00{text}".encode("utf-8", "surrogatepass"))
    return float(np.random.default_rng(key).normal(0.0, std))


def user_feedback(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    user_id: Sequence[str],
    task_id: Sequence[str],
    population: UserPopulation,
    feedback: str = "utility",
    noise: float = 0.1,
    noise_seed: int = 0,
    report: Callable[[str, dict[str, float]], None] | None = None,
    env_factory: Callable[[], Any] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """The simulated user's own feedback on each completion, for the row's ``user_id`` and ``task_id``.

    ``feedback``: ``utility`` (the user's noisy hidden utility), ``expected_utility`` (noise-free) or
    ``rating`` (Likert 1..5 of the noisy utility, mapped to ``(rating - 3) / 2``), or ``env``: the
    environment's own feedback channel (``env.feedback`` in the config: rating, utility, pairwise,
    critique or implicit, with its noise and unreliable users), one ``reset`` + ``step`` per reply, seeded
    by the reply so the reward stays a pure function. When a multi-turn
    rollout already collected the environment's feedback (``env_reward`` column, with the episodes' mean
    utility terms in ``env_terms``), that is returned as is.
    ``report`` receives the mean utility terms (per style dimension and relevance) of the batch.
    """
    if feedback not in FEEDBACK:
        raise ValueError(f"user_feedback: feedback must be one of {FEEDBACK}, got {feedback!r}")
    if kwargs.get("env_reward") is not None:
        env_terms = kwargs.get("env_terms")
        if report is not None and env_terms:
            report("user_feedback", {k: sum(t[k] for t in env_terms) / len(env_terms) for k in env_terms[0]})
        return [float(r) for r in kwargs["env_reward"]]
    texts = completion_texts(completions, kwargs)
    if feedback == "env":
        if env_factory is None:
            raise ValueError("user_feedback: feedback 'env' needs env_factory (the runner passes it)")
        values, term_rows = [], []
        env = env_factory()
        for text, uid, tid in zip(texts, user_id, task_id, strict=True):
            env.reset(seed=zlib.crc32(f"{noise_seed}\x00{uid}\x00{tid}\x00{text}".encode("utf-8", "surrogatepass")),
                      options={"user_id": uid, "task_id": tid})
            _, reward, _, _, info = env.step(text)
            values.append(float(reward))
            term_rows.append(info["terms"])
        if report is not None and term_rows:
            report("user_feedback", {k: sum(t[k] for t in term_rows) / len(term_rows) for k in term_rows[0]})
        return values
    rewards: list[float | None] = []
    term_sums: dict[str, float] = {}
    for text, uid, tid in zip(texts, user_id, task_id, strict=True):
        user = population.simulated_user(uid, noise=noise)
        terms = user.utility_terms([text], [population.task(tid)])
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + float(value[0])
        expected = float(sum(v[0] for v in terms.values()))
        if feedback == "expected_utility":
            rewards.append(expected)
            continue
        noisy = expected + (_noise(noise_seed, uid, text, noise) if noise > 0 else 0.0)
        if feedback == "rating":
            rewards.append((float(user.rating(np.array([noisy]))[0]) - 3.0) / 2.0)
        else:
            rewards.append(noisy)
    if report is not None and texts:
        report("user_feedback", {k: v / len(texts) for k, v in term_sums.items()})
    return rewards
