"""Iterative DPO from the users' own pairwise choices, with TRL's DPOTrainer.

Each round: the current policy samples two replies to each prompt (opening turns of training users);
the prompt's own simulated user picks one (Bradley-Terry choice on their noisy utility: the pairwise
feedback channel, noise included); the chosen/rejected pairs train the policy with DPO. The next round
samples from the updated policy. ``method_settings``: ``rounds``, ``samples_per_prompt`` (an even
number: replies are paired 0-1, 2-3, ...), ``max_new_tokens`` and ``temperature`` of the sampling, and
``judge``: ``users`` (default) or ``rewards`` (the configured rewards pick the chosen reply, as in RLAIF), and
``adapters`` (default true: LoRA adapters, ``policy.lora`` or rank 8 on every linear layer; false: all weights).
``trainer.max_steps`` is per round. With all weights trained the reference policy is the base model throughout;
with LoRA adapters (``policy.lora``) TRL's DPOTrainer makes a frozen copy of the adapter it is given its reference, so
from the second round on the reference is the previous round's policy (iterative DPO with a moving reference).

``data: {source: human, db: feedback.sqlite}`` trains instead on what real people chose in ``attune serve``
(one round, no sampling: each judgement that picked a reply is a pair, the task's request as the prompt; ties
are left out). The same pairs are ``attune feedback export``'s ``preferences.jsonl``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents import MethodSpec, TrainingJob, build_trl_config, finish_trainer_setup
from agents.judging import Prefer, SampledChoiceSettings, pairwise_judge
from agents.policy import adapter_config, generate_replies
from agents.rollouts import build_prompt_dataset, make_env
from envs.seeding import derive_seed

# Measured on the quickstart users (SmolLM2, 3 training seeds, 32 held-out conversations, base seed-to-seed sd 0.05):
# LoRA adapters (rank 8, every linear layer) at 5e-4, 2 rounds of 64 pairs, 8 steps each with the SFT term on the
# chosen reply (RPO) gained +0.13, +0.33, +0.23; the same with all weights at 5e-5 gained +0.14, -0.67, +0.23, and
# at 2e-5 for 16 steps a round -0.55, +0.26 (seeds 0, 1). Plain sigmoid DPO at 2e-5 on 32 pairs a round did not
# move (-0.04, one seed).
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 8,
    "per_device_train_batch_size": 4,
    "learning_rate": 5e-4,  # for LoRA adapters (method_settings.adapters, the default)
    "loss_type": ["sigmoid", "sft"],
    "beta": 0.1,
    "max_length": 512,
}


class PreferenceData(BaseModel):
    """Where the pairs come from: sampled and judged each round (``simulated``), or people's recorded choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: Literal["simulated", "human"] = Field(
        "simulated", description="simulated: sample reply pairs and have them judged (see judge); human: the "
        "choices people made in attune serve, read from db")
    db: str | None = Field(None, description="the feedback database attune serve wrote (--db), for source: human")

    @field_validator("db")
    @classmethod
    def _has_choices(cls, value: str | None) -> str | None:
        if value is not None:
            from envs.people import require_choices

            require_choices(value)  # a FeedbackDataError (a ValueError) says what is wrong and how to fix it
        return value


