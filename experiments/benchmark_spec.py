"""A benchmark file: its schema, loading and the experiment config of each arm (``attune benchmark``).

A benchmark is a YAML file in ``experiments/benchmarks/`` (or any path)::

    name: pluralistic                # the folder is <runs_dir>/benchmark-<name>-<scale>/
    title: "..."
    sources: {key: "full citation"}  # cited by claims and the published column
    base: {...}                      # an experiment config (as for attune run)
    arms:                            # what is compared: dotted config keys set on the base
      - {name: pooled, description: "...", set: {}}
      - {name: maxmin, set: {rewards: [{name: maxmin}]}}
    factors:                         # crossed with the arms; one config key each, with named levels
      ratio: {label: "majority:minority", key: users.groups.0.share, levels: {"1:1": 1.0, "10:1": 10.0}}
    seeds: [0, 1, 2]
    seed_key: seed                   # the config key a seed sets (users.seed: each seed draws other users)
    scales:                          # --scale NAME: seeds, levels, arms, trials at once, and keys set on the base
      smoke: {seeds: [0, 1], levels: {ratio: ["1:1", "10:1"]}, max_concurrent: 2, set: {policy.model: tiny-random}}
      paper: {set: {}}
    metrics: [win_rate:majority, win_rate:minority, worst_group_win_rate, majority_minority_gap, win_rate]
    published: {arm: {metric: "what the paper reports for it"}}
    claims:                          # the published shapes, each checked on the seed means
      - {id: ..., claim: "...", left: {arm, metric}, minus: {arm, metric}, op: ">=", value: 0.10,
         at: mean | each | [level, ...], published: "...", source: key}
      - {id: ..., claim: "...", trend: {arm, metric, factor, direction: increasing | decreasing}}

A claim compares ``left [- minus]`` with ``value`` or ``right [- right_minus]`` (``op``: < <= > >=), on the
mean over the factor's levels (``at: mean``, the default), at every level (``each``) or at the listed ones.
``metrics`` name trial metrics declared in :mod:`experiments.benchmark_metrics` (``win_rate:<group>`` for a
per-group one). A scale's ``arms`` runs only those arms (a smoke scale runs the arms its claims need).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experiments.benchmark_metrics import metric_problem
from experiments.config import ConfigError
from experiments.config_files import apply_override, parse_override, read_config_file

BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config key -> value, set on the base")


class Factor(_Strict):
    label: str = ""
    key: str = Field(description="the dotted config key the levels set")
    levels: dict[str, Any] = Field(min_length=1, description="level name -> the key's value")


class Scale(_Strict):
    seeds: list[int] | None = None
    levels: dict[str, list[str]] = Field(default_factory=dict, description="factor -> the level names to run")
    arms: list[str] | None = Field(None, min_length=1, description="the arms run at this scale (default: all)")
    max_concurrent: int = Field(1, ge=1)
    trial_cpus: float = Field(1.0, gt=0)
    set: dict[str, Any] = Field(default_factory=dict)


class Term(_Strict):
    arm: str
    metric: str


class Trend(_Strict):
    arm: str
    metric: str
    factor: str
    direction: Literal["increasing", "decreasing"]


class Claim(_Strict):
    id: str
    claim: str
    left: Term | None = None
    minus: Term | None = None
    op: Literal["<", "<=", ">", ">="] | None = None
    right: Term | None = None
    right_minus: Term | None = None
    value: float | None = None
    at: Literal["mean", "each"] | list[str] = "mean"
    trend: Trend | None = None
    published: str = ""
    source: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> Claim:
        if self.trend is not None:
            if self.left or self.right or self.op:
                raise ValueError("a claim is either a trend or a comparison (left, op, right/value), not both")
            return self
        if self.left is None or self.op is None or (self.right is None) == (self.value is None):
            raise ValueError("a comparison claim needs left, op and one of right or value")
        if self.right_minus is not None and self.right is None:
            raise ValueError("right_minus needs right")
        return self

    def terms(self) -> list[Term | Trend]:
        return [t for t in (self.left, self.minus, self.right, self.right_minus, self.trend) if t is not None]


class Benchmark(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    title: str = ""
    sources: dict[str, str] = Field(default_factory=dict)
    base: dict[str, Any]
    arms: list[Arm] = Field(min_length=1)
    factors: dict[str, Factor] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    seed_key: str = Field("seed", description="the config key each seed sets: the run's seed (training), or e.g. "
                          "users.seed for training-free arms, whose replicates are other users")
    scales: dict[str, Scale] = Field(default_factory=lambda: {"paper": Scale()})
    metrics: list[str] = Field(min_length=1)
    published: dict[str, dict[str, str]] = Field(default_factory=dict)
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Benchmark:
        arms = [a.name for a in self.arms]
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms: names must be unique, got {arms}")
        for metric in self.metrics:
            if metric_problem(metric):
                raise ValueError(f"metrics: {metric_problem(metric)}")
        for arm, row in self.published.items():
            if arm not in arms:
                raise ValueError(f"published.{arm}: not an arm; arms: {', '.join(arms)}")
        for scale_name, scale in self.scales.items():
            for factor, names in scale.levels.items():
                if factor not in self.factors:
                    raise ValueError(f"scales.{scale_name}.levels.{factor}: not a factor; factors: {', '.join(self.factors)}")
                unknown = [n for n in names if n not in self.factors[factor].levels]
                if unknown or not names:
                    raise ValueError(f"scales.{scale_name}.levels.{factor}: unknown level(s) {unknown}; "
                                     f"levels: {', '.join(self.factors[factor].levels)}")
            unknown_arms = [a for a in scale.arms or [] if a not in arms]
            if unknown_arms:
                raise ValueError(f"scales.{scale_name}.arms: unknown arm(s) {unknown_arms}; arms: {', '.join(arms)}")
        for i, claim in enumerate(self.claims):
            for term in claim.terms():
                if term.arm not in arms:
                    raise ValueError(f"claims.{i} ({claim.id}): arm {term.arm!r} is not an arm; arms: {', '.join(arms)}")
                if term.metric not in self.metrics:
                    raise ValueError(f"claims.{i} ({claim.id}): metric {term.metric!r} is not in metrics: "
                                     f"{', '.join(self.metrics)}")
                if isinstance(term, Trend) and term.factor not in self.factors:
                    raise ValueError(f"claims.{i} ({claim.id}): factor {term.factor!r} is not a factor")
            if isinstance(claim.at, list):
                all_levels = {n for f in self.factors.values() for n in f.levels}
                unknown = [n for n in claim.at if n not in all_levels]
                if unknown:
                    raise ValueError(f"claims.{i} ({claim.id}).at: unknown level(s) {unknown}")
            if claim.source and claim.source not in self.sources:
                raise ValueError(f"claims.{i} ({claim.id}).source: {claim.source!r} is not in sources")
        return self


def available_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.yaml"))


def benchmark_path(name_or_file: str) -> Path:
    """A bundled benchmark's name (``pluralistic``) or a YAML file's path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    bundled = BENCHMARKS_DIR / f"{name_or_file}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"benchmark {name_or_file!r}: no such benchmark; bundled: {', '.join(available_benchmarks())}, "
                          "or give the path of a benchmark YAML")
    return bundled


