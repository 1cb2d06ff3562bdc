"""The experiment config: a YAML file validated by pydantic, with ``key=value`` overrides from the CLI.

Unknown keys and bad values are errors that name the field and the allowed values::

    config error: env.feedback: Input should be 'rating' or 'utility' (got 'stars')
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config the user can fix: the message names the field and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvSettings(_Section):
    id: str = Field("attune/WritingAssistant-v0", description="registered conversation env id (attune/<Name>-vN)")
    max_turns: int = Field(1, ge=1, le=20, description="replies per episode; 1 = single-turn")
    feedback: Literal["rating", "utility", "pairwise", "critique", "implicit"] = Field(
        "rating", description="the users' feedback channel (the env's reward in multi-turn training)"
    )
    reward_mode: Literal["per_turn", "episode_end"] = "per_turn"
    noise: float = Field(0.1, ge=0.0, description="std of the users' utility noise")
    satisfaction_utility: float = Field(1.5, description="expected utility at which a user is satisfied")
    patience: int | None = Field(None, ge=1, description="unsatisfying replies before a user leaves")
    leave_utility: float | None = Field(None, description="a reply this bad makes the user leave at once")
    drift: float = Field(0.0, ge=0.0, description="per-episode random walk of preference weights")
    inconsistent: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random feedback")
    adversarial: float = Field(0.0, ge=0.0, le=1.0, description="probability of an inverted feedback")

    @field_validator("id")
    @classmethod
    def _registered(cls, value: str) -> str:
        import envs

        if value not in envs.ENV_IDS:
            raise ValueError(f"unknown environment {value!r}; registered: {', '.join(envs.TEXT_ENV_IDS)}")
        return value

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the environment (everything but the id)."""
        return self.model_dump(exclude={"id"})


class GroupSettings(_Section):
    name: str
    share: float = Field(gt=0.0, description="relative size of the group")
    preference_center: dict[str, float] = Field(description="dimension -> weight in [-1, 1]; missing = 0")
    spread: float = Field(0.15, ge=0.0, description="std of users' weights around the centre")


class UserSettings(_Section):
    n_users: int = Field(100, ge=2, description="users in the population")
    held_out_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of users kept for evaluation only")
    seed: int = Field(0, description="population seed: same seed, same users")
    groups: list[GroupSettings] | None = Field(
        None, description="preference clusters replacing the scenario's own (e.g. a majority and a minority)"
    )


class LoraSettings(_Section):
    r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field("all-linear")


class PolicySettings(_Section):
    model: str = Field(
        "smollm2-135m-instruct",
        description="smollm2-135m-instruct (embedded), tiny-random (tests), a local folder, or a cached HF id",
    )
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights")


class RewardSpec(_Section):
    name: str = Field(description="a built-in reward (see `attune run --help`) or 'package.module:function'")
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluationSettings(_Section):
    enabled: bool = True
    prompts: int = Field(32, ge=1, description="held-out conversations scored before and after training")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(8, ge=1)
    seed: int = Field(1234, description="sampling and pairwise-choice seed; the same for before and after")
    noise_seeds: int = Field(
        0, ge=0, description="extra sampling seeds to re-score the base policy with: measures seed-to-seed noise"
    )


class TrackingSettings(_Section):
    runs_dir: str = Field("runs", description="run folders go to <runs_dir>/<run name>/")
    wandb: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline writes a W&B run into the run folder; online needs `wandb login`"
    )
    project: str = "attune"
    name: str | None = Field(None, description="run name; default <experiment>__<env>__s<seed>__<time>")


class SweepSettings(_Section):
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="dotted config key -> {grid|choice: [values]} or {uniform|loguniform|randint: [low, high]}",
    )
    seeds: list[int] | None = Field(None, description="a grid over the experiment seed")
    metric: str = Field("mean_utility", description="what to optimize: mean_utility, improvement, win_rate, ...")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(1, ge=1, description="samples of the space (each grid point is run num_samples times)")
    max_concurrent: int = Field(1, ge=1, description="trials at once")
    trial_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per trial")


