"""Populations of simulated users: seeded preference groups, traits, the users' own texts, a held-out split.

Users come from preference groups (a centre plus Gaussian spread, the default) or, with ``dirichlet_alpha``,
from a Dirichlet mixture in the manner of PersonalLLM (Zollo et al., ICLR 2025), which draws each simulated
user as a Dirichlet-weighted blend of reward models: here the "reward models" are the 2·D archetypal users
who each want one of the scenario's D style dimensions at one end (more brevity, less brevity, ...). A
user's mixture ``p ~ Dirichlet(alpha)`` over those 2·D archetypes gives the weight ``w_d = p_{d+} - p_{d-}``.
Small ``alpha`` makes most users lean on one archetype (strong, diverse preferences); large ``alpha`` blends
them all into mild, similar users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.personal_data import personal_data, personal_notes
from envs.scenarios import Task, UserGroup, get_scenario
from envs.style_text import phrase_request, write_in_style
from envs.users import HISTORY_REQUESTS, HISTORY_SAMPLES, SimulatedUser, UserProfile

DIRICHLET_GROUP = "dirichlet"
"""The one group of a population drawn with ``dirichlet_alpha``."""


class UserPopulation:
    """A seeded population of simulated users in preference groups, with a held-out split.

    Args:
        scenario: name of the application scenario (``writing``); gives groups, tasks and topics.
        n_users: number of users in the population.
        held_out_fraction: share of each group kept for evaluation only (never used in training).
        seed: the same seed gives the same users, weights, traits, histories (with their fake personal data,
            see :mod:`envs.personal_data`) and split.
        groups: override the scenario's preference groups.
        dirichlet_alpha: draw each user's weights from a Dirichlet(alpha) mixture of the style dimensions'
            archetypes (see the module docstring) instead of from groups; the users form one group,
            ``dirichlet``. Cannot be combined with ``groups``.

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
        dirichlet_alpha: float | None = None,
    ) -> None:
        if n_users < 2:
            raise ValueError(f"n_users must be at least 2 (one train, one held-out), got {n_users}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be strictly between 0 and 1, got {held_out_fraction}")
        self.scenario = get_scenario(scenario)
        self.scenario_name = scenario
        self.dirichlet_alpha = dirichlet_alpha
        if dirichlet_alpha is not None:
            if not dirichlet_alpha > 0:
                raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
            if groups is not None:
                raise ValueError("dirichlet_alpha draws every user from one Dirichlet mixture, so groups would be "
                                 "ignored; set users.groups or users.dirichlet_alpha, not both")
            groups = (UserGroup(DIRICHLET_GROUP, 1.0, {}, spread=0.0),)
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
        if self.dirichlet_alpha is not None:
            mixture = rng.dirichlet(np.full(2 * len(dimensions), self.dirichlet_alpha))
            weights = mixture[: len(dimensions)] - mixture[len(dimensions):]
        else:
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
            write_in_style(topic, preference_weights, sample_rng) for topic in chosen[:HISTORY_SAMPLES]
        )
        # Personal data (fake) comes from a Faker seeded on a stream of its own: the draws above are unchanged.
        details = personal_data(self.seed, index)
        history += personal_notes(details, preference_weights)
        return UserProfile(f"u{index:04d}", group.name, preference_weights, traits, history, details)

    @classmethod
    def from_weights(
        cls,
        scenario: str,
        people: Sequence[tuple[str, str, Mapping[str, float]]],
        held_out_fraction: float = 0.2,
        seed: int = 0,
    ) -> "UserPopulation":
        """A population of given users: ``(user_id, group, preference_weights)`` each (e.g. real people with
        weights fitted to their choices, :mod:`envs.people`), with a seeded held-out split of at least one user
        and their own texts written in their style, as sampled users have.

        >>> population = UserPopulation.from_weights("writing", [("p0001", "concise_professional", {"brevity": 0.9}),
        ...                                                      ("p0002", "warm_detailed", {"warmth": 0.7})])
        >>> len(population.train_users), len(population.held_out_users), population.user("p0001").preference_weights["brevity"]
        (1, 1, 0.9)
        """
        if len(people) < 2:
            raise ValueError(f"a population needs at least 2 users (one train, one held-out), got {len(people)}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be strictly between 0 and 1, got {held_out_fraction}")
        self = cls.__new__(cls)
        self.scenario = get_scenario(scenario)
        self.scenario_name = scenario
        self.dirichlet_alpha = None
        self.seed = seed
        self.tasks = self.scenario.tasks
        self._task_index = {t.task_id: t for t in self.tasks}
        dimensions = self.scenario.dimensions
        names = [group for _, group, _ in people]
        known = {g.name: g for g in self.scenario.groups}
        self.groups = tuple(known.get(name, UserGroup(name, 1.0, {}, spread=0.0)) for name in dict.fromkeys(names))
        users = []
        for index, (user_id, group, weights) in enumerate(people):
            unknown = set(weights) - set(dimensions)
            if unknown:
                raise ValueError(f"user {user_id!r}: dimension(s) {sorted(unknown)} are not used in scenario "
                                 f"{scenario!r}; its dimensions: {', '.join(dimensions)}")
            preference_weights = {d: float(np.clip(weights.get(d, 0.0), -1.0, 1.0)) for d in dimensions}
            rng = np.random.default_rng([seed, index, 11])
            topics = rng.choice(len(self.scenario.history_topics), size=HISTORY_REQUESTS, replace=False)
            chosen = [self.scenario.history_topics[t] for t in sorted(topics.tolist())]
            history = tuple(phrase_request(topic, preference_weights) for topic in chosen) + tuple(
                write_in_style(topic, preference_weights, rng) for topic in chosen[:3])
            users.append(UserProfile(user_id, group, preference_weights, {}, history))
        if len({u.user_id for u in users}) != len(users):
            raise ValueError("user ids must be unique")
        n_held = min(max(int(round(len(users) * held_out_fraction)), 1), len(users) - 1)
        held_out = {users[k].user_id for k in np.random.default_rng(seed).permutation(len(users))[:n_held]}
        self.users = tuple(users)
        self._by_id = {u.user_id: u for u in users}
        self.train_users = tuple(u for u in users if u.user_id not in held_out)
        self.held_out_users = tuple(u for u in users if u.user_id in held_out)
        return self

    def __len__(self) -> int:
        return len(self.users)

    def user(self, user_id: str) -> UserProfile:
        try:
            return self._by_id[user_id]
        except KeyError:
            raise KeyError(
                f"unknown user_id {user_id!r}; this population has ids {self.users[0].user_id}..{self.users[-1].user_id}"
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
