"""PPO against the simulated users, with TRL's experimental PPOTrainer.

Single-turn: prompts are opening turns from ``env.reset`` (one user and task per row), one sampled reply
each; a value model (the policy's base with a one-output head) estimates returns per token. TRL's PPO only
takes a reward *model*, so :class:`UserRewardModel` plays one: it finds each sequence's row from its
prompt tokens, decodes the reply and calls the configured reward functions with the row's ``user_id`` and
``task_id``, exactly as GRPO would. PPOTrainer has no rollout hook in TRL 1.12, so conversations
(``env.max_turns > 1``) train with ``method: grpo``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from agents import MethodSpec, TrainerSettingsError, TrainingJob, build_trl_config, finish_trainer_setup
from agents.policy import chat_prompt_ids, left_pad
from agents.rollouts import build_prompt_dataset, make_env
from envs.seeding import derive_seed, torch_seeded
from rewards.combine import reward_matrix, weighted_sum

# attune's defaults for a CPU-sized run; anything under `trainer:` in the config overrides them.
# `max_steps` counts PPO updates (one rollout batch each); it becomes PPOConfig.total_episodes.
# Measured on the quickstart users (SmolLM2, 3 training seeds, each scored on the same 32 held-out
# conversations; base seed-to-seed sd 0.05): 8 updates of 16 prompts at lr 3e-5 gained +0.37, +0.68, +0.47
# (mean +0.51); 8 updates of 8 prompts at 5e-5 gained -0.25, -0.03, -0.64.
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 8,
    "per_device_train_batch_size": 16,
    "num_mini_batches": 2,
    "num_ppo_epochs": 2,
    "response_length": 32,
    "learning_rate": 3e-5,
    "temperature": 0.9,
    "num_sample_generations": 0,
}


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    """A ``trl.experimental.ppo.PPOConfig`` from attune's defaults and the config's ``trainer:`` settings."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # PPO lives in trl.experimental in TRL 1.12
    from trl.experimental.ppo import PPOConfig

    if "max_steps" in settings and "total_episodes" in settings:
        raise TrainerSettingsError(
            "trainer.max_steps and trainer.total_episodes both set the length of a PPO run; give only one"
        )
    # PPOTrainer ignores max_steps: it runs ceil(total_episodes / batch) updates. Translate, so that
    # `trainer.max_steps=N` means N updates here as it means N steps for the other methods.
    settings = dict(settings)
    updates = settings.pop("max_steps", DEFAULT_SETTINGS["max_steps"])
    if not isinstance(updates, int):
        raise TrainerSettingsError(f"trainer.max_steps: expected a whole number of PPO updates, got {updates!r}")
    defaults = {k: v for k, v in DEFAULT_SETTINGS.items() if k != "max_steps"}
    args = build_trl_config(PPOConfig, defaults, settings, output_dir, seed)
    local_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if "total_episodes" not in settings and updates > 0:
        args.total_episodes = updates * local_batch * int(os.environ.get("WORLD_SIZE", "1"))
    # PPOTrainer only checks these once the models are loaded; fail at config time instead.
    if local_batch % args.num_mini_batches:
        raise TrainerSettingsError(
            f"trainer.num_mini_batches: {args.num_mini_batches} must divide the batch "
            f"(per_device_train_batch_size x gradient_accumulation_steps = {local_batch})"
        )
    if args.whiten_rewards and local_batch // args.num_mini_batches < 8:
        raise TrainerSettingsError("trainer.whiten_rewards: needs mini-batches of at least 8 replies")
    return args


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


