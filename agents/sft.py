"""Fine-tuning-based personalization: supervised fine-tuning of LoRA adapters (one for all, per group or per user).

``method_settings.data`` says what the adapters are fine-tuned on:

- ``chosen`` (default): the replies the users themselves picked, i.e. rejection-sampling fine-tuning /
  filtered behaviour cloning (RAFT: Dong et al. 2023, "RAFT: Reward rAnked FineTuning for Generative
  Foundation Model Alignment"; ReST: Gulcehre et al. 2023, "Reinforced Self-Training for Language
  Modeling"). For opening turns of training users (``prompts:``), the base policy samples
  ``candidates`` replies each; the prompt's own simulated user picks the best by a knockout of pairwise
  choices (current best against the next candidate; the same noisy Bradley-Terry choices as dpo's), or,
  with ``judge: rewards``, the configured rewards do; each adapter is fine-tuned on the (prompt, chosen
  reply) pairs of its own users. Logged: ``sft/chosen_utility`` against ``sft/candidate_utility`` (the
  users' expected utility of the chosen replies and of all candidates).
- ``writing_samples``: the users' past requests paired with texts written the way they like to read
  (:meth:`envs.users.UserProfile.request_sample_pairs`). They show how a user writes, but they do not
  answer the tasks the users ask for, so on the writing assistant's users this lowers utility (the
  relevance term); it is kept as the classic "fine-tune on the user's own texts" baseline.

``method_settings.per: all`` (default) trains one adapter on every training user's data (personal through
the data: each reply was chosen by the user who asked); ``per: group`` one adapter per preference group on
its training users' data (measured: fewer examples per adapter, a smaller gain); ``per: user`` one adapter
per user on that user's own writing samples, held-out users included (their past texts are theirs to use;
the evaluation conversations are not), so it needs ``data: writing_samples``. At evaluation each user's
replies come from their adapter, chosen by user id.
LoRA settings come from ``policy.lora`` (default r=8). ``trainer.max_steps`` is per adapter.

With ``privacy.dp`` each adapter is trained by user-level DP-SGD (:mod:`agents.privacy`) instead of TRL's
SFTTrainer: ``trainer.per_device_train_batch_size`` is then the expected number of *users* per step (each
contributing the mean gradient of up to 4 of their examples), with ``max_steps``, ``learning_rate``,
``weight_decay`` and ``max_length`` taken from ``trainer:`` too (AdamW at a constant rate; other trainer settings
do not apply). The protected users are the adapter's training users; adapters of disjoint groups compose in
parallel. ``per: user`` cannot be private: each adapter is one user's data.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from agents import MethodSpec, TrainedPolicy, TrainerSettingsError, TrainingJob, build_trl_config, finish_trainer_setup
from agents.judging import Prefer, SampledChoiceSettings, pairwise_judge
from agents.policy import adapter_config, chat_prompt_ids, sample_continuations
from agents.rollouts import build_prompt_dataset, make_env
from envs.seeding import derive_seed, torch_seeded

# Measured on the quickstart users (SmolLM2, one seed, 32 held-out conversations, base seed-to-seed sd 0.05;
# 64 prompts, 4 candidates of 32 tokens, the users choosing): one adapter for all, 24 steps at 5e-4 gained
# +0.58 +- 0.57 in 235 CPU s of training (the quickstart's GRPO: 188); per group, 16 steps an adapter at 5e-4
# +0.28 +- 0.59 (260 s), 12 at 1e-3 +0.22 +- 0.62 (222 s). On the chosen replies' text with an end-of-turn
# token after each (cut off at 32 tokens), per group at 2e-4: -0.28; on the writing samples: -0.41.
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_steps": 24,
    "per_device_train_batch_size": 4,
    "learning_rate": 5e-4,
    "max_length": 512,
}


class Settings(SampledChoiceSettings):
    """``max_new_tokens``, ``temperature`` and ``judge`` apply to ``data: chosen`` only."""

    per: Literal["all", "group", "user"] = Field(
        "all", description="one LoRA adapter for all users, one per preference group, or one per user")
    data: Literal["chosen", "writing_samples"] = Field(
        "chosen", description="fine-tune on the replies the users chose among sampled candidates (rejection "
        "sampling), or on the users' own writing samples")
    candidates: int = Field(4, ge=2, description="data: chosen: replies sampled per prompt, of which the user keeps one")

    @model_validator(mode="after")
    def _per_user_needs_samples(self) -> "Settings":
        if self.per == "user" and self.data == "chosen":
            raise ValueError("per: user needs data: writing_samples (chosen replies come from training users' "
                             "prompts, and held-out users have none); use per: group or per: all")
        return self


def trainer_config(settings: dict[str, Any], output_dir: Any, seed: int) -> Any:
    from trl import SFTConfig

    return build_trl_config(SFTConfig, DEFAULT_SETTINGS, settings, output_dir, seed)


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    trainer_config(settings, output_dir, seed)


def user_texts(users: list[Any]) -> list[dict[str, Any]]:
    """Prompt-completion rows from the users' own request/writing-sample pairs (with the ``user_id`` they are of)."""
    return [
        {"prompt": [{"role": "user", "content": request}], "completion": [{"role": "assistant", "content": sample}],
         "user_id": user.user_id}
        for user in users
        for request, sample in user.request_sample_pairs()
    ]


