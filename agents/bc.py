"""Behaviour cloning (BC) on the elicitation env: SFT on scripted conversations, with TRL's SFTTrainer on LoRA.

The offline baselines of LMRL-Gym (Abdulhai et al., 2023, https://arxiv.org/abs/2311.18232):

- **BC** (default): imitate every conversation of the demonstrator;
- **filtered BC** (``method_settings.filtered: true``): imitate only the top ``keep`` share of them by return
  (:func:`envs.elicitation_policies.filtered_demonstrations`; LMRL-Gym keeps the top 10 %, ``keep: 0.1``).

The demonstrator (``demonstrator``) is LMRL-Gym's "dataset": ``behaviour`` (default), the noisy policy of
:func:`envs.elicitation_policies.behaviour_policy`, whose mean return is the normalised return's 50, so BC and
filtered BC differ only by the filter; or ``expert``, the scripted expert
(:func:`envs.elicitation_policies.expert_policy`: asks about the dimensions that tell the groups apart until it
is confident of the user's group, then writes the best reply for what it learned).

``episodes`` conversations are played with the env's *training* users (before filtering: filtered BC trains on
about ``keep * episodes`` of them). Each assistant turn is one prompt-completion row, the conversation before it
the prompt (:func:`envs.elicitation_policies.sft_rows`): only the assistant's words are trained on. The
demonstrations' seed and the LoRA initialisation come from the run's ``seed`` (:func:`envs.seeding.derive_seed`).
LoRA settings come from ``policy.lora`` (default r=8). The env must be an elicitation env (``attune/Elicitation-v1``):
the scripted policies read its posterior over the user's group.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agents import MethodSettings, MethodSpec, TrainerSettingsError, TrainingJob, build_trl_config, finish_trainer_setup
from agents.policy import adapter_config
from envs.seeding import derive_seed, torch_seeded

DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 20,
    "per_device_train_batch_size": 4,
    "learning_rate": 2e-4,
    "max_length": 512,
}


class Settings(MethodSettings):
    filtered: bool = Field(False, description="filtered BC: the top `keep` share of a noisy policy's conversations "
                                              "instead of every conversation of the scripted expert")
    demonstrator: Literal["behaviour", "expert"] = Field(
        "behaviour", description="whose conversations: the noisy behaviour policy (LMRL-Gym's dataset) or the scripted expert")
    episodes: int = Field(64, ge=1, description="demonstration conversations played (before filtering)")
    keep: float = Field(0.1, gt=0.0, le=1.0, description="filtered BC: the share of conversations kept, by return")


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    from trl import SFTConfig

    return build_trl_config(SFTConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def demonstration_rows(env: Any, settings: Settings, seed: int) -> list[dict[str, Any]]:
    """The SFT rows BC trains on (``prompt``, ``completion``) from ``env``'s scripted conversations."""
    from envs.elicitation import ElicitationEnv
    from envs.elicitation_policies import behaviour_policy, demonstrations, expert_policy, filtered_demonstrations, sft_rows

    env = getattr(env, "unwrapped", env)
    if not isinstance(env, ElicitationEnv):
        raise TrainerSettingsError(f"bc: trains on scripted elicitation conversations; env {env.spec.id if env.spec else env!r} "
                                   "has none; use env.id=attune/Elicitation-v1")
    data_seed = derive_seed(seed, "bc-demonstrations")  # the same conversations for BC and filtered BC
    policy = behaviour_policy() if settings.demonstrator == "behaviour" else expert_policy()
    if settings.filtered:
        episodes = filtered_demonstrations(env, settings.episodes, data_seed, keep=settings.keep, policy=policy)
    else:
        episodes = demonstrations(env, settings.episodes, data_seed, policy)
    return [{"prompt": row["prompt"], "completion": row["completion"]} for row in sft_rows(episodes)]


def train(job: TrainingJob) -> Any:
    from datasets import Dataset
    from trl import SFTTrainer

    from agents.rollouts import make_env

    settings = Settings.of(job.method_settings)
    rows = demonstration_rows(make_env(job.env_id, **job.env_kwargs), settings, job.seed)
    lora = adapter_config(job.peft_config)
    args = trainer_config(job.trainer_settings, job.output_dir, derive_seed(job.seed, "bc-trainer"))
    with torch_seeded(derive_seed(job.seed, "bc-lora-init")):  # new LoRA weights: their own stream
        trainer = SFTTrainer(model=job.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=job.tokenizer, peft_config=lora, callbacks=job.callbacks)
    finish_trainer_setup(trainer, job)
    trainer.train()
    if job.log is not None:
        job.log({"bc/examples": float(len(rows)), "bc/filtered": float(settings.filtered)})
    return trainer.model


METHOD = MethodSpec(
    name="bc", description="behaviour cloning (SFT, LoRA) on scripted elicitation conversations; filtered: true for "
                           "filtered BC on the best share of them",
    train=train, check_trainer=check_settings, settings=Settings, trainer_defaults=DEFAULT_SETTINGS,
    multi_turn=True,  # trained on whole conversations: asks, then answers
    resumable=False,
    uses_prompts=False,
)
