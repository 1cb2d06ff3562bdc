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

from rewards.text import completion_texts, keyword_coverage, length_target, readability, structure
from rewards.user_feedback import user_feedback


class RewardFunction(Protocol):
    __name__: str

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]: ...


def _lazy(module: str, attr: str) -> Any:
    # Heavy reward models (torch, sentence-transformers) load only when a config asks for them.
    return importlib.import_module(module).__dict__[attr]


REWARDS: dict[str, Any] = {
    "user_feedback": user_feedback,
    "length_target": length_target,
    "keyword_coverage": keyword_coverage,
    "readability": readability,
    "structure": structure,
    "embedding_similarity": "rewards.embedding:embedding_similarity",
    "learned_reward_model": "rewards.learned:LearnedRewardModel",
    "llm_judge": "rewards.judge:LLMJudge",
    "mixture": "rewards.mixture:Mixture",
    "user_mixture": "rewards.mixture:UserMixture",
}


class RewardLookupError(ValueError):
    """A reward name or dotted path that cannot be resolved."""


def get_reward(name: str) -> Callable[..., list[float | None]]:
    """The reward function called ``name``: a key of :data:`REWARDS` or ``package.module:function``."""
    if name in REWARDS:
        entry = REWARDS[name]
        return _lazy(*entry.split(":")) if isinstance(entry, str) else entry
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


def _settable(signature: inspect.Signature, skip_first: int) -> list[str]:
    # Settable parameters are the named ones with defaults; **kwargs carries TRL's dataset columns, and
    # parameters without defaults are columns too (user_id, task_id, ...).
    names = []
    for i, p in enumerate(signature.parameters.values()):
        if i < skip_first or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.default is p.empty:
            continue
        if p.name not in ("report", "population", "output_dir", "resolve_model", "env_factory"):
            names.append(p.name)
    return names


def check_reward_params(name: str, params: Mapping[str, Any] | None) -> None:
    """Raise :class:`RewardLookupError` for an unknown reward or parameter, without building anything."""
    target = get_reward(name)
    is_class = inspect.isclass(target)
    settable = _settable(inspect.signature(target.__init__ if is_class else target), skip_first=1 if is_class else 2)
    unknown = [k for k in (params or {}) if k not in settable]
    if unknown:
        raise RewardLookupError(f"reward {name!r}: unknown parameter(s) {unknown}; allowed: {settable}")


def build_reward(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    population: Any = None,
    report: Callable[[str, dict[str, float]], None] | None = None,
    output_dir: Any = None,
    resolve_model: Callable[[str], Any] | None = None,
    env_factory: Callable[[], Any] | None = None,
) -> RewardFunction:
    """A ready reward: ``name`` looked up, ``params`` bound, context injected where the signature asks.

    A plain function gets its parameters bound. A class (a reward model that needs building: a learned
    model, a judge, a mixture) is instantiated with them, and the instance is the reward. ``population``,
    ``report``, ``output_dir`` and ``resolve_model`` (model name -> local folder) are given to those that
    ask for them by name: rewards never import the policy code, the caller passes what they need.
    """
    check_reward_params(name, params)
    target = get_reward(name)
    params = dict(params or {})
    is_class = inspect.isclass(target)
    signature = inspect.signature(target.__init__ if is_class else target)
    context = {"population": population, "report": report, "output_dir": output_dir, "resolve_model": resolve_model,
               "env_factory": env_factory}
    for key, value in context.items():
        if key in signature.parameters and (value is not None or key == "population"):
            params[key] = value
    short_name = name.rsplit(":", 1)[-1]
    if is_class:
        instance = target(**params)
        instance.__name__ = short_name
        return instance
    bound = functools.partial(target, **params)

    @functools.wraps(target)
    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        return bound(prompts, completions, **kwargs)

    reward.__name__ = short_name
    return reward


__all__ = [
    "REWARDS",
    "RewardFunction",
    "RewardLookupError",
    "build_reward",
    "check_reward_params",
    "completion_texts",
    "get_reward",
]