def load_benchmark(name_or_file: str) -> Benchmark:
    path = benchmark_path(name_or_file)
    data = read_config_file(path)
    try:
        return Benchmark.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key; check the spelling"
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"benchmark {path}: " + "; ".join(problems)) from None


# --- configs --------------------------------------------------------------------------------------------


def arm_config_data(bench: Benchmark, arm: Arm, scale: str, overrides: list[str] = ()) -> dict[str, Any]:
    """The experiment config (as data) of one arm: the base, the scale's keys, the command line's, the arm's."""
    data = copy.deepcopy(bench.base)
    for key, value in bench.scales[scale].set.items():
        apply_override(data, key.split("."), copy.deepcopy(value))
    for item in overrides:
        apply_override(data, *parse_override(item))
    for key, value in arm.set.items():
        apply_override(data, key.split("."), copy.deepcopy(value))
    return data


def scale_levels(bench: Benchmark, scale: str) -> dict[str, list[str]]:
    """Each factor's level names run at ``scale`` (in the benchmark's order)."""
    chosen = bench.scales[scale].levels
    return {name: [lv for lv in factor.levels if lv in chosen.get(name, factor.levels)]
            for name, factor in bench.factors.items()}


def scale_arms(bench: Benchmark, scale: str) -> list[Arm]:
    """The arms run at ``scale`` (in the benchmark's order)."""
    chosen = bench.scales[scale].arms
    return [a for a in bench.arms if chosen is None or a.name in chosen]
