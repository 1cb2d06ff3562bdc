"""Application scenarios: what a population of simulated users is made of.

A :class:`Scenario` names its preference groups (:class:`UserGroup`), its tasks (:class:`Task`), the
topics of its users' own texts and its visible traits. The four built-in scenario modules
(``envs/writing_assistant.py``, ...) each define a ``SCENARIO``; :func:`register_scenario` adds your own.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping

from envs.features import ALL_DIMENSIONS, STYLE_DIMENSIONS

STRONG_PREFERENCE = 0.3
"""A preference weight at least this large (in absolute value, weights are in [-1, 1]) is a strong one:
users state it in words, their requests and writing samples show it."""

BUILTIN_SCENARIOS: tuple[tuple[str, str, str, str], ...] = (
    # (scenario name, its module, the module's ConversationEnv class, the stem of its env ids)
    ("writing", "envs.writing_assistant", "WritingAssistantEnv", "WritingAssistant"),
    ("support", "envs.customer_support", "CustomerSupportEnv", "CustomerSupport"),
    ("tutor", "envs.tutor", "TutorEnv", "Tutor"),
    ("health", "envs.health_coach", "HealthCoachEnv", "HealthCoach"),
)
"""The one table of built-in scenarios: each module defines its ``SCENARIO`` and its environment class;
:mod:`envs` registers ``attune/<Stem>-vN`` and ``attune/<Stem>Discrete-vN`` for every row."""

# Looked up lazily (a string until first use) to keep imports one-way; users add theirs with
# `register_scenario`.
SCENARIOS: dict[str, "str | Scenario"] = {name: f"{module}:SCENARIO" for name, module, _, _ in BUILTIN_SCENARIOS}


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
