"""Policies and training methods. One file per method, looked up in :data:`METHODS` by the config's ``method``.

A method module exposes:

- ``train(job)``: takes a :class:`TrainingJob` (the policy, the users' environment, the reward functions,
  the trainer settings) and returns the trained model or a :class:`TrainedPolicy`;
- ``check_settings(settings, output_dir, seed)``: validates the ``trainer:`` settings;
- ``MULTI_TURN`` and ``RESUMABLE``: whether it trains on whole conversations and can continue from a
  checkpoint (the runner refuses the config otherwise, before anything slow);
- optionally ``Settings``: a :class:`MethodSettings` subclass, the typed ``method_settings:`` of the
  method (field types, bounds, defaults and descriptions; a bad value is a one-line config error).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

METHODS: dict[str, str] = {
    "grpo": "agents.grpo",
    "rloo": "agents.rloo",
    "ppo": "agents.ppo",
    "dpo": "agents.dpo",
    "online_dpo": "agents.online_dpo",
    "sft": "agents.sft",
    "prompting": "agents.prompting",
}
"""The LLM training methods: name -> module (``train(job)``, ``check_settings``, ``Settings``, capabilities)."""

BASELINES: dict[str, str] = {
    "linucb": "agents.bandit:LinUCBSettings",
    "rllib_ppo": "agents.rllib:RLlibSettings",
    "rllib_dqn": "agents.rllib:RLlibSettings",
}
"""The classic baselines on the discrete variants: name -> their ``method_settings`` model."""


def method_names() -> tuple[str, ...]:
    """Every name ``method:`` accepts: the LLM methods, then the classic baselines."""
    return (*METHODS, *BASELINES)


@dataclasses.dataclass
class TrainingJob:
    """Everything a training method needs, built by ``experiments.runner`` from the config."""

    model: Any
    tokenizer: Any
    peft_config: Any
    env_id: str
    env_kwargs: dict[str, Any]
    max_turns: int
    reward_functions: list[Any]
    reward_weights: list[float]
    trainer_settings: dict[str, Any]
    output_dir: Path
    seed: int
    n_prompts: int
    population: Any = None
    """The :class:`~envs.population.UserPopulation` the env's users come from (for methods that ask users directly)."""
    resume_from: str | None = None
    """A checkpoint folder to continue training from (``attune run ... resume=true``)."""
    log: Any = None
    """``log(metrics: dict)``: record method-specific metrics (e.g. per DPO round) in the run."""
    method_settings: Any = dataclasses.field(default_factory=dict)
    """The config's ``method_settings:`` (the method's validated ``Settings``, or a mapping that its
    ``Settings.of`` validates), for what a method decides outside its TRL config."""
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    after_init: list[Any] = dataclasses.field(default_factory=list)
    """Functions called with the TRL trainer once it is built (e.g. to swap its progress bar)."""


