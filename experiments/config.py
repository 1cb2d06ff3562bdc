"""The experiment config: a YAML file validated by pydantic, with ``key=value`` overrides from the CLI.

Unknown keys and bad values are errors that name the field and the allowed values::

    config error: env.feedback: Input should be 'rating' or 'utility' (got 'stars')
"""

from __future__ import annotations

import configparser
import copy
import math
import netrc
import numbers
import os
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class ConfigError(ValueError):
    """A config the user can fix: the message names the field and the fix."""


NAME_PATTERN = r"[A-Za-z0-9._=+-]+"
"""Characters allowed in run and experiment names: they become folder names."""
MAX_SEED = 2**31 - 1  # numpy, torch and Python's random all accept seeds in [0, 2**31)


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

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the environment (everything but the id and the module)."""
        return self.model_dump(exclude={"id", "module"})


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
    batch_size: int = Field(8, ge=1, description="replies generated at once")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="sampling and pairwise-choice seed; the same for before and after")
    noise_seeds: int = Field(
        0, ge=0, description="extra sampling seeds to re-score the base policy with: measures seed-to-seed noise"
    )
    balance_groups: bool = Field(False, description="give every user group an equal share of the held-out "
                                 "conversations (a rare group is measured on as many as the majority)")
    text_metrics: bool = Field(True, description="also score the replies with the models: the base model's "
                               "perplexity of them, the KL to the base policy, the policy's perplexity of the users' "
                               "own texts (a few seconds; distinct-n needs no model and is always reported)")
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
                raise ConfigError(f"variants.{i} ({name}): " + _format_validation_error(exc)) from None
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
        head, sep, rest = message.partition(": ")
        names_field = bool(sep) and re.fullmatch(r"[A-Za-z_][A-Za-z_.0-9-]*", head) is not None
        if not location:  # a cross-field check: its message starts with the field it is about
            location, message = (head, rest) if names_field else ("config", message)
        elif names_field and head.split(".")[0] == location.split(".")[0] and len(head) >= len(location):
            location, message = head, rest  # a check of a section that names the exact key (trainer.max_steps)
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling (see `attune run --help` for the fields)"
        got = error.get("input")
        shown = error["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict)
        suffix = f" (got {_short(got)})" if shown and "(got " not in message else ""
        lines.append(f"{location}: {message}{suffix}")
    return "; ".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DuplicateKeyError(yaml.YAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise _DuplicateKeyError(f"line {line}: key {key!r} is given twice (first on line {seen}); "
                                             "keep one, YAML would silently use the last")
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 1e-5 as the string "1e-5"; a learning rate written that way is a number (as in YAML 1.2).
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python data, with :class:`StrictLoader` (duplicate keys are errors)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what."""
    if isinstance(exc, _DuplicateKeyError):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


_OVERRIDE_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a', 'b', 'c'], value parsed as a YAML scalar)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=10")
    if not _OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"override {item!r}: the key must be a dotted path of names or list indices, "
                          "e.g. env.max_turns or rewards.0.weight")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except _DuplicateKeyError as exc:
        raise ConfigError(f"override {key}: {exc}") from None
    except yaml.YAMLError:
        value = raw  # not YAML: the plain text (a name, a path)
    return key.split("."), value


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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises :class:`ConfigError` for anything but a non-empty mapping."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ConfigError(f"config {str(path)!r} is a folder; give a YAML file{hint}, e.g. experiments/configs/quickstart.yaml")
    if not path.is_file():
        kind = "not found" if not path.exists() else "not a regular file"
        raise ConfigError(f"config file {str(path)!r} {kind}; the bundled configs are in experiments/configs/")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: a binary file, not a YAML config")
    try:
        loaded = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if loaded is None or loaded == {}:
        raise ConfigError(f"{path}: the config is empty; give at least the settings to change, or start from "
                          "experiments/configs/quickstart.yaml")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (env:, policy:, ...)")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Raises :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if path is not None:
        data = copy.deepcopy(read_config_file(path))
    for item in overrides:
        apply_override(data, *parse_override(item))
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    config.variant_configs()  # validate every variant now, before anything runs
    return config


