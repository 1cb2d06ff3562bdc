"""The arguments an environment is built and reset with, checked and turned into its users, user and task,
the same way for the conversation environments and their discrete-action variants: a bad argument is a
``ValueError`` that names it and what it accepts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.population import UserPopulation
from envs.scenarios import Task
from envs.users import UserProfile


def check_integer(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    """Raise ``ValueError`` naming the argument unless ``value`` is an integer >= ``minimum`` (or None if optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                 optional: bool = False) -> None:
    """Raise ``ValueError`` naming the argument unless ``value`` is a finite number within the bounds."""
    if value is None and optional:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = " in [{}, {}]".format(minimum, maximum) if minimum is not None and maximum is not None else (
            f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be a finite number{bounds}" + (" or None" if optional else "") + f", got {value!r}")


def describe_ids(ids: Sequence[str], shown: int = 5) -> str:
    """``u0000, u0001, ...`` for an error message: all of a few ids, or the count and the first ones."""
    if len(ids) <= shown:
        return ", ".join(ids)
    return f"{len(ids)} in all, e.g. {', '.join(ids[:shown])}, ..."


def check_reset_options(options: Any, user_ids: dict[str, None], split: str, population: UserPopulation) -> None:
    """``reset(options=...)`` takes ``user_id`` (one of ``user_ids``, the env's split) and ``task_id``; anything
    else is a ValueError that lists the valid choices."""
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict such as {{'user_id': ..., 'task_id': ...}}, got {type(options).__name__}")
    unknown = sorted(set(options) - {"user_id", "task_id"}, key=str)
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; allowed: user_id, task_id")
    if "user_id" in options:
        try:
            known = options["user_id"] in user_ids
        except TypeError:  # unhashable
            known = False
        if not known:
            raise ValueError(f"user_id {options['user_id']!r} is not in the {split!r} split of this environment; "
                             f"its users: {describe_ids(list(user_ids))}")
    if "task_id" in options:
        ids = [t.task_id for t in population.tasks]
        if not isinstance(options["task_id"], str) or options["task_id"] not in ids:
            raise ValueError(f"unknown task_id {options['task_id']!r} in scenario {population.scenario_name!r}; "
                             f"its tasks: {describe_ids(ids)}")


def env_population(population: Any, scenario: str | None, split: Any, n_users: Any, population_seed: Any) -> UserPopulation:
    """The users an environment draws from: ``population`` when one is given (of ``scenario``, when that is
    not None), else ``n_users`` users of ``scenario`` drawn with ``population_seed``; ``split`` must name
    one of its splits."""
    if split not in ("train", "held_out", "all"):
        raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")
    if population is None:
        check_integer("n_users", n_users, 2)
        check_integer("population_seed", population_seed, 0)
        return UserPopulation(scenario, n_users, seed=population_seed)
    if not isinstance(population, UserPopulation):
        raise ValueError(f"population must be an envs.population.UserPopulation, got {type(population).__name__}")
    if scenario is not None and population.scenario_name != scenario:
        raise ValueError(f"this environment's users come from scenario {scenario!r}, "
                         f"but the population given is {population.scenario_name!r}")
    return population


def episode_user_and_task(options: dict[str, Any] | None, users: Sequence[UserProfile], user_ids: dict[str, None],
                          split: str, population: UserPopulation, rng: np.random.Generator) -> tuple[str, Task]:
    """The user id and task of a new episode: those named in ``reset``'s ``options``, else drawn with ``rng``
    (the user first, then the task) from ``users`` (the env's split, ``user_ids`` their ids) and the tasks."""
    options = options or {}
    check_reset_options(options, user_ids, split, population)
    if "user_id" in options:
        user_id = options["user_id"]
    else:
        user_id = users[int(rng.integers(len(users)))].user_id
    if "task_id" in options:
        return user_id, population.task(options["task_id"])
    return user_id, population.tasks[int(rng.integers(len(population.tasks)))]