class Settings(SampledChoiceSettings):
    rounds: int = Field(2, ge=1, description="sample-choose-train rounds; the next round samples the updated policy")
    samples_per_prompt: int = Field(2, ge=2, description="replies sampled per prompt, paired 0-1, 2-3, ...")

    data: PreferenceData = Field(
        default_factory=PreferenceData, description="where the pairs come from: {source: simulated} (default) or "
        "{source: human, db: feedback.sqlite}, the choices people made in attune serve")
    adapters: bool = Field(
        True, description="train LoRA adapters (policy.lora, else rank 8 on every linear layer), the default the "
        "learning rate is set for; false trains all weights (then lower trainer.learning_rate, e.g. 2e-5)")

    @model_validator(mode="after")
    def _even(self) -> "Settings":
        if self.samples_per_prompt % 2:
            raise ValueError("samples_per_prompt: use an even number (replies are paired)")
        return self

    @model_validator(mode="after")
    def _human_data_is_one_dataset(self) -> "Settings":
        if self.data.source == "human" and self.data.db is None:
            raise ValueError("data.db: source human reads people's choices from a feedback database; give "
                             "data: {source: human, db: feedback.sqlite} (the --db file of attune serve)")
        if self.data.source == "simulated" and self.data.db is not None:
            raise ValueError("data.db: a database is read only with source: human; add source: human or remove db")
        if self.data.source == "human":
            sampling = sorted(name for name in ("rounds", "samples_per_prompt", "max_new_tokens", "temperature", "judge")
                              if getattr(self, name) != type(self).model_fields[name].default
                              and not (name == "rounds" and self.rounds == 1))
            if sampling:
                raise ValueError(f"{sampling[0]}: with data.source human the pairs are people's recorded choices, "
                                 "trained on once with nothing sampled or judged; remove it, or use data.source: simulated")
        return self


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    from trl import DPOConfig

    return build_trl_config(DPOConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def collect_preferences(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], population: Any, *, samples_per_prompt: int,
    max_new_tokens: int, temperature: float, noise: float, seed: int, prefer: Prefer | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample replies, have each pair judged; DPO rows and statistics of the round.

    By default each row's own user chooses (Bradley-Terry on their noisy utility); ``prefer(row, a, b)``
    judges instead (True: ``a``, False: ``b``, None: no preference, the pair is skipped).
    """
    conversations = [row["prompt"] for row in rows for _ in range(samples_per_prompt)]
    replies = generate_replies(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed)
    if prefer is None:
        prefer = pairwise_judge("users", population=population, noise=noise, seed=seed)
    pairs, agree, margins = [], [], []
    for i, row in enumerate(rows):
        user = population.simulated_user(row["user_id"], noise=noise)
        task = population.task(row["task_id"])
        mine = replies[i * samples_per_prompt : (i + 1) * samples_per_prompt]
        for a, b in zip(mine[0::2], mine[1::2]):
            if a == b:
                continue  # no preference to learn from identical replies
            prefers_a = prefer(row, a, b)
            if prefers_a is None:
                continue
            chosen, rejected = (a, b) if prefers_a else (b, a)
            expected = user.utility([chosen, rejected], [task, task])
            agree.append(float(expected[0] >= expected[1]))
            margins.append(float(expected[0] - expected[1]))
            pairs.append({
                "prompt": row["prompt"],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            })
    stats = {
        "pairs": float(len(pairs)),
        "choice_agrees_with_utility": float(np.mean(agree)) if agree else float("nan"),
        "chosen_minus_rejected_utility": float(np.mean(margins)) if margins else float("nan"),
    }
    return pairs, stats


def _adapters(job: TrainingJob, options: Settings) -> Any:
    """The LoRA config DPO trains (``adapters``: the run's ``policy.lora`` or the default), or the run's own."""
    return adapter_config(job.peft_config) if options.adapters else job.peft_config


def train(job: TrainingJob) -> Any:
    from datasets import Dataset
    from trl import DPOTrainer

    options = Settings.of(job.method_settings)
    if options.data.source == "human":
        return train_on_human_choices(job, options.data.db)
    env = make_env(job.env_id, **job.env_kwargs)
    model, peft_config = job.model, _adapters(job, options)
    for round_index in range(options.rounds):
        rows = build_prompt_dataset(env, job.prompts, seed=derive_seed(job.seed, "dpo-prompts", round_index),
                                    balance_groups=job.balance_groups)
        pairs, stats = collect_preferences(
            model, job.tokenizer, rows, job.population, samples_per_prompt=options.samples_per_prompt,
            max_new_tokens=options.max_new_tokens, temperature=options.temperature,
            noise=float(job.env_kwargs.get("noise", 0.1)), seed=derive_seed(job.seed, "dpo-sampling", round_index),
            prefer=pairwise_judge("rewards", reward_functions=job.reward_functions, reward_weights=job.reward_weights)
            if options.judge == "rewards" else None,
        )
        if job.log is not None:
            job.log({f"dpo/{k}": v for k, v in stats.items()} | {"dpo/round": round_index + 1})
        if not pairs:
            raise RuntimeError("every sampled pair was identical: raise method_settings.temperature")
        args = trainer_config(job.trainer_settings, job.output_dir / f"round-{round_index + 1}",
                               derive_seed(job.seed, "dpo-training", round_index))
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=job.tokenizer,
            peft_config=peft_config,
            callbacks=job.callbacks,
        )
        finish_trainer_setup(trainer, job)
        trainer.train()
        model, peft_config = trainer.model, None  # later rounds continue the same (possibly LoRA) model
    return model


def train_on_human_choices(job: TrainingJob, db: str) -> Any:
    """One DPO training on the pairs people chose in ``attune serve`` (``data: {source: human, db: ...}``)."""
    from datasets import Dataset
    from trl import DPOTrainer

    from envs.people import preference_rows, require_choices

    options = Settings.of(job.method_settings)
    rows = require_choices(db)
    pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in preference_rows(rows)]
    if job.log is not None:
        job.log({"dpo/pairs": float(len(pairs)), "dpo/people": float(len({r["user_id"] for r in rows})),
                 "dpo/ties": float(len(rows) - len(pairs)), "dpo/round": 1})
    trainer = DPOTrainer(
        model=job.model,
        args=trainer_config(job.trainer_settings, job.output_dir / "human", derive_seed(job.seed, "dpo-training", 0)),
        train_dataset=Dataset.from_list(pairs),
        processing_class=job.tokenizer,
        peft_config=_adapters(job, options),
        callbacks=job.callbacks,
    )
    finish_trainer_setup(trainer, job)
    trainer.train()
    return trainer.model


METHOD = MethodSpec(
    name="dpo", description="iterative DPO (TRL's DPOTrainer) on the users' own pairwise choices between sampled replies, "
    "or on real people's recorded choices (data: {source: human, db: ...})",
    train=train, check_trainer=check_settings, settings=Settings, trainer_defaults=DEFAULT_SETTINGS,
    resumable=False,  # several trainers, one per round
)
