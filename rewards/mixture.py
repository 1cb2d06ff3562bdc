"""Mixtures of reward models: a weighted sum, and users as their own mixtures of reward models.

``mixture`` adds its components with fixed weights. ``user_mixture`` gives every user their own weights
over the components, drawn from a Dirichlet distribution seeded by the user id (as PersonalLLM models
users as mixtures of reward models): a population whose tastes differ in how they trade off the same
criteria. Both report each component's mean as a term, ``rewards/<mixture>/<component>``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rewards.combine import reward_matrix, weighted_sum


def _build_components(components: Sequence[dict[str, Any]], population: Any, output_dir: Any,
                      resolve_model: Any = None) -> list[tuple[str, Any, float]]:
    from rewards import build_reward

    if not components:
        raise ValueError("a mixture needs components: [{name: ..., weight: ..., params: {...}}, ...]")
    built = []
    for i, spec in enumerate(components):
        unknown = set(spec) - {"name", "weight", "params"}
        if "name" not in spec or unknown:
            raise ValueError(f"mixture component {i}: give name, and optionally weight and params (got {sorted(spec)})")
        reward = build_reward(spec["name"], spec.get("params"), population=population, output_dir=output_dir,
                              resolve_model=resolve_model)
        built.append((str(spec["name"]).rsplit(":", 1)[-1], reward, float(spec.get("weight", 1.0))))
    return built


def _scores(components: list[tuple[str, Any, float]], prompts: Any, completions: Any, kwargs: dict[str, Any]) -> np.ndarray:
    return reward_matrix([reward for _, reward, _ in components], prompts, completions, **kwargs)


class Mixture:
    """``sum_i weight_i * reward_i``; a component returning None for a reply counts as 0 for it."""

    def __init__(
        self,
        components: Sequence[dict[str, Any]] = (),
        population: Any = None,
        report: Callable[[str, dict[str, float]], None] | None = None,
        output_dir: Any = None,
        resolve_model: Any = None,
    ) -> None:
        self.components = _build_components(components, population, output_dir, resolve_model)
        self.report = report
        self.__name__ = "mixture"

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float | None]:
        scores = _scores(self.components, prompts, completions, kwargs)
        weights = np.array([w for _, _, w in self.components])
        if self.report is not None and len(scores):
            self.report(self.__name__, {name: float(np.nanmean(scores[:, i])) for i, (name, _, _) in enumerate(self.components)})
        return weighted_sum(scores, weights).tolist()


class UserMixture:
    """Each user weighs the components differently: weights ~ Dirichlet(concentration), seeded by user id."""

    def __init__(
        self,
        components: Sequence[dict[str, Any]] = (),
        concentration: float = 1.0,
        seed: int = 0,
        population: Any = None,
        report: Callable[[str, dict[str, float]], None] | None = None,
        output_dir: Any = None,
        resolve_model: Any = None,
    ) -> None:
        if concentration <= 0:
            raise ValueError(f"user_mixture: concentration must be > 0, got {concentration}")
        self.components = _build_components(components, population, output_dir, resolve_model)
        self.concentration = concentration
        self.seed = seed
        self.report = report
        self.__name__ = "user_mixture"

    def user_weights(self, user_id: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(user_id.encode())])
        return rng.dirichlet([self.concentration] * len(self.components))

    def __call__(self, prompts: Any, completions: Any, user_id: Sequence[str], **kwargs: Any) -> list[float | None]:
        scores = _scores(self.components, prompts, completions, {"user_id": user_id, **kwargs})
        weights = np.array([self.user_weights(uid) for uid in user_id])
        if self.report is not None and len(scores):
            self.report(self.__name__, {name: float(np.nanmean(scores[:, i])) for i, (name, _, _) in enumerate(self.components)})
        return weighted_sum(scores, weights).tolist()
