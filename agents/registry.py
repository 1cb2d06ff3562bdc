"""The method registry: the :class:`Method` protocol, :class:`MethodSpec`, :data:`METHODS` and their helpers.

Every method ``method:`` accepts, LLM methods and baselines alike, is registered here (see :mod:`agents`
for what a method is and the jobs it gets); the config's ``method:`` field, ``attune run --help`` and the
runner read :data:`METHODS`. Imported by ``agents`` and re-exported there, so ``from agents import
register_method, MethodSpec`` is the public way in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from agents import TrainingJob

MethodKind = Literal["llm", "baseline"]


class TrainerSettingsError(ValueError):
    """A ``trainer.<field>`` setting the method's TRL config does not accept."""


class MethodSettings(BaseModel):
    """Base of every method's typed ``method_settings:``. Unknown keys and bad values are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, settings: Any) -> Any:
        """``settings`` (a mapping, e.g. the config's ``method_settings:``) validated, defaults filled in.

        Errors are one :class:`TrainerSettingsError` naming ``method_settings.<field>``, what is allowed
        and what was given.
        """
        return _validate_settings(cls, settings)


def _validate_settings(model: type[MethodSettings], settings: Any) -> MethodSettings:
    if isinstance(settings, model):
        return settings
    try:
        return model.model_validate(dict(settings or {}))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields: its message starts with the field it is about
            field, _, message = message.partition(": ")
            raise TrainerSettingsError(f"method_settings.{field}: {message}") from None
        if error["type"] == "extra_forbidden":
            # The method's own settings first, then those it shares with other methods (inherited).
            own = [name for name in vars(model).get("__annotations__", {}) if name in model.model_fields]
            fields = own + [name for name in model.model_fields if name not in own]
            allowed = f"allowed: {', '.join(fields)}" if fields else "it has none"
            raise TrainerSettingsError(f"method_settings.{field}: not a setting of this method; {allowed}") from None
        raise TrainerSettingsError(f"method_settings.{field}: {message} (got {error.get('input')!r})") from None



@dataclasses.dataclass
class BaselineJob:
    """Everything a ``kind="baseline"`` method needs, built by ``experiments.baselines`` from the config."""

    env_config: dict[str, Any]
    """The :class:`~envs.discrete.DiscreteStyleEnv` config: ``scenario``, ``n_users``, ``population_seed``,
    ``noise``, ``feedback`` (no ``split``: train on ``train``, evaluate on ``held_out``)."""
    seed: int
    method_settings: Any
    """The method's validated ``settings`` (or a mapping its ``settings.of`` validates)."""
    output_dir: Path
    """The run folder: the method may write its own files under it."""
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    """``log(metrics, step)``: training metrics (reward, regret, ...) into ``metrics.jsonl`` and W&B."""
    local_ray: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    """A context manager that keeps a local Ray running inside it (the runner's offline one), for Ray users."""


@runtime_checkable
class Method(Protocol):
    """One training method or baseline, as the registry holds it (torchtune's recipe protocol, in spirit).

    :class:`MethodSpec` is the ready-made implementation; any object with these members will do.
    """

    name: str
    """What the config's ``method:`` calls it: letters, digits and ``_``."""
    description: str
    """One line for ``attune run --help`` and the docs."""
    kind: MethodKind
    """``"llm"``: ``train(TrainingJob)`` adapts the policy LLM on a conversation env and returns the model or a
    :class:`TrainedPolicy`. ``"baseline"``: ``train(BaselineJob)`` learns on a discrete variant and returns
    ``{"policy": summary, "random": summary}`` on held-out users (or None), each summary holding
    ``mean_reward``, ``mean_regret``, ``oracle_action_rate`` (see :func:`agents.discrete_eval.summarize`)."""
    settings: type[MethodSettings]
    """The typed ``method_settings:`` (``MethodSettings`` itself: it takes none)."""
    multi_turn: bool
    """Trains on (or serves) conversations of several turns; otherwise ``env.max_turns`` must be 1."""
    resumable: bool
    """Continues from a checkpoint with ``resume=true``."""
    uses_prompts: bool
    """Draws ``prompts`` training prompts from env resets of the training users (checked before the run)."""
    trainer_defaults: Mapping[str, Any]
    """attune's defaults for its TRL config (shown in the help; ``trainer:`` overrides them)."""

    def check_trainer_settings(self, settings: dict[str, Any], output_dir: Path, seed: int) -> None:
        """Raise :class:`TrainerSettingsError` for ``trainer:`` settings the method cannot take."""
        ...

    def train(self, job: Any) -> Any:
        """Train on a :class:`TrainingJob` (``kind="llm"``) or a :class:`BaselineJob` (``kind="baseline"``)."""
        ...


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A :class:`Method` from its parts; each method file ends with one, e.g.
    ``METHOD = MethodSpec(name="grpo", description=..., train=train, multi_turn=True, ...)``."""

    name: str
    description: str
    train: Callable[[Any], Any]
    kind: MethodKind = "llm"
    settings: type[MethodSettings] = MethodSettings
    multi_turn: bool = False
    resumable: bool = False
    uses_prompts: bool = True
    trainer_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check_trainer: Callable[[dict[str, Any], Path, int], None] | None = None
    """Validates ``trainer:`` (usually by building the TRL config); without one, ``trainer:`` must be empty."""
    check_privacy: Callable[[Any, Any, dict[str, Any], Any], None] | None = None
    """``check_privacy(dp, method_settings, trainer_settings, population)``: the method trains with differential
    privacy when ``privacy.dp`` is set (``TrainingJob.privacy``), and this raises :class:`TrainerSettingsError` for
    settings it cannot train privately with. None: the method does not support ``privacy.dp``."""
    check_population: Callable[[Any, Any], None] | None = None
    """Optional ``check_population(settings, population)``: raise :class:`TrainerSettingsError` for settings the
    users cannot serve (e.g. more clients a round than there are users), before the run starts."""

    def check_trainer_settings(self, settings: dict[str, Any], output_dir: Path, seed: int) -> None:
        if self.check_trainer is not None:
            self.check_trainer(settings, output_dir, seed)
        elif settings:
            raise TrainerSettingsError(f"trainer.{next(iter(settings))}: method {self.name} takes no trainer "
                                       "settings; remove the trainer: block")


METHODS: dict[str, Method | str] = {
    "grpo": "agents.grpo:METHOD",
    "rloo": "agents.rloo:METHOD",
    "ppo": "agents.ppo:METHOD",
    "dpo": "agents.dpo:METHOD",
    "online_dpo": "agents.online_dpo:METHOD",
    "sft": "agents.sft:METHOD",
    "federated": "agents.federated:METHOD",
    "bc": "agents.bc:METHOD",
    "prompting": "agents.prompting:METHOD",
    "kshot": "agents.kshot:METHOD",
    "fit_rerank": "agents.rerank:METHOD",
    "linucb": "agents.bandit:METHOD",
    "rllib_ppo": "agents.rllib:PPO_METHOD",
    "rllib_dqn": "agents.rllib:DQN_METHOD",
}
"""Every method ``method:`` accepts, LLM methods and baselines alike: name -> the :class:`Method`, or where it
lives (``"module:attribute"``, imported when first asked for, so listing names imports nothing)."""

_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MethodLookupError(ValueError):
    """A ``method:`` that names no registered method and no importable one."""


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` under its name (a name registered before is replaced); returns it.

    Call it at the top level of your module, then name the method as ``method: your_module:name``.
    """
    if not isinstance(method, Method):
        missing = [m for m in _protocol_members() if not hasattr(method, m)]
        raise TypeError(f"register_method: {method!r} is not a Method; it lacks {', '.join(missing)}")
    if not _METHOD_NAME.fullmatch(method.name):
        raise ValueError(f"register_method: method name {method.name!r}: use letters, digits and _ only")
    if method.kind not in ("llm", "baseline"):
        raise ValueError(f"register_method: method {method.name}: kind must be 'llm' or 'baseline', got {method.kind!r}")
    METHODS[method.name] = method
    return method


def _protocol_members() -> list[str]:
    return [*Method.__annotations__, "check_trainer_settings", "train"]


def method_names() -> tuple[str, ...]:
    """Every name ``method:`` accepts, in registration order (the LLM methods, then the baselines)."""
    return tuple(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``: a key of :data:`METHODS`, or ``package.module:name`` (that module is
    imported; ``name`` is an attribute of it, or a method it registered)."""
    entry = METHODS.get(name)
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        entry = METHODS[name] = getattr(importlib.import_module(module_name), attr)
    if entry is not None:
        return entry
    if ":" not in name:
        raise MethodLookupError(f"unknown method {name!r}; available: {', '.join(METHODS)}; or your own as "
                                "'package.module:name'")
    module_name, _, attr = name.partition(":")
    if not module_name or not _METHOD_NAME.fullmatch(attr):
        raise MethodLookupError(f"{name!r}: give your own method as 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, a syntax error or the module's own code: one line
        raise MethodLookupError(f"cannot import {module_name!r} for method {name!r}: {type(exc).__name__}: {exc}") from None
    method = getattr(module, attr, None)
    if method is None and isinstance(METHODS.get(attr), Method):  # the module registered it on import
        method = METHODS[attr]
    if not isinstance(method, Method):
        raise MethodLookupError(f"no method {attr!r} in module {module_name!r} (a Method such as agents.MethodSpec, "
                                "as a module attribute or registered with agents.register_method)")
    return method


def methods() -> list[Method]:
    """Every registered method (importing the lazily registered ones)."""
    return [get_method(name) for name in METHODS]


def method_options(method: Method, settings: Any) -> MethodSettings:
    """A method's validated ``method_settings`` (its ``settings`` model)."""
    return _validate_settings(method.settings, settings)


def describe_settings(method: Method | type[MethodSettings]) -> str:
    """``name=default (description)`` for each of a method's ``method_settings`` (a method or its settings
    model), for help texts."""
    model = method if isinstance(method, type) else method.settings
    parts = []
    for name, field in model.model_fields.items():
        text = f"{name}={field.default!r}"
        if field.description:
            text += f" ({field.description})"
        parts.append(text)
    return "; ".join(parts) or "none"


def describe_method(method: Method) -> str:
    """One paragraph for ``attune run --help``: what it is, what it can do, its settings and trainer defaults."""
    can = [label for flag, label in ((method.multi_turn, "multi-turn"), (method.resumable, "resumable")) if flag]
    where = "discrete variants" if method.kind == "baseline" else "conversation envs"
    text = f"{method.name} ({', '.join([where, *can])}): {method.description}. method_settings: {describe_settings(method)}"
    defaults = ", ".join(f"{k}={v}" for k, v in method.trainer_defaults.items())
    return text + (f"; trainer defaults: {defaults}" if defaults else "")