def knockout(row: dict[str, Any], candidates: list[str], prefer: Prefer) -> str:
    """The candidate that survives pairwise choices: the current best meets each next one in turn
    (a tie, or an identical reply, keeps the current best)."""
    best = candidates[0]
    for challenger in candidates[1:]:
        if challenger != best and prefer(row, best, challenger) is False:
            best = challenger
    return best


def chosen_replies(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], population: Any, *, candidates: int,
    max_new_tokens: int, temperature: float, seed: int, prefer: Prefer,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample ``candidates`` replies to each row's prompt, keep the one the judge picks (:func:`knockout`).

    Returns one SFT row per prompt with a non-empty chosen reply: its text (``chosen``), and the exact sampled
    tokens after the prompt's (``input_ids``; ``labels`` masks the prompt). Training on the sampled tokens
    rather than on the re-templated text keeps a reply cut off at ``max_new_tokens`` open: the model is not
    taught to end its turn mid-sentence. Statistics: the users' expected utility of the chosen replies and of
    all candidates (how much the choices select), and the rows kept.
    """
    prompt_ids = [chat_prompt_ids(tokenizer, row["prompt"]) for row in rows]
    continuations = sample_continuations(model, tokenizer, [p for p in prompt_ids for _ in range(candidates)],
                                         max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    texts = [t.strip() for t in tokenizer.batch_decode(continuations, skip_special_tokens=True)]
    kept, chosen_utility, candidate_utility = [], [], []
    for i, row in enumerate(rows):
        mine = texts[i * candidates : (i + 1) * candidates]
        best = knockout(row, mine, prefer)
        index = mine.index(best)
        user, task = population.simulated_user(row["user_id"], noise=0.0), population.task(row["task_id"])
        utilities = user.utility(mine, [task] * len(mine))
        chosen_utility.append(float(utilities[index]))
        candidate_utility.append(float(np.mean(utilities)))
        if best:  # an empty reply teaches nothing but to stop
            reply_ids = list(continuations[i * candidates + index])
            kept.append(row | {"chosen": best, "input_ids": prompt_ids[i] + reply_ids,
                               "labels": [-100] * len(prompt_ids[i]) + reply_ids})
    stats = {
        "examples": float(len(kept)),
        "chosen_utility": float(np.mean(chosen_utility)) if rows else float("nan"),
        "candidate_utility": float(np.mean(candidate_utility)) if rows else float("nan"),
    }
    return kept, stats


def adapter_users(population: Any, options: Settings) -> dict[str, list[str]]:
    """The training users whose data each adapter is fine-tuned on (per: all / group), by adapter name."""
    if options.per == "group":
        return {g.name: [u.user_id for u in population.train_users if u.group == g.name] for g in population.groups}
    return {"all": [u.user_id for u in population.train_users]}


def check_privacy(dp: Any, options: Settings, trainer_settings: dict[str, Any], population: Any) -> None:
    """``privacy.dp`` with these settings: the noise of every adapter can be planned (see :mod:`agents.privacy`)."""
    from agents.privacy import PrivacySettingsError, plan

    if options.per == "user":
        raise TrainerSettingsError("privacy.dp: method_settings.per: user trains each user's adapter on that user's "
                                   "data alone, which no noise can protect; use per: all or per: group, or remove privacy.dp")
    args = trainer_config(trainer_settings, "_check", 0)
    if args.max_steps is None or args.max_steps < 1:
        raise TrainerSettingsError("trainer.max_steps: privacy.dp plans its noise over a fixed number of steps; set "
                                   "trainer.max_steps")
    for name, users in adapter_users(population, options).items():
        try:
            plan(dp, users=len(users), users_per_step=args.per_device_train_batch_size, steps=args.max_steps,
                 where="trainer.per_device_train_batch_size")
        except PrivacySettingsError as exc:
            where = f" (adapter {name!r})" if options.per == "group" else ""
            raise TrainerSettingsError(f"{exc}{where}") from None


def sft_rows(tokenizer: Any, rows: list[dict[str, Any]], max_length: int | None) -> list[dict[str, Any]]:
    """Token rows (``input_ids``; ``labels`` -100 on the prompt) from prompt-completion or token rows, cut at
    ``max_length`` tokens, for the private training loop (TRL's SFTTrainer tokenizes for itself)."""
    out = []
    for row in rows:
        if "input_ids" in row:
            ids, labels = list(row["input_ids"]), list(row["labels"])
        else:
            prompt = chat_prompt_ids(tokenizer, row["prompt"])
            ids = list(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                                     return_dict=True)["input_ids"])
            labels = [-100] * len(prompt) + ids[len(prompt):]
        if max_length:
            ids, labels = ids[:max_length], labels[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def train_adapter_privately(job: TrainingJob, model: Any, rows: list[dict[str, Any]], users: list[str], args: Any,
                            seed: int) -> dict[str, Any]:
    """Train the active adapter by user-level DP-SGD; returns its privacy accounting."""
    from agents.privacy import TrainerEvents, causal_lm_loss, plan, train_private

    dp_plan = plan(job.privacy, users=len(users), users_per_step=args.per_device_train_batch_size,
                   steps=args.max_steps, where="trainer.per_device_train_batch_size")
    events = TrainerEvents(job.callbacks, args, dp_plan.steps, model)
    events.begin()
    train_private(model, sft_rows(job.tokenizer, rows, args.max_length), [r["user_id"] for r in rows],
                  causal_lm_loss(job.tokenizer.pad_token_id), dp_plan, users=users, learning_rate=args.learning_rate,
                  weight_decay=args.weight_decay, seed=seed, on_step=events.step)
    events.end()
    return dp_plan.as_dict()


def training_data(job: TrainingJob, options: Settings) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """The SFT rows of each adapter (each with the ``user_id`` it is of), and which adapter serves each user."""
    population = job.population
    if options.per == "all":
        owner = {u.user_id: "all" for u in population.users}
    elif options.per == "group":
        owner = {u.user_id: u.group for u in population.users}
    else:
        owner = {u.user_id: u.user_id for u in population.users}
    names = [g.name for g in population.groups] if options.per == "group" else list(dict.fromkeys(owner.values()))
    if options.data == "writing_samples":
        # per user: every user's own texts, held-out users included; per group / all: the training users'
        users = population.users if options.per == "user" else population.train_users
        data = {name: user_texts([u for u in users if owner[u.user_id] == name]) for name in names}
    else:
        env = make_env(job.env_id, **job.env_kwargs)
        rows = build_prompt_dataset(env, job.prompts, seed=derive_seed(job.seed, "sft-prompts"), balance_groups=job.balance_groups)
        noise = float(job.env_kwargs.get("noise", 0.1))
        sampling_seed = derive_seed(job.seed, "sft-sampling")
        if options.judge == "rewards":
            prefer = pairwise_judge("rewards", reward_functions=job.reward_functions, reward_weights=job.reward_weights)
        else:
            prefer = pairwise_judge("users", population=population, noise=noise, seed=derive_seed(job.seed, "sft-choices"))
        kept, stats = chosen_replies(job.model, job.tokenizer, rows, population, candidates=options.candidates,
                                     max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                                     seed=sampling_seed, prefer=prefer)
        if job.log is not None:
            job.log({f"sft/{k}": v for k, v in stats.items()})
        data = {name: [{"input_ids": r["input_ids"], "labels": r["labels"], "user_id": r["user_id"]} for r in kept
                       if owner[r["user_id"]] == name]
                for name in names}
    for name, rows in data.items():
        if not rows:
            raise TrainerSettingsError(
                f"sft: adapter {name!r} has no training examples; raise prompts (or users.n_users)")
    return data, owner


def train(job: TrainingJob) -> TrainedPolicy:
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTTrainer

    options = Settings.of(job.method_settings)
    data, owner = training_data(job, options)  # candidates come from the base policy, before any adapter
    lora = adapter_config(job.peft_config)
    model = job.model
    accounts: dict[str, dict[str, Any]] = {}
    protected = adapter_users(job.population, options) if job.privacy is not None else {}
    for k, (name, rows) in enumerate(data.items()):
        with torch_seeded(derive_seed(job.seed, "sft-adapter-init", k)):  # new LoRA weights: their own stream
            if k == 0:
                model = get_peft_model(model, lora, adapter_name=name)
            else:
                model.add_adapter(name, lora)
        model.set_adapter(name)
        args = trainer_config(job.trainer_settings, job.output_dir / f"adapter-{name}", derive_seed(job.seed, "sft-adapter", k))
        if job.privacy is not None:
            accounts[name] = train_adapter_privately(job, model, rows, protected[name], args,
                                                     derive_seed(job.seed, "sft-dp", k))
        else:
            trainer = SFTTrainer(model=model, args=args, processing_class=job.tokenizer, callbacks=job.callbacks,
                                 train_dataset=Dataset.from_list([{c: v for c, v in r.items() if c != "user_id"} for r in rows]))
            finish_trainer_setup(trainer, job)
            trainer.train()
        if job.log is not None:
            job.log({"sft/adapter": k + 1, "sft/adapter_examples": float(len(rows))})
    privacy = None
    if accounts:
        from agents.privacy import combine

        # One adapter's figures as they are; adapters of disjoint groups compose in parallel (the largest).
        privacy = next(iter(accounts.values())) if len(accounts) == 1 else {**combine(accounts, sequential=False),
                                                                            "adapters": accounts}
    return TrainedPolicy(model, adapter_for=lambda user_id: owner[user_id], privacy=privacy,
                         extras={"adapters.json": {"per": options.per, "data": options.data, "user_to_adapter": owner}})


METHOD = MethodSpec(
    name="sft",
    description="SFT on the replies the users chose among sampled candidates (rejection sampling), or on their texts",
    train=train, check_trainer=check_settings, settings=Settings, trainer_defaults=DEFAULT_SETTINGS,
    multi_turn=True,  # trains on the users' texts; the adapters then serve conversations of any length
    resumable=False,  # several trainers, one per adapter
    uses_prompts=True,  # data: chosen samples replies to training users' opening turns
    check_privacy=check_privacy,
)