class ExperimentConfig(_Section):
    experiment: str = Field("experiment", description="a short name for this experiment")
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch CPU threads; 1 is often fastest on small shared machines")
    env: EnvSettings = Field(default_factory=EnvSettings)
    users: UserSettings = Field(default_factory=UserSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    method: Literal["grpo", "rloo", "ppo", "dpo", "online_dpo", "sft", "prompting", "linucb", "rllib_ppo", "rllib_dqn"] = "grpo"
    method_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the method itself, outside TRL (dpo: rounds, samples; sft: per; prompting: profile, retrieval_k)",
    )
    prompts: int = Field(64, ge=1, description="training prompts drawn from env resets of training users")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="user_feedback")], min_length=1)
    trainer: dict[str, Any] = Field(default_factory=dict, description="passed through to the TRL config class")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: only the final model)")
    resume: bool = Field(False, description="continue the last unfinished run of this experiment from its checkpoint")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    sweep: SweepSettings | None = Field(None, description="a search over this config with `attune sweep`")
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="run several configurations side by side: each has a name and top-level keys that "
        "replace the base config's (e.g. {name: dpo, method: dpo, trainer: {max_steps: 4}})",
    )

    def variant_configs(self) -> list[tuple[str, ExperimentConfig]]:
        """One validated config per variant: the base config with the variant's top-level keys replaced."""
        base = self.model_dump(mode="json", exclude={"variants"})
        out = []
        for i, variant in enumerate(self.variants):
            variant = dict(variant)
            name = variant.pop("name", None)
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise ConfigError(f"variants.{i}.name: each variant needs a name of letters, digits, . _ -")
            if "variants" in variant or "resume" in variant:
                raise ConfigError(f"variants.{i}: a variant cannot set variants or resume")
            try:
                out.append((name, ExperimentConfig.model_validate({**base, **variant})))
            except ValidationError as exc:
                raise ConfigError(f"variants.{i} ({name}): " + _format_validation_error(exc)) from None
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError("variants: names must be unique")
        return out

    @model_validator(mode="after")
    def _method_fits_env(self) -> ExperimentConfig:
        import envs

        baseline = self.method in ("linucb", "rllib_ppo", "rllib_dqn")
        if baseline and self.env.id not in envs.DISCRETE_ENV_IDS:
            raise ValueError(
                f"env.id: method {self.method} picks response styles; use a discrete variant: "
                + ", ".join(envs.DISCRETE_ENV_IDS)
            )
        if not baseline and self.env.id in envs.DISCRETE_ENV_IDS:
            raise ValueError(
                f"env.id: {self.env.id!r} is a discrete-action variant (for linucb, rllib_ppo, rllib_dqn); an LLM "
                f"policy needs a conversation env: {', '.join(envs.TEXT_ENV_IDS)}"
            )
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


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not location:  # a cross-field check: its message starts with the field it is about
            head, sep, rest = message.partition(": ")
            location, message = (head, rest) if sep and re.fullmatch(r"[a-z_.0-9]+", head) else ("config", message)
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling (see `attune run --help` for the fields)"
        got = error.get("input")
        suffix = f" (got {got!r})" if error["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict) else ""
        if location.startswith("rewards.") and message.startswith("rewards."):
            location, _, message = message.partition(": ")
        lines.append(f"{location}: {message}{suffix}")
    return "; ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a', 'b', 'c'], value parsed as a YAML scalar)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {'.'.join(path)}: {where} is not a valid list index (0..{len(node) - 1})")
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {'.'.join(path)}: {where} is a value, not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {'.'.join(path)}: not a valid list index (0..{len(node) - 1})")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Raises :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; the bundled configs are in experiments/configs/")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys (env:, policy:, ...)")
        data = loaded or {}
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, *parse_override(item))
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    config.variant_configs()  # validate every variant now, before anything runs
    return config


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