class UserRewardModel(nn.Module):
    """The configured reward functions, shaped like the sequence-classification reward model PPO expects.

    TRL's ``get_reward`` calls ``getattr(model, model.base_model_prefix)(input_ids=..., attention_mask=...)``,
    passes the last hidden state through ``model.score`` and reads it at each sequence's last reply token.
    This module is its own backbone: its forward scores each whole sequence and writes that score at every
    position, and ``score`` is the identity, so whichever position PPO reads holds the sequence's reward.
    A reward of ``None`` counts as 0, as in TRL's GRPO.
    """

    base_model_prefix = "backbone"

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        prompt_ids: Sequence[list[int]],
        tokenizer: Any,
        reward_functions: Sequence[Callable[..., list[float | None]]],
        reward_weights: Sequence[float],
    ) -> None:
        super().__init__()
        if len(reward_functions) != len(reward_weights):
            raise ValueError(f"{len(reward_functions)} reward functions but {len(reward_weights)} weights")
        self.rows_by_prompt = {tuple(ids): row for ids, row in zip(prompt_ids, rows, strict=True)}
        self.prompt_lengths = sorted({len(ids) for ids in prompt_ids}, reverse=True)
        self.tokenizer = tokenizer
        self.reward_functions = list(reward_functions)
        self.reward_weights = list(reward_weights)
        self.score = nn.Identity()

    @property
    def backbone(self) -> UserRewardModel:
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        rows, texts = zip(*(self._row_and_reply(ids, mask) for ids, mask in zip(input_ids, attention_mask)))
        rewards = self.rewards(list(rows), list(texts))
        per_position = torch.tensor(rewards, dtype=torch.float32, device=input_ids.device)
        per_position = per_position[:, None, None].expand(-1, input_ids.shape[1], 1)
        return SimpleNamespace(hidden_states=(per_position,))

    def rewards(self, rows: list[dict[str, Any]], replies: list[str]) -> list[float]:
        """The weighted sum of the reward functions for each (row, reply), called as TRL's GRPO calls them."""
        columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
        prompts = [row["prompt"] for row in rows]
        completions = [[{"role": "assistant", "content": text}] for text in replies]
        scores = reward_matrix(self.reward_functions, prompts, completions, **columns)
        return weighted_sum(scores, self.reward_weights).tolist()

    def _row_and_reply(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[dict[str, Any], str]:
        # The query is left-padded and the reply right-padded, so the real tokens are one contiguous run.
        flags = mask.bool().tolist()
        start = flags.index(True)
        end = flags.index(False, start) if False in flags[start:] else len(flags)
        tokens = ids[start:end].tolist()
        for length in self.prompt_lengths:
            row = self.rows_by_prompt.get(tuple(tokens[:length]))
            if row is not None:
                return row, self.tokenizer.decode(tokens[length:], skip_special_tokens=True).strip()
        raise KeyError("PPO scored a sequence whose prompt is not in its dataset; build both from the same rows")


def train(job: TrainingJob) -> Any:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # PPO lives in trl.experimental in TRL 1.12
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOTrainer

    args = trainer_config(job.trainer_settings, job.output_dir, job.seed)
    local_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if job.prompts < local_batch:
        # The trainer drops incomplete batches and cycles its loader forever: too few prompts would hang it.
        raise TrainerSettingsError(
            f"trainer.per_device_train_batch_size: a batch of {local_batch} needs at least that many prompts, "
            f"got {job.prompts}"
        )
    rows = build_prompt_dataset(make_env(job.env_id, **job.env_kwargs), job.prompts, seed=job.seed,
                                balance_groups=job.balance_groups)
    prompt_ids = [chat_prompt_ids(job.tokenizer, row["prompt"]) for row in rows]
    tokenizer = _tokenizer_for_ppo(job.tokenizer, prompt_ids)
    if args.stop_token is None and args.stop_token_id is None:
        # Without a stop token PPO scores and trains on whatever follows the end of the reply.
        args.stop_token_id = _end_of_turn_id(tokenizer)

    reward_model = UserRewardModel(rows, prompt_ids, tokenizer, job.reward_functions, job.reward_weights)
    with torch_seeded(derive_seed(job.seed, "value-head")):  # the new head: same numbers alone or in variants
        value_model = AutoModelForSequenceClassification.from_pretrained(
            job.model.config._name_or_path, num_labels=1, dtype=torch.float32
        )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=job.model,
        ref_model=None,  # a frozen copy of the policy, or the base with adapters off under LoRA
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=Dataset.from_dict({"input_ids": prompt_ids}),
        data_collator=_left_padder(tokenizer),
        peft_config=job.peft_config,
        callbacks=job.callbacks,
    )
    finish_trainer_setup(trainer, job)
    # TRL 1.12's PPOTrainer shuffles its minibatches with numpy's global RNG and never seeds it (numpy seeds
    # itself from the OS at import), so the same config trained differently in every process. Seed it from
    # the run's seed for the length of training, and give the caller's state back afterwards.
    numpy_state = np.random.get_state()
    np.random.seed(derive_seed(job.seed, "ppo-minibatches"))
    try:
        trainer.train()
    finally:
        np.random.set_state(numpy_state)
    return trainer.policy_model


def _end_of_turn_id(tokenizer: Any) -> int:
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        return end_of_turn
    return tokenizer.eos_token_id


def _tokenizer_for_ppo(tokenizer: Any, prompt_ids: Sequence[list[int]]) -> Any:
    """The tokenizer, with a pad token that occurs in no prompt and is not the end of a turn.

    PPO finds padding by comparing ids with ``pad_token_id``. SmolLM2 pads with ``<|im_end|>``, which closes
    every chat turn: PPO would hide those tokens from the model and cut every reply before its end. The
    copy keeps the caller's tokenizer (saved with the trained model) unchanged.
    """
    used = {token for ids in prompt_ids for token in ids} | {_end_of_turn_id(tokenizer), tokenizer.eos_token_id}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in used:
        return tokenizer
    for token, token_id in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids):
        if token_id not in used:
            ppo_tokenizer = copy.deepcopy(tokenizer)
            ppo_tokenizer.pad_token = token
            return ppo_tokenizer
    raise TrainerSettingsError(
        "policy.model: PPO needs a pad token distinct from the end-of-turn token and from every prompt token, "
        "and this tokenizer has no spare special token"
    )


def _left_padder(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    # PPO appends replies after the query tensor, so queries must be padded on the left; the dataset holds
    # only token ids (the reward model finds user and task from them), which keeps the collator this small.
    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"input_ids": left_pad(tokenizer, [f["input_ids"] for f in features])["input_ids"]}

    return collate


METHOD = MethodSpec(
    name="ppo", description="PPO (TRL's PPOTrainer) with a value head; the rewards wrapped as its reward model",
    train=train, check_trainer=check_settings, trainer_defaults=DEFAULT_SETTINGS,
    resumable=False,  # TRL 1.12's PPOTrainer cannot resume from a checkpoint
)
