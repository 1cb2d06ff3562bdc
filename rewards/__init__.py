"""Reward models: every reward is a callable with TRL's reward-function signature.

    reward(prompts, completions, **kwargs) -> list[float | None]

``kwargs`` carry the dataset columns (``user_id``, ``task_id``, ...), so any reward plugs into TRL's
GRPO/RLOO trainers directly. Look a reward up by name in :data:`REWARDS`, or by dotted path
(``my_package.my_module:my_reward``) for your own. :func:`build_reward` binds configured parameters,
and gives ``population`` and ``report`` to rewards whose signature asks for them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rewards.text import completion_texts, length_target
from rewards.user_feedback import user_feedback


class RewardFunction(Protocol):
    __name__: str

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]: ...


REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "user_feedback": user_feedback,
    "length_target": length_target,
}


class RewardLookupError(ValueError):
    """A reward name or dotted path that cannot be resolved."""


def get_reward(name: str) -> Callable[..., list[float | None]]:
    """The reward function called ``name``: a key of :data:`REWARDS` or ``package.module:function``."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise RewardLookupError(
            f"unknown reward {name!r}; built-in rewards: {', '.join(sorted(REWARDS))}; "
            "or give your own as 'package.module:function'"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardLookupError(f"reward {name!r}: cannot import module {module_name!r} ({exc})") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardLookupError(f"reward {name!r}: module {module_name!r} has no callable {attr!r}")
    return function


def build_reward(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    population: Any = None,
    report: Callable[[str, dict[str, float]], None] | None = None,
) -> RewardFunction:
    """A ready reward: ``name`` looked up, ``params`` bound, context injected where the signature asks."""
    function = get_reward(name)
    params = dict(params or {})
    signature = inspect.signature(function)
    # Settable parameters are the named ones; **kwargs is for TRL's dataset columns, not for config.
    settable = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is not p.empty  # parameters without defaults are dataset columns (user_id, ...)
        and p.name not in ("prompts", "completions", "report", "population")
    ]
    unknown = [k for k in params if k not in settable]
    if unknown:
        raise RewardLookupError(f"reward {name!r}: unknown parameter(s) {unknown}; allowed: {settable}")
    if "population" in signature.parameters:
        params["population"] = population
    if "report" in signature.parameters and report is not None:
        params["report"] = report
    bound = functools.partial(function, **params)
    short_name = name.rsplit(":", 1)[-1]

    @functools.wraps(function)
    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        return bound(prompts, completions, **kwargs)

    reward.__name__ = short_name
    return reward


__all__ = ["REWARDS", "RewardFunction", "RewardLookupError", "build_reward", "completion_texts", "get_reward"]
