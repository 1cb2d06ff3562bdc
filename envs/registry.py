"""Which Gymnasium ids are attune environments, of which kind, and for which scenario.

:func:`register_scenario_envs` registers a scenario's two ids, the conversation environment
(``<namespace>/<Stem>-vN``) and its discrete-action variant (``<namespace>/<Stem>Discrete-vN``); the
built-ins are registered from :data:`envs.scenarios.BUILTIN_SCENARIOS` this way, and your own scenario can
be too. Any id registered with ``gymnasium.register`` works with attune when its class is a
:class:`~envs.conversation.ConversationEnv` (or a :class:`~envs.discrete.DiscreteStyleEnv`), whether its
entry point is a ``"module:Class"`` string or the class itself.
"""

from __future__ import annotations

import sys
from typing import Literal

import gymnasium
from gymnasium.envs.registration import load_env_creator

VERSION = 1
"""The version of every built-in id: bumped when the environments' behaviour changes."""

__all__ = ["VERSION", "discrete_scenario", "env_class", "env_kind", "register_scenario_envs", "registered_env_ids", "scenario_of"]


def register_scenario_envs(scenario: str, entry_point: str | type, stem: str, *, namespace: str = "attune",
                           version: int = VERSION) -> tuple[str, str]:
    """Register a scenario's conversation env and its discrete variant; returns ``(text_id, discrete_id)``."""
    text_id, discrete_id = f"{namespace}/{stem}-v{version}", f"{namespace}/{stem}Discrete-v{version}"
    # The contract tests run check_env on every id; the checker wrapper would re-check on every make.
    gymnasium.register(id=text_id, entry_point=entry_point, disable_env_checker=True)
    gymnasium.register(id=discrete_id, entry_point="envs.discrete:DiscreteStyleEnv", kwargs={"scenario": scenario},
                       disable_env_checker=True)
    return text_id, discrete_id


def env_class(env_id: str) -> type:
    """The class behind a registered id (its entry point may be a ``"module:Class"`` string or the class)."""
    entry_point = gymnasium.spec(env_id).entry_point
    return load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point


def env_kind(env_id: str) -> Literal["text", "discrete"] | None:
    """``"text"`` for a conversation env, ``"discrete"`` for a response-style variant, None for anything else.

    Raises ``gymnasium.error.Error`` (``NameNotFound``, ...) for an id nobody registered.
    """
    from envs.conversation import ConversationEnv
    from envs.discrete import DiscreteStyleEnv

    cls = env_class(env_id)
    if isinstance(cls, type) and issubclass(cls, ConversationEnv):
        return "text"
    if isinstance(cls, type) and issubclass(cls, DiscreteStyleEnv):
        return "discrete"
    return None


def registered_env_ids(kind: Literal["text", "discrete"] | None = None) -> tuple[str, ...]:
    """Every registered id whose class is attune's (of ``kind``), built-in or yours.

    Ids with a ``"module:Class"`` entry point are only looked at when the module is attune's or already
    imported: listing never imports other libraries' environments.
    """
    ids = []
    for env_id, spec in gymnasium.registry.items():
        entry = spec.entry_point
        if isinstance(entry, str) and not entry.startswith("envs.") and entry.partition(":")[0] not in sys.modules:
            continue
        try:
            found = env_kind(env_id)
        except Exception:  # noqa: BLE001 - an id whose class cannot be loaded is not one to list
            continue
        if found is not None and (kind is None or found == kind):
            ids.append(env_id)
    return tuple(ids)


def scenario_of(env_id: str) -> str:
    """The scenario name an attune id plays (``attune/Tutor-v1`` -> ``tutor``)."""
    spec = gymnasium.spec(env_id)
    if "scenario" in spec.kwargs:
        return str(spec.kwargs["scenario"])
    scenario = getattr(env_class(env_id), "scenario", None)
    if not isinstance(scenario, str):
        raise ValueError(f"{env_id!r} is not an attune environment: its class names no scenario")
    return scenario


def discrete_scenario(env_id: str) -> str:
    """The scenario of a discrete-action id; a ValueError naming the discrete ids for any other id."""
    try:
        kind = env_kind(env_id)
    except gymnasium.error.Error:
        kind = None
    if kind != "discrete":
        raise ValueError(f"{env_id!r} is not a discrete-action environment; use one of "
                         f"{', '.join(registered_env_ids('discrete'))}")
    return scenario_of(env_id)
