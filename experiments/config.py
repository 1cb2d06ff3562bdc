"""The experiment config's schema: pydantic models, one per YAML section, each field's help and allowed values
beside it.

Unknown keys and bad values are errors that name the field and the allowed values::

    config error: env.feedback: Input should be 'rating' or 'utility' (got 'stars')

Reading a YAML file, ``key=value`` overrides from the CLI and writing a config back are
:mod:`experiments.config_files` (``load_config``); what a run needs from the machine is :mod:`experiments.preflight`.
This module stays one file past 300 lines on purpose: it is one schema, read top to bottom, whose sections
validate against each other (method against env kind, rewards, variants, the table of ``trainer:`` checks).
"""

from __future__ import annotations

import math
import numbers
import re
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class ConfigError(ValueError):
    """A config the user can fix: the message names the field and the fix."""


NAME_PATTERN = r"[A-Za-z0-9._=+-]+"
"""Characters allowed in run and experiment names: they become folder names."""
MAX_SEED = 2**31 - 1  # numpy, torch and Python's random all accept seeds in [0, 2**31)
MIN_FAIRNESS_GROUPS = 2  # balanced sampling and MaxMin only mean something across two or more user groups


def _is_number_annotation(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arguments = typing.get_args(annotation)
        return bool not in arguments and any(a in (int, float) for a in arguments)
    return False


class _Section(BaseModel):
    # allow_inf_nan=False: every float field is finite (nan and .inf are errors, not silent poison).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1; in a config that is always a mistake.
        if isinstance(value, bool) and info.field_name and _is_number_annotation(cls.model_fields[info.field_name].annotation):
            raise ValueError("Input should be a number, not true/false")
        return value


# The well-known keys of TRL's config classes, checked before anything loads: the rest of ``trainer:``
# passes through to the method's TRL config class, whose own construction catches other mistakes.
# key -> (kind, low, low_inclusive, high, none_allowed); kind is "int", "number" or "bool".
_TRAINER_CHECKS: dict[str, tuple[str, float | None, bool, float | None, bool]] = {
    "max_steps": ("int", 1, True, None, False),
    "num_train_epochs": ("number", 0, False, None, False),
    "learning_rate": ("number", 0, False, None, False),
    "per_device_train_batch_size": ("int", 1, True, None, False),
    "per_device_eval_batch_size": ("int", 1, True, None, False),
    "gradient_accumulation_steps": ("int", 1, True, None, False),
    "num_generations": ("int", 2, True, None, False),
    "generation_batch_size": ("int", 1, True, None, True),
    "steps_per_generation": ("int", 1, True, None, True),
    "num_iterations": ("int", 1, True, None, False),
    "max_completion_length": ("int", 1, True, None, True),
    "max_prompt_length": ("int", 1, True, None, True),
    "max_length": ("int", 1, True, None, True),
    "max_new_tokens": ("int", 1, True, None, True),
    "temperature": ("number", 0, False, None, False),
    "top_p": ("number", 0, False, 1, False),
    "top_k": ("int", 0, True, None, True),
    "min_p": ("number", 0, True, 1, True),
    "repetition_penalty": ("number", 0, False, None, False),
    "beta": ("number", 0, True, None, False),
    "epsilon": ("number", 0, False, None, False),
    "weight_decay": ("number", 0, True, None, False),
    "max_grad_norm": ("number", 0, True, None, False),
    "warmup_steps": ("number", 0, True, None, False),
    "warmup_ratio": ("number", 0, True, 1, False),
    "logging_steps": ("number", 0, False, None, False),
    "save_steps": ("number", 0, False, None, False),
    "save_total_limit": ("int", 1, True, None, True),
    "seed": ("int", 0, True, MAX_SEED, False),
    "gradient_checkpointing": ("bool", None, True, None, False),
    "bf16": ("bool", None, True, None, False),
    "fp16": ("bool", None, True, None, False),
}


def _trainer_setting_problem(key: str, value: Any) -> str | None:
    """What is wrong with a well-known ``trainer:`` setting, in words; None if it is fine (or not checked here)."""
    if key not in _TRAINER_CHECKS:
        return None
    kind, low, low_inclusive, high, none_allowed = _TRAINER_CHECKS[key]
    if value is None:
        return None if none_allowed else "a value is required"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    integer = kind == "int"
    what = "an integer" if integer else "a finite number"
    if low is not None:
        what += f" {'>=' if low_inclusive else '>'} {low:g}"
    if high is not None:
        what += f" and <= {high:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        return what
    if not integer and not math.isfinite(float(value)):
        return what
    if low is not None and (value < low if low_inclusive else value <= low):
        return what
    if high is not None and value > high:
        return what
    return None


class EnvSettings(_Section):
    module: str | None = Field(
        None, description="a Python module to import first, where your own environment registers itself "
        "(e.g. my_envs, found from the current folder as `python -m` would)",
    )
    id: str = Field("attune/WritingAssistant-v1", description="a registered environment id: a built-in "
                    "(attune/<Name>-vN, attune/<Name>Discrete-vN) or yours (see env.module)")
    max_turns: int = Field(1, ge=1, le=20, description="replies per episode; 1 = single-turn")
    feedback: Literal["rating", "utility", "pairwise", "critique", "implicit"] = Field(
        "rating", description="the users' feedback channel (the env's reward in multi-turn training)"
    )
    reward_mode: Literal["per_turn", "episode_end"] = Field(
        "per_turn", description="feedback after every reply, or the episode's mean feedback at its end"
    )
    noise: float = Field(0.1, ge=0.0, description="std of the users' utility noise")
    satisfaction_utility: float = Field(1.5, description="expected utility at which a user is satisfied")
    patience: int | None = Field(None, ge=1, description="unsatisfying replies before a user leaves")
    leave_utility: float | None = Field(None, description="a reply this bad makes the user leave at once")
    drift: float = Field(0.0, ge=0.0, description="per-episode random walk of preference weights")
    inconsistent: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random feedback")
    adversarial: float = Field(0.0, ge=0.0, le=1.0, description="probability of an inverted feedback")
    group_tag: bool = Field(False, description="show the user's group to the policy (a group tag opens the "
                            "conversation): a group-conditioned policy")
    question_cost: float | None = Field(None, ge=0.0, description="elicitation envs (attune/Elicitation-v1) only: "
                                        "utility a clarifying question costs (unset: the env's default, 0.1)")

    @field_validator("module")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None:
            import_user_module(value)
        return value

    @field_validator("id")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        import envs

        if "module" not in info.data:  # env.module failed and says why; the id cannot be judged without it
            return value
        try:
            kind = envs.env_kind(value)
        except Exception:  # noqa: BLE001 - gymnasium's NameNotFound/VersionNotFound, or an entry point that fails
            kind = None
        if kind is None:
            own = "" if info.data.get("module") else "; your own: register it in a module and name that module in env.module"
            raise ValueError(f"unknown environment {value!r}; registered: "
                             f"{', '.join(envs.registered_env_ids('text'))}{own}")
        return value

    @model_validator(mode="after")
    def _question_cost_needs_elicitation(self) -> "EnvSettings":
        if self.question_cost is not None:
            import inspect

            from envs.registry import env_class

            if "question_cost" not in inspect.signature(env_class(self.id).__init__).parameters:
                raise ValueError(f"env.question_cost: environment {self.id!r} asks no questions; use an elicitation "
                                 "env (env.id=attune/Elicitation-v1) or remove env.question_cost")
        return self

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the environment (everything but the id and the module; settings only some
        environments take, such as ``question_cost``, only when set)."""
        unset = {name for name in ("question_cost",) if getattr(self, name) is None}
        return self.model_dump(exclude={"id", "module"} | unset)


def import_user_module(name: str) -> Any:
    """Import a user's module by dotted name, from the current folder first (as ``python -m`` does)."""
    import importlib
    import os
    import sys

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
        raise ValueError(f"{name!r} is not a module name; give a dotted Python name such as my_envs")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises is one line for them
        raise ValueError(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from None


class GroupSettings(_Section):
    name: str = Field(min_length=1)
    share: float = Field(gt=0.0, description="relative size of the group")
    preference_center: dict[str, float] = Field(description="dimension -> weight in [-1, 1]; missing = 0")
    spread: float = Field(0.15, ge=0.0, description="std of users' weights around the centre")

    @field_validator("preference_center")
    @classmethod
    def _weights_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for dimension, weight in value.items():
            if not -1.0 <= weight <= 1.0:
                raise ValueError(f"the weight of {dimension!r} must be in [-1, 1], got {weight}")
        return value


class UserSettings(_Section):
    n_users: int = Field(100, ge=2, le=100_000, description="users in the population (building 100,000 takes ~20 s)")
    held_out_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of users kept for evaluation only")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="population seed: same seed, same users")
    groups: list[GroupSettings] | None = Field(
        None, min_length=1, description="preference clusters replacing the scenario's own (e.g. a majority and a minority)"
    )
    dirichlet_alpha: float | None = Field(
        None, gt=0.0, description="draw each user's weights from a Dirichlet(alpha) mixture of the style dimensions' "
        "archetypes (PersonalLLM-style; small alpha = strong, diverse users) instead of from groups",
    )

    from_feedback: str | None = Field(
        None, description="a feedback database (the --db file of attune serve): the users are the people who judged "
        "there, each with preference weights fitted to their choices (see attune feedback report); replaces "
        "n_users, groups and dirichlet_alpha",
    )

    @field_validator("from_feedback")
    @classmethod
    def _people_with_choices(cls, value: str | None) -> str | None:
        if value is not None:
            from envs.people import decided, require_choices

            people = {r["user_id"] for r in decided(require_choices(value))}  # a missing file etc. is one line
            if len(people) < 2:
                raise ValueError(f"{value} has choices from {len(people)} person; users from feedback need at least 2 "
                                 "(one to train on, one held out): let more people judge in attune serve")
        return value

    @model_validator(mode="after")
    def _feedback_users_only(self) -> "UserSettings":
        if self.from_feedback is not None:
            for name in ("n_users", "groups", "dirichlet_alpha"):
                # By value, not by "was it given": a saved config.yaml holds every field and must load again.
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(f"users.{name}: the users are the people of users.from_feedback; remove {name}")
        return self

    @field_validator("groups")
    @classmethod
    def _unique_group_names(cls, value: list[GroupSettings] | None) -> list[GroupSettings] | None:
        names = [g.name for g in value or []]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        return value


class LoraSettings(_Section):
    r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field("all-linear", min_length=1)


class PolicySettings(_Section):
    model: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="smollm2-135m-instruct (embedded), tiny-random (tests), a local folder, or a cached HF id",
    )
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights")


class RewardSpec(_Section):
    name: str = Field(min_length=1, description="a built-in reward (see `attune run --help`) or 'package.module:function'")
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluationSettings(_Section):
    enabled: bool = Field(True, description="score the base and the trained policy on held-out users")
    prompts: int = Field(32, ge=1, description="held-out conversations scored before and after training")
    max_new_tokens: int = Field(48, ge=1, description="length limit of each evaluated reply, in tokens")
    temperature: float = Field(0.7, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling of evaluated replies")
    batch_size: int = Field(16, ge=1, description="replies generated at once (make bench-eval: on one CPU core 16 "
                            "plays a conversation in 0.59 s, 8 in 0.73, 32 in 0.49; 16 keeps the default learning "
                            "curve's 16 conversations identical to the evaluation's first 16)")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="sampling and pairwise-choice seed; the same for before and after")
    noise_seeds: int = Field(
        0, ge=0, description="extra sampling seeds to re-score the base policy with: measures seed-to-seed noise"
    )
    balance_groups: bool = Field(False, description="give every user group an equal share of the held-out "
                                 "conversations (a rare group is measured on as many as the majority)")
    text_metrics: bool = Field(True, description="also score the replies with the models: the base model's "
                               "perplexity of them, the KL to the base policy, the policy's perplexity of the users' "
                               "own texts, and BLEU/chrF (sacrebleu) of the replies against those texts (a few seconds; distinct-n needs no "
                               "model and is always reported)")
    cache: bool = Field(True, description="reuse the base policy's evaluation from the attune cache when everything "
                        "it depends on is unchanged (model files, env, users, these settings, code)")
    curve_every: int = Field(
        0, ge=0, description="also score the policy every N training steps on curve_prompts conversations: a "
        "learning curve against training seconds (0: only before and after)")
    curve_prompts: int = Field(16, ge=1, description="conversations each learning-curve point is scored on "
                               "(the first of the evaluation's; a multiple of batch_size keeps them identical)")


class TrackingSettings(_Section):
    runs_dir: str = Field("runs", min_length=1, description="run folders go to <runs_dir>/<run name>/")
    wandb: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline writes a W&B run into the run folder; online needs `wandb login`"
    )
    project: str = Field("attune", min_length=1, max_length=128, description="W&B project")
    name: str | None = Field(None, description="run name; default <experiment>__<env>__s<seed>__<time>")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(NAME_PATTERN, value) or value in (".", "..")):
            raise ValueError("a run name becomes a folder name: use letters, digits and . _ = + - only")
        return value

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        bad = sorted(set(value) & set("/\\#?%:"))
        if bad:
            raise ValueError(f"a W&B project name cannot contain {' '.join(bad)}")
        return value