def check_runs_dir(runs_dir: str | Path) -> None:
    """``tracking.runs_dir`` must be a folder (or creatable as one) that this user can write into."""
    path = Path(runs_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"tracking.runs_dir: {str(path)!r} is a file, not a folder; point it at a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"tracking.runs_dir: {str(path)!r} cannot be created: {str(existing)!r} is a file")
    # Try it: permission bits say nothing to root, nor about read-only mounts and kernel filesystems.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".attune-write-check-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"tracking.runs_dir: {str(existing)!r} is not writable ({exc.strerror}); "
                          "choose a folder you can write to") from None


def wandb_credentials_found() -> bool:
    """Whether ``wandb`` could log in without asking: an API key in the environment, ~/.netrc or its settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else [os.path.expanduser("~/.netrc"),
                                                                       os.path.expanduser("~/_netrc")]
    for candidate in candidates:
        try:
            entry = netrc.netrc(candidate).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    settings = configparser.ConfigParser()
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.expanduser("~/.config/wandb")
    try:
        settings.read(os.path.join(config_dir, "settings"))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False
    return bool(settings.get("default", "api_key", fallback=""))


def distinct_openings(population: Any, users: Any, at_least: int) -> int:
    """How many distinct opening messages ``users`` give over the population's tasks (as ``env.reset`` draws
    them), counting only until ``at_least`` are found: fast when there are enough, exact when there are not."""
    seen: set[tuple[str, str]] = set()
    for profile in users:
        user = population.simulated_user(profile.user_id)
        for task in population.tasks:
            seen.add((task.task_id, user.ask(task)))
        if len(seen) >= at_least:
            break
    return len(seen)


def check_prompt_supply(config: ExperimentConfig, population: Any, training_prompts: bool = True) -> None:
    """``prompts`` and ``evaluation.prompts`` must not ask for more distinct conversations than the users and
    tasks give: prompts are drawn by resetting the env until that many distinct ones are found."""
    wanted = [("prompts", config.prompts, population.train_users, "training")] if training_prompts else []
    if config.evaluation.enabled:
        wanted.append(("evaluation.prompts", config.evaluation.prompts, population.held_out_users, "held-out"))
    for field, n, users, which in wanted:
        available = distinct_openings(population, users, n)
        if n > available:
            raise ConfigError(
                f"{field}: {n} asked for, but the {len(users)} {which} users and {len(population.tasks)} tasks give "
                f"only {available} distinct opening prompts; use {field}<={available} or more users (users.n_users)"
            )


def check_tracking(config: ExperimentConfig) -> None:
    """What the run folder and W&B need from this machine, checked before anything is loaded or written."""
    check_runs_dir(config.tracking.runs_dir)
    if config.tracking.wandb == "online" and not wandb_credentials_found():
        raise ConfigError("tracking.wandb=online: no W&B API key found (WANDB_API_KEY or ~/.netrc); run `wandb login` "
                          "first, or use tracking.wandb=offline (upload later with `wandb sync`)")


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def field_reference(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """One line per config field, generated from the model: ``dotted.name (allowed or type, default): help``.

    ``attune run --help`` shows these, so a field, its allowed values and its description live in one place.
    """
    model = model or ExperimentConfig
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = _section_of(annotation)
        if nested is not None and name not in ("sweep",):
            lines += field_reference(nested, f"{prefix}{name}.")
            continue
        kind = _describe_annotation(annotation)
        if (field.json_schema_extra or {}).get("allowed") == "methods":
            import agents

            kind = "|".join(agents.method_names())
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = "see its fields"
        elif isinstance(default, list):
            default = [d.model_dump() if isinstance(d, BaseModel) else d for d in default]
        shown = "" if field.is_required() else f", default {default!r}"
        lines.append(f"{prefix}{name} ({kind}{shown})" + (f": {field.description}" if field.description else ""))
    return lines


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation
    return None


def _describe_annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "|".join(str(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe_annotation(a) for a in typing.get_args(annotation))
    if origin in (list, dict):
        return origin.__name__
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    return str(annotation)

