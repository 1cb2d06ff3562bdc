"""GRPO against the simulated users, with TRL's GRPOTrainer.

Single-turn: the dataset is opening turns from ``env.reset`` (one user and task per row, ``user_id`` and
``task_id`` columns); every completion is scored by the configured reward functions, which read those
columns. Multi-turn (``env.max_turns > 1``): GRPO's ``rollout_func`` plays whole conversations with the
users (see :func:`agents.rollouts.make_multi_turn_rollout`); the user's tokens are masked out of the loss.
"""

from __future__ import annotations

import os
from typing import Any

from agents import TrainingJob, build_trl_config, finish_trainer_setup
from agents.rollouts import build_prompt_dataset, make_env, make_multi_turn_rollout

# attune's defaults for a CPU-sized run; anything under `trainer:` in the config overrides them.
MULTI_TURN = True
RESUMABLE = True
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 20,
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 48,
    "learning_rate": 2e-5,
    "temperature": 0.9,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
}


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    """A ``trl.GRPOConfig`` from attune's defaults and the config's ``trainer:`` settings."""
    from trl import GRPOConfig

    return build_trl_config(GRPOConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def train(job: TrainingJob) -> Any:
    from datasets import Dataset
    from trl import GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.12
    args = trainer_config(job.trainer_settings, job.output_dir, job.seed)
    args.reward_weights = job.reward_weights
    env = make_env(job.env_id, **job.env_kwargs)
    rows = build_prompt_dataset(env, job.n_prompts, seed=job.seed)
    rollout_func = None
    if job.max_turns > 1:
        rollout_func = make_multi_turn_rollout(
            lambda: make_env(job.env_id, **job.env_kwargs), rows, max_turns=job.max_turns, seed=job.seed
        )
    trainer = GRPOTrainer(
        model=job.model,
        reward_funcs=job.reward_functions,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config,
        callbacks=job.callbacks,
        rollout_func=rollout_func,
    )
    finish_trainer_setup(trainer, job)
    trainer.train(resume_from_checkpoint=job.resume_from)
    return trainer.model
