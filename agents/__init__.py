"""Policies and training methods: one file per method, all of them in one registry, :data:`METHODS`.

A method is anything with the shape of :class:`Method` (most are a :class:`MethodSpec`, a few lines at the
bottom of their file): a ``name``, a one-line ``description``, its typed ``settings`` (``method_settings:``),
what it can do (``multi_turn``, ``resumable``, ``uses_prompts``) and a ``train(job)``. Its ``kind`` says
which job it gets:

- ``"llm"``: adapts the policy LLM on the conversation environments; ``train`` takes a :class:`TrainingJob`
  and returns the trained model or a :class:`TrainedPolicy`; the runner evaluates it before and after.
- ``"baseline"``: a classic RL baseline acting on the discrete response-style variants; ``train`` takes a
  :class:`BaselineJob` and returns its held-out evaluation against a uniformly random policy.

The config's ``method:`` field, ``attune run --help`` and the runner all read :data:`METHODS`. A method of
your own: :func:`register_method` it in your module, and name it in the config as
``method: your_module:name`` (the module is imported first, as for rewards).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any



from agents.registry import (  # the registry is agents' public API too
    BaselineJob,
    METHODS,
    Method,
    MethodKind,
    MethodLookupError,
    MethodSettings,
    MethodSpec,
    TrainerSettingsError,
    describe_method,
    describe_settings,
    get_method,
    method_names,
    method_options,
    methods,
    register_method,
)


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
    prompts: int
    """How many training prompts to draw from env resets (the config's ``prompts``)."""
    population: Any = None
    """The :class:`~envs.population.UserPopulation` the env's users come from (for methods that ask users directly)."""
    balance_groups: bool = False
    """Draw the training prompts group-balanced (``fairness.balanced_sampling``): pass it to
    :func:`agents.rollouts.build_prompt_dataset`."""
    resume_from: str | None = None
    """A checkpoint folder to continue training from (``attune run ... resume=true``)."""
    log: Any = None
    """``log(metrics: dict)``: record method-specific metrics (e.g. per DPO round) in the run."""
    method_settings: Any = dataclasses.field(default_factory=dict)
    """The config's ``method_settings:`` (validated by the method's ``settings`` model, or a mapping that its
    ``settings.of`` validates), for what a method decides outside its TRL config."""
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    after_init: list[Any] = dataclasses.field(default_factory=list)
    """Functions called with the TRL trainer once it is built (e.g. to swap its progress bar)."""
    privacy: Any = None
    """The config's ``privacy.dp`` (epsilon or noise_multiplier, max_grad_norm, delta) or None: a method that
    supports it (``MethodSpec.check_privacy``) then trains by user-level DP-SGD (:mod:`agents.privacy`)."""
    local_ray: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    """A context manager that keeps Ray running inside it (the runner's: local and offline, or the cluster
    ``RAY_ADDRESS`` names), for methods that run on Ray (federated)."""


@dataclasses.dataclass
class TrainedPolicy:
    """What a method hands back: the model, and how to talk to each user with it.

    ``system_prompt_for(user_id, messages)`` gives a system message to put before the conversation (prompting);
    ``adapter_for(user_id)`` names the LoRA adapter to activate for that user (per-group/per-user SFT);
    ``choose_reply(user_id, messages, candidates)`` with ``candidates > 1`` answers with the best of that many
    sampled replies, by the index it returns (reranking).
    """

    model: Any
    system_prompt_for: Any = None
    adapter_for: Any = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Files to save beside the model: name -> JSON-serializable data."""
    save_model: bool = True
    """False where the weights are the base model's, unchanged (prompting): nothing to save twice."""
    choose_reply: Any = None
    candidates: int = 1
    privacy: dict[str, Any] | None = None
    """With ``privacy.dp``: the privacy accounting of the training (:meth:`agents.privacy.PrivacyPlan.as_dict`, or
    several of them combined), for eval.json, report.md and W&B."""
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Sections the method adds to ``eval.json`` (e.g. ``federated``: rounds, clients, per-round loss)."""
    also_evaluate: dict[str, "TrainedPolicy"] = dataclasses.field(default_factory=dict)
    """Further policies the method made (e.g. ``personalized``), each scored on the same held-out conversations
    as this one; their mean utility and paired differences go to ``eval.json``'s ``report_section``."""
    report_section: str = "also_evaluated"
    label: str = "trained"
    """What the ``report_section`` calls this policy beside the ``also_evaluate`` ones (e.g. ``global``)."""

    def replies(self, generate: Callable[[list[list[dict[str, str]]]], list[str]], user_ids: list[str],
                conversations: list[list[dict[str, str]]]) -> list[str]:
        """One reply per conversation from ``generate(conversations)``; with reranking, ``candidates`` replies are
        sampled for each (in one batch) and ``choose_reply`` picks one."""
        if self.choose_reply is None or self.candidates <= 1:
            return generate(conversations)
        k = self.candidates
        sampled = generate([c for c in conversations for _ in range(k)])
        chosen = []
        for i, (user_id, messages) in enumerate(zip(user_ids, conversations)):
            options = sampled[i * k:(i + 1) * k]
            chosen.append(options[self.choose_reply(user_id, messages, options)])
        return chosen

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
