"""Online DPO with TRL's OnlineDPOTrainer, the simulated users acting as judges.

For each prompt the current policy samples two replies; the configured reward functions (by default
``user_feedback``: the row's own user, noise included) say which one that user prefers, and the pair
trains the policy with the DPO loss against the reference policy. Single-turn only.
"""

from __future__ import annotations

import os
from typing import Any

from agents import MethodSpec, TrainingJob, build_trl_config, train_reward_trainer
from agents.rollouts import build_prompt_dataset, make_env

# Measured on the quickstart users (SmolLM2, 3 training seeds, 32 held-out conversations, base seed-to-seed sd
# 0.05): 4 steps of 8 prompts at 4e-5 gained +0.29, +0.44, -0.23 (IQM +0.33 [0.09, 0.57]). Run on to 8 steps (at
# 3e-5) it peaked at step 4 on every seed's learning curve and then drifted (KL to the base 2.7-4.7 nats; +0.23,
# +0.20, -0.17 at the end); the old 6 steps of 4 prompts at 1e-5 gained +0.12, -0.11, +0.13; LoRA adapters at 2e-4
# lost 0.29 (seed 0); 5e-5 at 4 prompts a step lowered relevance and lost 0.57 (one seed).
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "max_new_tokens": 32,
    "learning_rate": 4e-5,
    "temperature": 0.9,
    "beta": 0.1,
}


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    from trl.experimental.online_dpo import OnlineDPOConfig

    return build_trl_config(OnlineDPOConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer_config(settings, output_dir, seed)


def train(job: TrainingJob) -> Any:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.online_dpo import OnlineDPOTrainer

    rows = build_prompt_dataset(make_env(job.env_id, **job.env_kwargs), job.prompts, seed=job.seed,
                                balance_groups=job.balance_groups)
    return train_reward_trainer(OnlineDPOTrainer, trainer_config(job.trainer_settings, job.output_dir, job.seed), job, rows)


METHOD = MethodSpec(
    name="online_dpo", description="online DPO (TRL's OnlineDPOTrainer): the rewards (by default the users) pick between two fresh replies",
    train=train, check_trainer=check_settings, trainer_defaults=DEFAULT_SETTINGS, resumable=True,
)