class DPSettings(_Section):
    """DP-SGD (Opacus) for the methods that train on users' own data; the privacy unit is a user."""

    epsilon: float | None = Field(None, gt=0.0, description="target privacy budget: the noise is calibrated to reach it "
                                  "over the whole run (give epsilon or noise_multiplier, not both)")
    noise_multiplier: float | None = Field(None, ge=0.0, description="Gaussian noise std / max_grad_norm; "
                                           "epsilon is then reported, not targeted")
    max_grad_norm: float = Field(1.0, gt=0.0, description="per-user gradient clipping bound")
    delta: float | None = Field(None, gt=0.0, lt=1.0, description="delta of (epsilon, delta)-DP, below 1/(training "
                                "users); default the largest power of ten below it")

    @model_validator(mode="after")
    def _one_noise_source(self) -> DPSettings:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("privacy.dp: give exactly one of epsilon (a target budget) or noise_multiplier")
        return self


PRIVATE_REWARDS = ("learned_reward_model",)
"""Rewards trained on the users' data that train by DP-SGD under ``privacy.dp`` (a method does when it has a
``check_privacy``: see :class:`agents.MethodSpec`)."""


class PrivacySettings(_Section):
    dp: DPSettings | None = Field(None, description="train with differential privacy (DP-SGD, per-user clipping "
                                  "and noise); methods that train on users' own data only")
    redact: bool = Field(True, description="pass every text that leaves the process (run files, reports, W&B, "
                         "the evaluation cache) through the PII redactor (emails, phone numbers, the users' names, "
                         "street addresses, card numbers); false is for debugging only")


