"""Policies and training methods. One file per method; each exposes ``check_settings`` and ``train``.

A method's ``train(job)`` takes a :class:`TrainingJob` (the policy, the users' environment, the reward
functions, the trainer settings) and returns the trained model. Methods are looked up in
:data:`METHODS` by the config's ``method`` key.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

METHODS: dict[str, str] = {
    "grpo": "agents.grpo",
}


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
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    after_init: list[Any] = dataclasses.field(default_factory=list)
    """Functions called with the TRL trainer once it is built (e.g. to swap its progress bar)."""


class TrainerSettingsError(ValueError):
    """A ``trainer.<field>`` setting the method's TRL config does not accept."""


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