@dataclasses.dataclass
class TrainedPolicy:
    """What a method hands back: the model, and how to talk to each user with it.

    ``system_prompt_for(user_id, messages)`` gives a system message to put before the conversation (prompting);
    ``adapter_for(user_id)`` names the LoRA adapter to activate for that user (per-group/per-user SFT).
    """

    model: Any
    system_prompt_for: Any = None
    adapter_for: Any = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Files to save beside the model: name -> JSON-serializable data."""
    save_model: bool = True
    """False where the weights are the base model's, unchanged (prompting): nothing to save twice."""

    def conversation(self, user_id: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt_for is None:
            return messages
        system = self.system_prompt_for(user_id, messages)
        return ([{"role": "system", "content": system}] if system else []) + messages

    def activate(self, user_id: str) -> None:
        if self.adapter_for is not None:
            self.model.set_adapter(self.adapter_for(user_id))

    def save(self, folder: Path) -> None:
        import json

        folder.mkdir(parents=True, exist_ok=True)
        if self.save_model:
            self.model.save_pretrained(folder)
        for name, data in self.extras.items():
            (folder / name).write_text(json.dumps(data, indent=2))


def as_policy(trained: Any) -> TrainedPolicy:
    return trained if isinstance(trained, TrainedPolicy) else TrainedPolicy(trained)


COMMON_SETTINGS: dict[str, Any] = {
    "logging_steps": 1,  # every step reaches metrics.jsonl and W&B
    "save_strategy": "no",  # checkpoints only with checkpoint_every (the runner sets save_strategy then)
    "report_to": "none",  # attune's tracker logs to W&B itself, the same way for every method
}
"""Settings every TRL config gets from attune, under the method's own defaults and the user's ``trainer:``."""


def build_trl_config(config_class: type, defaults: dict[str, Any], settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    """A TRL config from attune's CPU-sized ``defaults`` and the user's ``trainer:`` settings.

    Unknown settings are one error naming ``trainer.<field>`` and the config class.
    """
    import torch

    import trl

    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        name = config_class.__name__
        where = f"trl.{name}" if getattr(trl, name, None) is config_class else f"{config_class.__module__}.{name}"
        raise TrainerSettingsError(
            f"trainer.{unknown[0]}: not a field of {where}; see the TRL documentation of {name} for the allowed settings"
        )
    merged = {**COMMON_SETTINGS, **defaults, "seed": seed, **settings, "output_dir": str(output_dir)}
    if not torch.cuda.is_available():
        merged.setdefault("bf16", False)
        merged["use_cpu"] = True
    try:
        return config_class(**merged)
    except (ValueError, TypeError) as exc:
        raise TrainerSettingsError(f"trainer: {exc}") from None


def finish_trainer_setup(trainer: Any, job: TrainingJob) -> None:
    """Run the job's after-init hooks (e.g. swap the progress bar) on a freshly built TRL trainer."""
    for callback in job.after_init:
        callback(trainer)


def train_reward_trainer(trainer_class: type, args: Any, job: TrainingJob, rows: list[dict[str, Any]], **extra: Any) -> Any:
    """Train one of TRL's trainers that sample replies to prompts and score them with reward functions
    (GRPO, RLOO, online DPO): the rows' columns (``user_id``, ``task_id``) reach the rewards. Returns the model.

    Its checkpoints are written atomically (:mod:`agents.checkpoints`): a kill never leaves a half-written one."""
    from datasets import Dataset

    from agents.checkpoints import atomic_checkpoints

    args.reward_weights = job.reward_weights
    trainer = atomic_checkpoints(trainer_class)(
        model=job.model,
        reward_funcs=job.reward_functions,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config,
        callbacks=job.callbacks,
        **extra,
    )
    finish_trainer_setup(trainer, job)
    trainer.train(resume_from_checkpoint=job.resume_from)
    return trainer.model


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


def method_options(method: ModuleType, settings: Any) -> MethodSettings:
    """A method's validated ``method_settings`` (its ``Settings`` model; a method without one takes none)."""
    return _validate_settings(getattr(method, "Settings", MethodSettings), settings)


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
            fields = list(model.model_fields)
            allowed = f"allowed: {', '.join(fields)}" if fields else "it has none"
            raise TrainerSettingsError(f"method_settings.{field}: not a setting of this method; {allowed}") from None
        raise TrainerSettingsError(f"method_settings.{field}: {message} (got {error.get('input')!r})") from None


def describe_settings(method: ModuleType | type[MethodSettings]) -> str:
    """``name=default (description)`` for each of a method's ``method_settings`` (a method module or its
    settings model), for help texts."""
    model = method if isinstance(method, type) else getattr(method, "Settings", MethodSettings)
    parts = []
    for name, field in model.model_fields.items():
        text = f"{name}={field.default!r}"
        if field.description:
            text += f" ({field.description})"
        parts.append(text)
    return "; ".join(parts) or "none"


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
