"""GRPO against the simulated users, with TRL's GRPOTrainer.

Single-turn: the dataset is opening turns from ``env.reset`` (one user and task per row, ``user_id`` and
``task_id`` columns); every completion is scored by the configured reward functions, which read those
columns. Multi-turn (``env.max_turns > 1``): GRPO's ``rollout_func`` plays whole conversations with the
users (see :func:`agents.rollouts.make_multi_turn_rollout`); the user's tokens are masked out of the loss.
"""

from __future__ import annotations

import os
from typing import Any

from agents import MethodSpec, TrainingJob, build_trl_config, train_reward_trainer
from agents.rollouts import build_prompt_dataset, make_env, make_multi_turn_rollout

# attune's defaults for a CPU-sized run; anything under `trainer:` in the config overrides them.
# Measured on the quickstart users (SmolLM2, 3 training seeds, each scored on the same 32 held-out
# conversations; base seed-to-seed sd 0.05): 16 steps of 4 prompts x 4 replies at lr 3e-5 gained +0.75, +0.71,
# +0.03 (mean +0.50); the quickstart's 2 prompts x 4 replies at lr 5e-5 gained +0.64, -0.64, -1.23: with half
# the prompts per step the seed decided the sign. The quickstart keeps its own (faster) settings.
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 16,
    "per_device_train_batch_size": 16,
    "num_generations": 4,
    "max_completion_length": 32,
    "learning_rate": 3e-5,
    "temperature": 0.9,
}


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    """A ``trl.GRPOConfig`` from attune's defaults and the config's ``trainer:`` settings."""
    from trl import GRPOConfig

    return build_trl_config(GRPOConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def train(job: TrainingJob) -> Any:
    from trl import GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.12
    rows = build_prompt_dataset(make_env(job.env_id, **job.env_kwargs), job.prompts, seed=job.seed,
                                balance_groups=job.balance_groups)
    rollout_func = None
    if job.max_turns > 1:
        rollout_func = make_multi_turn_rollout(
            lambda: make_env(job.env_id, **job.env_kwargs), rows, max_turns=job.max_turns, seed=job.seed
        )
    args = trainer_config(job.trainer_settings, job.output_dir, job.seed)
    return train_reward_trainer(GRPOTrainer, args, job, rows, rollout_func=rollout_func)


METHOD = MethodSpec(
    name="grpo", description="GRPO (TRL's GRPOTrainer) on the users' feedback; whole conversations through rollout_func",
    train=train, check_trainer=check_settings, trainer_defaults=DEFAULT_SETTINGS, multi_turn=True, resumable=True,
)