class FairnessSettings(_Section):
    """Mitigations for the users a pooled objective serves worst (the fairness report itself is always on)."""

    balanced_sampling: bool = Field(False, description="draw the training prompts group-balanced: every user group "
                                    "an equal share, however rare (methods that train on prompts)")
    maxmin: bool = Field(False, description="train on the MaxMin reward: the user_feedback reward is replaced by "
                         "the worst-off group's utility for each reply (rewards: maxmin, same weight and noise)")


class SweepSettings(_Section):
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="dotted config key -> {grid|choice: [values]} or {uniform|loguniform|randint: [low, high]}",
    )
    seeds: list[typing.Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, min_length=1, description="a grid over the experiment seed")
    metric: str = Field("mean_utility", description="what to optimize: mean_utility, improvement, win_rate, ...")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(1, ge=1, description="samples of the space (each grid point is run num_samples times)")
    max_concurrent: int = Field(1, ge=1, description="trials at once")
    trial_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per trial")


class ExperimentConfig(_Section):
    experiment: str = Field("experiment", min_length=1,
                            description="a short name for this experiment (letters, digits and . _ = + -)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the run's one seed source: every consumer's seed is derived from it")
    threads: int = Field(1, ge=1, le=1024, description="torch CPU threads; 1 is often fastest on small shared machines")
    env: EnvSettings = Field(default_factory=EnvSettings)
    users: UserSettings = Field(default_factory=UserSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    method: str = Field("grpo", description="the training method: an LLM method on a conversation env, or a "
                        "classic baseline on a discrete variant (each listed below with its method_settings), "
                        "or your own as package.module:name (see agents.register_method)",
                        json_schema_extra={"allowed": "methods"})
    method_settings: dict[str, Any] = Field(
        default_factory=dict, description="settings of the method itself, outside TRL (each method's are listed below)",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        import agents

        if ":" in value:  # your own method: its module is imported as env.module is
            import_user_module(value.partition(":")[0])
            agents.get_method(value)  # a MethodLookupError (a ValueError) says what is missing
            return value
        names = agents.method_names()
        if value not in names:
            raise ValueError("Input should be " + ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}; "
                             "or your own as 'package.module:name'")
        return value
    prompts: int = Field(64, ge=1, description="training prompts drawn from env resets of training users "
                         "(at most the distinct opening messages the training users and tasks give)")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="user_feedback")], min_length=1,
                                      description="what training optimizes: a weighted sum of reward functions")
    trainer: dict[str, Any] = Field(default_factory=dict, description="passed through to the TRL config class")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: only the final model)")
    resume: bool = Field(False, description="continue the last unfinished run of this experiment from its checkpoint")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    fairness: FairnessSettings = Field(default_factory=FairnessSettings)
    sweep: SweepSettings | None = Field(None, description="a search over this config with `attune sweep`")
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="run several configurations side by side: each has a name and top-level keys that "
        "replace the base config's (e.g. {name: dpo, method: dpo, trainer: {max_steps: 4}})",
    )
    seeds: list[typing.Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, min_length=1, description="training seeds: run the config (each variant) once per seed and compare "
        "across seeds (IQM with stratified-bootstrap intervals); replaces seed. A sweep uses sweep.seeds instead")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"each training seed once, got {value}")
        return value

    @field_validator("experiment")
    @classmethod
    def _experiment_name(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError("the experiment name is part of run folder names: use letters, digits and . _ = + - only")
        return value

    @field_validator("trainer")
    @classmethod
    def _common_trainer_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, setting in value.items():
            problem = _trainer_setting_problem(key, setting)
            if problem:
                raise ValueError(f"trainer.{key}: {problem} (got {setting!r})")
        return value

    def variant_configs(self) -> list[tuple[str, ExperimentConfig]]:
        """One validated config per variant: the base config with the variant's top-level keys replaced."""
        base = self.model_dump(mode="json", exclude={"variants", "seeds"})
        if not self.variants:  # training seeds of a plain config: the config is its one variant
            return [(self.method, ExperimentConfig.model_validate(base))]
        out = []
        for i, variant in enumerate(self.variants):
            variant = dict(variant)
            name = variant.pop("name", None)
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise ConfigError(f"variants.{i}.name: each variant needs a name of letters, digits, . _ -")
            if "variants" in variant or "resume" in variant or "seeds" in variant:
                raise ConfigError(f"variants.{i}: a variant cannot set variants, seeds or resume")
            try:
                out.append((name, ExperimentConfig.model_validate({**base, **variant})))
            except ValidationError as exc:
                from experiments.config_files import format_validation_error  # it imports this module

                raise ConfigError(f"variants.{i} ({name}): " + format_validation_error(exc)) from None
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError("variants: names must be unique")
        return out

    @model_validator(mode="after")
    def _seeds_fit(self) -> ExperimentConfig:
        if self.seeds is not None and self.sweep is not None:
            raise ValueError("seeds: a sweep takes its seeds from sweep.seeds; remove the top-level seeds")
        if self.seeds is not None and self.resume:
            raise ValueError("resume: a run over several seeds cannot resume; resume one of its runs, or remove seeds")
        return self

    @model_validator(mode="after")
    def _method_fits_env(self) -> ExperimentConfig:
        import envs

        import agents

        baseline = agents.get_method(self.method).kind == "baseline"
        try:
            kind = envs.env_kind(self.env.id)
        except Exception:  # noqa: BLE001 - env.id already reported the unknown id
            return self
        if baseline and kind != "discrete":
            raise ValueError(
                f"env.id: method {self.method} picks response styles; use a discrete variant: "
                + ", ".join(envs.registered_env_ids("discrete"))
            )
        if not baseline and kind == "discrete":
            raise ValueError(
                f"env.id: {self.env.id!r} is a discrete-action variant (for the baselines: "
                f"{', '.join(m.name for m in agents.methods() if m.kind == 'baseline')}); an LLM "
                f"policy needs a conversation env: {', '.join(envs.registered_env_ids('text'))}"
            )
        return self

    @model_validator(mode="after")
    def _fairness_fits(self) -> ExperimentConfig:
        import agents

        on = [name for name in ("balanced_sampling", "maxmin") if getattr(self.fairness, name)]
        if not on:
            return self
        field = f"fairness.{on[0]}"
        method = agents.get_method(self.method)
        if method.kind == "baseline":
            raise ValueError(f"{field}: method {self.method} is a classic baseline on a discrete env; the fairness "
                             "mitigations train LLM policies: remove the fairness: block or pick an LLM method")
        if self.users.dirichlet_alpha is not None:
            groups, why = 1, "users.dirichlet_alpha draws everyone into one group"
        elif self.users.groups is not None:
            groups, why = len(self.users.groups), "users.groups"
        else:
            try:
                import envs
                from envs.scenarios import get_scenario

                groups, why = len(get_scenario(envs.scenario_of(self.env.id)).groups), f"the scenario of {self.env.id}"
            except Exception:  # noqa: BLE001 - a user's own env: its population is checked when the run starts
                groups, why = MIN_FAIRNESS_GROUPS, ""
        if groups < MIN_FAIRNESS_GROUPS:
            raise ValueError(f"{field}: needs at least {MIN_FAIRNESS_GROUPS} user groups, and {why} gives {groups}; "
                             "set users.groups with two or more groups, or turn it off")
        if self.fairness.balanced_sampling and not method.uses_prompts:
            raise ValueError(f"fairness.balanced_sampling: method {self.method} draws no training prompts; turn it "
                             "off, or use a method that trains on prompts (grpo, rloo, ppo, dpo, online_dpo, sft)")
        if self.fairness.maxmin:
            names = [s.name for s in self.rewards]
            if "user_feedback" not in names:
                raise ValueError("fairness.maxmin: swaps the user_feedback reward for MaxMin, but rewards has none ("
                                 f"{', '.join(names)}); add {{name: user_feedback}} to rewards, or list "
                                 "{name: maxmin} in rewards yourself and turn fairness.maxmin off")
        return self

    @model_validator(mode="after")
    def _privacy_fits_method(self) -> ExperimentConfig:
        import agents

        if self.privacy.dp is None:
            return self
        method = agents.get_method(self.method)
        if getattr(method, "check_privacy", None) is None and (
                method.kind == "baseline" or not any(s.name in PRIVATE_REWARDS for s in self.rewards)):
            raise ValueError(f"privacy.dp: method {self.method} does not train with differential privacy; use method: "
                             f"sft or a {' or '.join(PRIVATE_REWARDS)} reward (DP-SGD on the users' data), or remove privacy.dp")
        return self

    @model_validator(mode="after")
    def _check_rewards(self) -> ExperimentConfig:
        from rewards import RewardLookupError, get_reward

        for i, spec in enumerate(self.rewards):
            try:
                get_reward(spec.name)
            except RewardLookupError as exc:
                raise ValueError(f"rewards.{i}.name: {exc}") from None
        return self
