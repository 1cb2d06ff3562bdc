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
import math
import numbers
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
    "maxmin": "rewards.maxmin:maxmin",
    "belief_bonus": "rewards.belief:belief_bonus",
}


class RewardLookupError(ValueError):
    """A reward name or dotted path that cannot be resolved."""


class RewardContractError(RuntimeError):
    """A user's own reward (dotted path) that raised, or returned something other than its contract."""


CONTRACT = ("a reward is called as reward(prompts, completions, **columns) and returns a list with one float "
            "(or None) per completion")


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
    if not module_name or not attr:
        raise RewardLookupError(f"reward {name!r}: give your own reward as 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardLookupError(f"reward {name!r}: cannot import module {module_name!r} ({exc})") from None
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else module_name
        raise RewardLookupError(f"reward {name!r}: module {module_name!r} has a syntax error ({exc.msg}, {where})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise RewardLookupError(
            f"reward {name!r}: importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardLookupError(f"reward {name!r}: module {module_name!r} has no callable {attr!r}")
    if not inspect.isclass(function):
        _check_reward_signature(name, function)
    return function


# What TRL passes to a reward besides prompts and completions (and attune's dataset columns): a user's
# reward may name these as parameters without defaults.
KNOWN_COLUMNS = frozenset({"completion_ids", "trainer_state", "user_id", "task_id", "group", "prompt", "env_reward",
                           "env_terms", "assistant_replies", "log_extra", "log_metric"})


def _check_reward_signature(name: str, function: Callable[..., Any]) -> None:
    """TRL calls rewards with keywords: ``prompts=``, ``completions=`` and one keyword per dataset column."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or C function: nothing to check
        return
    parameters = list(signature.parameters.values())
    takes_columns = any(p.kind is p.VAR_KEYWORD for p in parameters)
    required = [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    strange = [n for n in required if n not in ("prompts", "completions") and n not in KNOWN_COLUMNS]
    positional_only = [p.name for p in parameters if p.kind is p.POSITIONAL_ONLY]
    if not takes_columns or strange or positional_only:
        raise RewardLookupError(f"reward {name!r}: its signature is {signature}; {CONTRACT}, so it needs the "
                                "parameters prompts, completions and **kwargs")


def is_own_reward(name: str) -> bool:
    """A user's reward given by dotted path (not a built-in)."""
    return name not in REWARDS


def _settable(signature: inspect.Signature, skip_first: int) -> list[str]:
    # Settable parameters are the named ones with defaults; **kwargs carries TRL's dataset columns, and
    # parameters without defaults are columns too (user_id, task_id, ...).
    names = []
    for i, p in enumerate(signature.parameters.values()):
        if i < skip_first or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.default is p.empty:
            continue
        if p.name not in ("report", "population", "output_dir", "resolve_model", "env_factory", "private_training"):
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
    signature = inspect.signature(target.__init__ if is_class else target)
    for key, value in (params or {}).items():
        problem = _param_type_problem(signature.parameters[key].default, value)
        if problem:
            raise RewardLookupError(f"reward {name!r}: params.{key} must be {problem} (got {value!r})")
    check = getattr(target, "check_params", None) if is_class else None
    if check is not None:  # a reward model that can judge its parameters before it is built (e.g. a data file)
        try:
            check(**dict(params or {}))
        except (ValueError, TypeError) as exc:
            raise RewardLookupError(f"reward {name!r}: {exc}") from None
    if not is_class and not is_own_reward(name):
        # A built-in function checks its own parameter values when called: call it on an empty batch now,
        # rather than after the model is loaded.
        empty: dict[str, Any] = {}
        for i, p in enumerate(signature.parameters.values()):
            if i >= 2 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty:
                empty[p.name] = None if p.name == "population" else []
        if "env_factory" in signature.parameters:
            empty["env_factory"] = lambda: None
        try:
            target([], [], **empty, **dict(params or {}))
        except (ValueError, TypeError) as exc:
            raise RewardLookupError(f"reward {name!r}: {exc}") from None


def _param_type_problem(default: Any, value: Any) -> str | None:
    """A parameter whose default is a bool, an integer or a number takes a value of the same kind (finite)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, numbers.Integral):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else "an integer"
    if isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
        return None if ok else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


def build_reward(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    population: Any = None,
    report: Callable[[str, dict[str, float]], None] | None = None,
    output_dir: Any = None,
    resolve_model: Callable[[str], Any] | None = None,
    env_factory: Callable[[], Any] | None = None,
    private_training: Callable[..., Any] | None = None,
) -> RewardFunction:
    """A ready reward: ``name`` looked up, ``params`` bound, context injected where the signature asks.

    A plain function gets its parameters bound. A class (a reward model that needs building: a learned
    model, a judge, a mixture) is instantiated with them, and the instance is the reward. ``population``,
    ``report``, ``output_dir``, ``resolve_model`` (model name -> local folder) and ``private_training`` (DP-SGD
    under ``privacy.dp``, for rewards trained on users' data) are given to those that ask for them by name:
    rewards never import the policy code, the caller passes what they need.
    """
    check_reward_params(name, params)
    target = get_reward(name)
    params = dict(params or {})
    is_class = inspect.isclass(target)
    signature = inspect.signature(target.__init__ if is_class else target)
    context = {"population": population, "report": report, "output_dir": output_dir, "resolve_model": resolve_model,
               "env_factory": env_factory, "private_training": private_training}
    for key, value in context.items():
        if key in signature.parameters and (value is not None or key == "population"):
            params[key] = value
    short_name = name.rsplit(":", 1)[-1]
    if is_class:
        instance = target(**params)
        instance.__name__ = short_name
        return _checked(name, instance) if is_own_reward(name) else instance
    bound = functools.partial(target, **params)

    @functools.wraps(target)
    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        return bound(prompts, completions, **kwargs)

    reward.__name__ = short_name
    return _checked(name, reward) if is_own_reward(name) else reward


def check_reward_output(name: str, values: Any, n_completions: int) -> list[float | None]:
    """``values`` as TRL wants them (a list of floats or None, one per completion); raises
    :class:`RewardContractError` naming the reward and the contract otherwise."""
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__") or not hasattr(values, "__iter__"):
        raise RewardContractError(f"reward {name!r} returned {type(values).__name__} {_preview(values)}; {CONTRACT}")
    values = list(values)
    if len(values) != n_completions:
        raise RewardContractError(
            f"reward {name!r} returned {len(values)} values for {n_completions} completions; {CONTRACT}"
        )
    out: list[float | None] = []
    for i, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise RewardContractError(
                f"reward {name!r} returned {_preview(value)} ({type(value).__name__}) at position {i}; {CONTRACT}; "
                "use None for no reward, not nan or inf"
            )
        out.append(float(value))
    return out


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked(name: str, reward: Any) -> Any:
    """A user's reward, wrapped so that an exception or a wrong return value is one clear error naming it."""

    def checked_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        try:
            values = reward(prompts, completions, **kwargs)
        except Exception as exc:
            message = " ".join(str(exc).split())[:300]
            raise RewardContractError(f"reward {name!r} raised {type(exc).__name__}: {message}; {CONTRACT}") from exc
        return check_reward_output(name, values, len(completions))

    checked_reward.__name__ = reward.__name__
    checked_reward.__wrapped__ = reward  # type: ignore[attr-defined]
    if isinstance(getattr(reward, "summary", None), dict):
        checked_reward.summary = reward.summary  # type: ignore[attr-defined]
    return checked_reward


__all__ = [
    "REWARDS",
    "RewardFunction",
    "RewardContractError",
    "RewardLookupError",
    "build_reward",
    "check_reward_output",
    "check_reward_params",
    "completion_texts",
    "get_reward",
]
