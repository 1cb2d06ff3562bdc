"""Fine-tuning-based personalization: SFT on the users' own texts, one LoRA adapter per group or per user.

Each user's history pairs their past requests with texts written the way they like to read
(:meth:`envs.users.UserProfile.request_sample_pairs`). ``method_settings.per: group`` (default) trains one
adapter per preference group on the training users' texts; ``per: user`` trains one adapter per user on
that user's own texts, held-out users included (their past texts are theirs to use; the evaluation
conversations are not). At evaluation each user's replies come from their adapter, chosen by user id.
LoRA settings come from ``policy.lora`` (default r=8). ``trainer.max_steps`` is per adapter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agents import MethodSettings, MethodSpec, TrainedPolicy, TrainerSettingsError, TrainingJob, build_trl_config, finish_trainer_setup
from envs.seeding import derive_seed, torch_seeded

DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 10,
    "per_device_train_batch_size": 4,
    "learning_rate": 2e-4,
    "max_length": 512,
}


class Settings(MethodSettings):
    per: Literal["group", "user"] = Field("group", description="one LoRA adapter per preference group or per user")


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    from trl import SFTConfig

    return build_trl_config(SFTConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def user_texts(users: list[Any]) -> list[dict[str, Any]]:
    """Prompt-completion rows from the users' own request/writing-sample pairs."""
    return [
        {"prompt": [{"role": "user", "content": request}], "completion": [{"role": "assistant", "content": sample}]}
        for user in users
        for request, sample in user.request_sample_pairs()
    ]


def train(job: TrainingJob) -> TrainedPolicy:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import SFTTrainer

    per = Settings.of(job.method_settings).per
    population = job.population
    if per == "group":
        adapters = {g.name: [u for u in population.train_users if u.group == g.name] for g in population.groups}
        owner = {u.user_id: u.group for u in population.users}
    else:
        adapters = {u.user_id: [u] for u in population.users}
        owner = {u.user_id: u.user_id for u in population.users}
    lora = job.peft_config or LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear")
    model = job.model
    for k, (name, users) in enumerate(adapters.items()):
        if not users:
            raise TrainerSettingsError(f"sft: adapter {name!r} has no training users; use more users")
        with torch_seeded(derive_seed(job.seed, "sft-adapter-init", k)):  # new LoRA weights: their own stream
            if k == 0:
                model = get_peft_model(model, lora, adapter_name=name)
            else:
                model.add_adapter(name, lora)
        model.set_adapter(name)
        args = trainer_config(job.trainer_settings, job.output_dir / f"adapter-{name}", derive_seed(job.seed, "sft-adapter", k))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(user_texts(users)),
                             processing_class=job.tokenizer, callbacks=job.callbacks)
        finish_trainer_setup(trainer, job)
        trainer.train()
        if job.log is not None:
            job.log({"sft/adapter": k + 1, "sft/examples": float(len(user_texts(users)))})
    return TrainedPolicy(model, adapter_for=lambda user_id: owner[user_id],
                         extras={"adapters.json": {"per": per, "user_to_adapter": owner}})


METHOD = MethodSpec(
    name="sft", description="SFT on the users' own texts: one LoRA adapter per preference group or per user",
    train=train, check_trainer=check_settings, settings=Settings, trainer_defaults=DEFAULT_SETTINGS,
    multi_turn=True,  # trains on the users' texts; the adapters then serve conversations of any length
    resumable=False,  # several trainers, one per adapter
    uses_prompts=False,
)
