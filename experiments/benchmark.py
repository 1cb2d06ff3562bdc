"""``attune benchmark``: a paper's experiment as one command, with seeds, intervals and its published shape.

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
    scales:                          # --scale NAME: seeds, levels, trials at once, and keys set on the base
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

Every arm runs as one ``attune sweep`` (the factor keys and the seeds as its grid) on one Ray: locally by
default, on a cluster with ``--address``; ``--resume`` continues a killed benchmark without rerunning a
finished trial. Every trial is a normal run folder and W&B run, grouped by benchmark. The end is
``benchmark.md`` (per metric: mean with its t interval, IQM with its stratified bootstrap interval, the
probability of improving on the first arm, n seeds, the published figure; each claim held or not held with
its numbers), ``benchmark.json`` and ``plots/benchmark.png``.

Metrics per trial, from its held-out evaluation: ``win_rate`` (the users' Bradley-Terry probability of
preferring the trained policy's reply to the base policy's), ``win_rate:<group>`` (the same over a group's
conversations), ``worst_group_win_rate``, ``majority_minority_gap`` (win rate of the largest group minus
the smallest's; the first and last group when shares tie), ``mean_utility``, ``mean_utility:<group>`` and
``improvement``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experiments.config import ConfigError
from experiments.config_files import apply_override, parse_override, read_config_file

BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"
OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
PLAIN_METRICS = ("win_rate", "worst_group_win_rate", "majority_minority_gap", "mean_utility", "improvement")
GROUP_METRICS = ("win_rate", "mean_utility")


def metric_problem(name: str) -> str | None:
    if name in PLAIN_METRICS:
        return None
    head, sep, group = name.partition(":")
    if sep and head in GROUP_METRICS and group:
        return None
    return (f"unknown metric {name!r}; use {', '.join(PLAIN_METRICS)}, or "
            + " / ".join(f"{m}:<group>" for m in GROUP_METRICS))


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


# --- per-trial metrics ----------------------------------------------------------------------------------


_POPULATIONS: dict[str, Any] = {}


def _population(config: Any) -> Any:
    import envs
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup

    key = json.dumps(config.model_dump(mode="json", include={"env", "users"}), sort_keys=True)
    if key not in _POPULATIONS:
        groups = None
        if config.users.groups is not None:
            groups = [UserGroup(g.name, g.share, g.preference_center, g.spread) for g in config.users.groups]
        _POPULATIONS[key] = UserPopulation(envs.scenario_of(config.env.id), n_users=config.users.n_users,
                                           held_out_fraction=config.users.held_out_fraction, seed=config.users.seed,
                                           groups=groups)
    return _POPULATIONS[key]


def trial_metrics(run_dir: Path) -> dict[str, float]:
    """Every benchmark metric of one finished trial, from its ``eval.json``, ``episodes.json`` and ``config.yaml``."""
    from experiments.config_files import load_config

    report = json.loads((run_dir / "eval.json").read_text())
    if "comparison" not in report:
        raise ConfigError(f"{run_dir}: the trial has no evaluation; benchmarks need evaluation.enabled: true")
    config = load_config(run_dir / "config.yaml")
    episodes = json.loads((run_dir / "episodes.json").read_text())
    population = _population(config)
    by_group: dict[str, list[float]] = {}
    for before, after in zip(episodes["before"], episodes["after"], strict=True):
        user = population.simulated_user(after["user_id"], noise=config.env.noise)
        task = population.task(after["task_id"])
        utility_after, utility_before = user.utility([after["replies"][0], before["replies"][0]], [task, task])
        by_group.setdefault(after["group"], []).append(float(user.choice_probability(utility_after, utility_before)))
    out: dict[str, float] = {
        "win_rate": float(report["comparison"]["win_rate"]),
        "mean_utility": float(report["after"]["mean_utility"]),
        "improvement": float(report["comparison"]["improvement"]),
    }
    groups = [(g.name, g.share) for g in config.users.groups] if config.users.groups else [(g.name, g.share) for g in population.groups]
    for name, _ in groups:
        out[f"win_rate:{name}"] = float(np.mean(by_group[name])) if by_group.get(name) else math.nan
        out[f"n:{name}"] = float(len(by_group.get(name, [])))
        group_after = report["after"]["by_group"].get(name)
        out[f"mean_utility:{name}"] = float(group_after["mean"]) if group_after else math.nan
    rates = [out[f"win_rate:{name}"] for name, _ in groups]
    out["worst_group_win_rate"] = float(min(rates)) if rates and not any(math.isnan(r) for r in rates) else math.nan
    # The largest group against the smallest; with equal shares, the first against the last (as listed).
    order = sorted(range(len(groups)), key=lambda i: (-groups[i][1], i))
    major, minor = groups[order[0]][0], groups[order[-1]][0]
    out["majority_minority_gap"] = out[f"win_rate:{major}"] - out[f"win_rate:{minor}"] if len(groups) > 1 else math.nan
    return out


# --- aggregation and claims -----------------------------------------------------------------------------


def level_key(levels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in levels.items()) or "-"


def aggregate(bench: Benchmark, trials: list[dict[str, Any]], levels: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One cell per (metric, arm, factor levels) over seeds: mean (t interval), IQM (stratified bootstrap interval),
    and the probability of improving on the first arm (the arms' seeds as runs)."""
    from itertools import product

    from experiments import stats

    combos = [dict(zip(levels, values)) for values in product(*levels.values())] if levels else [{}]
    reference = bench.arms[0].name
    cells = []
    for metric in bench.metrics:
        for combo in combos:
            scores = {}
            seeds_of = {}
            for arm in bench.arms:
                rows = [t for t in trials if t["arm"] == arm.name and t["levels"] == combo and t["status"] == "done"
                        and not math.isnan(t["metrics"].get(metric, math.nan))]
                scores[arm.name] = [t["metrics"][metric] for t in rows]
                seeds_of[arm.name] = [t["seed"] for t in rows]
            present = {a: v for a, v in scores.items() if v}
            summaries = {}
            if present:
                baseline = reference if reference in present and len(present) > 1 else None
                summaries = {s.method: s for s in stats.summarize_seeds(present, baseline=baseline)}
            for arm in bench.arms:
                values = scores[arm.name]
                mean = stats.mean_interval(values)
                summary = summaries.get(arm.name)
                p = summary.probability_of_improvement if summary else None
                cells.append({
                    "metric": metric, "arm": arm.name, "levels": combo, "n": len(values), "seeds": seeds_of[arm.name],
                    "values": values, "mean": mean.value, "mean_ci_low": mean.low, "mean_ci_high": mean.high,
                    "mean_interval": mean.interval,
                    "iqm": summary.iqm.value if summary else math.nan,
                    "iqm_ci_low": summary.iqm.low if summary else math.nan,
                    "iqm_ci_high": summary.iqm.high if summary else math.nan,
                    "iqm_interval": summary.iqm.interval if summary else "",
                    "p_improvement": p.value if p else None, "p_improvement_ci_low": p.low if p else None,
                    "p_improvement_ci_high": p.high if p else None,
                    "published": bench.published.get(arm.name, {}).get(metric, ""),
                })
    return cells


def _cell_mean(cells: list[dict[str, Any]], arm: str, metric: str, combo: dict[str, str]) -> float:
    for cell in cells:
        if cell["arm"] == arm and cell["metric"] == metric and cell["levels"] == combo:
            return cell["mean"] if cell["n"] else math.nan
    return math.nan


def _side(cells: list[dict[str, Any]], first: Term, second: Term | None, combo: dict[str, str]) -> tuple[float, str]:
    a = _cell_mean(cells, first.arm, first.metric, combo)
    text = f"{first.arm} {first.metric} {a:.3f}"
    if second is None:
        return a, text
    b = _cell_mean(cells, second.arm, second.metric, combo)
    return a - b, f"({text} - {second.arm} {second.metric} {b:.3f} = {a - b:+.3f})"


def evaluate_claim(claim: Claim, cells: list[dict[str, Any]], levels: dict[str, list[str]]) -> dict[str, Any]:
    """``held``, ``not held`` or ``not evaluated`` (missing values), with the numbers that decided it."""
    from itertools import product

    result = {"id": claim.id, "claim": claim.claim, "published": claim.published, "source": claim.source}
    if claim.trend is not None:
        t = claim.trend
        names = levels.get(t.factor, [])
        others = {k: v for k, v in levels.items() if k != t.factor}
        series, held = [], True
        for values in product(*others.values()) if others else [()]:
            fixed = dict(zip(others, values))
            points = [_cell_mean(cells, t.arm, t.metric, {**fixed, t.factor: name}) for name in names]
            # in the factor order of the config: levels dict order is the factor's own
            combo_points = [(name, v) for name, v in zip(names, points)]
            series.append((fixed, combo_points))
            if len(points) < 2 or any(math.isnan(v) for v in points):
                return {**result, "status": "not evaluated",
                        "numbers": f"{t.arm} {t.metric} needs values at two or more {t.factor} levels"}
            steps = np.diff(points)
            held = held and bool(np.all(steps > 0) if t.direction == "increasing" else np.all(steps < 0))
        numbers = "; ".join((level_key(fixed) + ": " if fixed else "") + " -> ".join(f"{n} {v:+.3f}" for n, v in pts)
                            for fixed, pts in series)
        return {**result, "status": "held" if held else "not held",
                "numbers": f"{t.arm} {t.metric} ({t.direction} expected): {numbers}",
                "values": {level_key(f): dict(p) for f, p in series}}
    combos = [dict(zip(levels, values)) for values in product(*levels.values())] if levels else [{}]
    if isinstance(claim.at, list):
        combos = [c for c in combos if any(v in claim.at for v in c.values())]
    if not combos:
        return {**result, "status": "not evaluated", "numbers": f"none of the levels {claim.at} was run at this scale"}
    per_combo = []
    for combo in combos:
        left, left_text = _side(cells, claim.left, claim.minus, combo)
        if claim.right is not None:
            right, right_text = _side(cells, claim.right, claim.right_minus, combo)
        else:
            right, right_text = float(claim.value), f"{claim.value:g}"
        per_combo.append((combo, left, right, left_text, right_text))
    if any(math.isnan(left) or math.isnan(right) for _, left, right, _, _ in per_combo):
        return {**result, "status": "not evaluated", "numbers": "some values are missing (failed trials, or a group with "
                "no held-out conversations)"}
    op = OPS[claim.op]
    if claim.at == "mean":
        left = float(np.mean([c[1] for c in per_combo]))
        right = float(np.mean([c[2] for c in per_combo]))
        held = bool(op(left, right))
        detail = "; ".join(f"{level_key(c[0])}: {c[3]} vs {c[4]}" for c in per_combo)
        numbers = f"mean over levels {left:+.3f} {claim.op} {right:+.3f}" + (f" ({detail})" if len(per_combo) > 1 else f" ({detail})")
        values = {"left": left, "right": right}
    else:
        held = all(bool(op(c[1], c[2])) for c in per_combo)
        numbers = "; ".join(f"{level_key(c[0])}: {c[3]} {claim.op} {c[4]} "
                            f"{'yes' if op(c[1], c[2]) else 'no'}" for c in per_combo)
        values = {level_key(c[0]): {"left": c[1], "right": c[2]} for c in per_combo}
    return {**result, "status": "held" if held else "not held", "numbers": numbers, "values": values}


# --- running --------------------------------------------------------------------------------------------


def _trial_levels(row: dict[str, Any], bench: Benchmark) -> dict[str, str]:
    out = {}
    for name, factor in bench.factors.items():
        value = row.get(factor.key)
        out[name] = next((lv for lv, v in factor.levels.items() if v == value), str(value))
    return out


def run_benchmark(bench: Benchmark, scale: str = "smoke", seeds: list[int] | None = None, address: str | None = None,
                  resume: bool = False, overrides: list[str] = (), console: Any = None,
                  command: str = "") -> tuple[Path, dict[str, Any]]:
    """Run every arm x factor level x seed as Ray Tune trials (one sweep per arm) and write the report.

    Returns the benchmark folder and the contents of ``benchmark.json``. Raises :class:`TrialsFailed`
    (exit code 1) after writing the report when a trial failed.
    """
    from rich.console import Console

    from experiments import offline, ray_cluster, sweep
    from experiments.config import ExperimentConfig
    from experiments.preflight import check_tracking

    console = console or Console()
    if scale not in bench.scales:
        raise ConfigError(f"--scale: {scale!r} is not a scale of benchmark {bench.name}; use one of {', '.join(bench.scales)}")
    seeds = list(seeds if seeds is not None else (bench.scales[scale].seeds or bench.seeds))
    levels = scale_levels(bench, scale)
    space = {bench.factors[name].key: {"grid": [bench.factors[name].levels[lv] for lv in names]}
             for name, names in levels.items()}
    configs = {}
    for arm in bench.arms:
        data = arm_config_data(bench, arm, scale, overrides)
        data.pop("sweep", None)
        data["sweep"] = {"space": space, "seeds": seeds, "metric": "win_rate", "mode": "max",
                         "max_concurrent": bench.scales[scale].max_concurrent,
                         "trial_cpus": bench.scales[scale].trial_cpus}
        try:
            configs[arm.name] = ExperimentConfig.model_validate(data)
        except ValidationError as exc:
            from experiments.config_files import format_validation_error

            raise ConfigError(f"arm {arm.name}: {format_validation_error(exc)}") from None
        if not configs[arm.name].evaluation.enabled:
            raise ConfigError(f"arm {arm.name}: evaluation.enabled must be true: every metric comes from it")
    first = next(iter(configs.values()))
    check_tracking(first)
    folder = Path(first.tracking.runs_dir).resolve() / (first.tracking.name or f"benchmark-{bench.name}-{scale}")
    if folder.exists() and any((folder / "arms").glob(f"*/{sweep.TUNE_DIR}")) and not resume:
        raise ConfigError(f"benchmark: {folder} exists; continue it with --resume, or set tracking.name=... to start another")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchmark.yaml").write_text(json.dumps(bench.model_dump(mode="json"), indent=2) + "\n")

    offline.go_offline()
    if offline.is_remote_address(address):
        offline.allow_ray_cluster()
    environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **offline.offline_environment()}
    for key in ("ATTUNE_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(key):
            environment[key] = os.environ[key]
    try:
        started_ray = ray_cluster.start_ray(address, environment)  # one Ray for every arm's sweep
    except ray_cluster.ClusterError as exc:
        Console(stderr=True).print(f"[red]ray cluster:[/] {exc.message}", soft_wrap=True, highlight=False)
        raise
    started = time.perf_counter()
    trials: list[dict[str, Any]] = []
    try:
        for arm in bench.arms:
            config = configs[arm.name]
            config = config.model_copy(update={"tracking": config.tracking.model_copy(
                update={"runs_dir": str(folder / "arms"), "name": arm.name})})
            arm_resume = resume and (folder / "arms" / arm.name / sweep.TUNE_DIR).exists()
            console.rule(f"arm {arm.name}")
            try:
                _, rows = sweep.run_sweep(config, benchmark_path_for_report(bench), address=address, resume=arm_resume,
                                          console=console, group=folder.name)
            except sweep.TrialsFailed as exc:
                rows = exc.rows
            for row in rows:
                trial = {"arm": arm.name, "levels": _trial_levels(row, bench), "seed": row.get("seed"),
                         "status": row["status"], "trial": row["trial"], "run_dir": row.get("run_dir")}
                if row.get("error"):
                    trial["error"] = row["error"]
                if row["status"] == "done" and row.get("run_dir"):
                    trial["metrics"] = trial_metrics(Path(row["run_dir"]))
                else:
                    trial["status"] = "error"
                    trial["metrics"] = {}
                trials.append(trial)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    trials.sort(key=lambda t: ([a.name for a in bench.arms].index(t["arm"]), list(t["levels"].values()), t["seed"]))
    cells = aggregate(bench, trials, levels)
    claims = [evaluate_claim(c, cells, levels) for c in bench.claims]
    result = {
        "benchmark": bench.name, "title": bench.title, "scale": scale, "command": command, "seeds": seeds,
        "levels": levels, "arms": [a.model_dump() for a in bench.arms], "metrics": bench.metrics,
        "model": first.policy.model, "seconds": time.perf_counter() - started,
        "eval_conversations": first.evaluation.prompts, "sources": bench.sources,
        "cells": cells, "claims": claims, "trials": trials,
    }
    (folder / "benchmark.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    plot_benchmark(folder, bench, cells, levels)
    (folder / "benchmark.md").write_text(render_markdown(bench, result))
    print_summary(console, result, folder)
    failed = [t for t in trials if t["status"] != "done"]
    if failed:
        rows = [{"trial": t["trial"], "status": t["status"]} for t in trials]
        raise sweep.TrialsFailed(folder, rows)
    return folder, result


def benchmark_path_for_report(bench: Benchmark) -> Path:
    """What each arm's best_config.yaml names as its origin."""
    return BENCHMARKS_DIR / f"{bench.name}.yaml"


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# --- output ---------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render_markdown(bench: Benchmark, result: dict[str, Any]) -> str:
    from experiments.stats import format_interval

    cells, claims, levels = result["cells"], result["claims"], result["levels"]
    reference = bench.arms[0].name
    done = [t for t in result["trials"] if t["status"] == "done"]
    lines = [f"# Benchmark {bench.name} (scale {result['scale']})", ""]
    if bench.title:
        lines += [bench.title, ""]
    if result["command"]:
        lines += ["Rerun with:", "", f"    {result['command']}", ""]
    lines += [
        f"Policy model `{result['model']}`; {len(result['trials'])} trials ({len(done)} finished) in "
        f"{result['seconds']:.0f} s: arms {', '.join(a.name for a in bench.arms)} x "
        + " x ".join(f"{bench.factors[f].label or f} {{{', '.join(names)}}}" for f, names in levels.items())
        + f" x seeds {result['seeds']}.", "",
        "Arms:", "",
        *[f"- **{a.name}**: {a.description or 'set ' + json.dumps(a.set)}" for a in bench.arms], "",
        f"Each trial is evaluated on {result['eval_conversations']} held-out conversations; a cell summarizes its "
        "seeds (n = seeds). Mean: the mean over seeds with its 95% Student-t CI. IQM: the interquartile mean over "
        "seeds with its 95% stratified bootstrap CI (Agarwal et al., 2021). "
        f"P(> {reference}): the probability that a seed of the arm beats a seed of {reference} (95% stratified "
        "bootstrap CI). Win rates are the held-out users' Bradley-Terry probability of preferring the trained "
        "policy's reply over the base policy's. \"Published\" is what the source reports for the arm in its own "
        "setting (not a number attune's miniature is expected to match).", "",
    ]
    per_group = sorted({(level_key(t["levels"]), k.removeprefix("n:"), int(v)) for t in done
                        for k, v in t["metrics"].items() if k.startswith("n:")})
    if per_group:
        lines += ["Held-out conversations per group in each trial: "
                  + "; ".join(f"{lv}: {g} {n}" for lv, g, n in per_group)
                  + " (a group's win rate is over its own conversations).", ""]
    lines += ["## Results", ""]
    factor_names = list(levels)
    for metric in bench.metrics:
        lines += [f"### {metric}", "",
                  "| arm | " + "".join(f"{bench.factors[f].label or f} | " for f in factor_names)
                  + f"mean [95% t CI] | IQM [95% bootstrap CI] | P(> {reference}) | n (seeds) | published |",
                  "| --- | " + "--- | " * len(factor_names) + "---: | ---: | ---: | ---: | --- |"]
        for cell in (c for c in cells if c["metric"] == metric):
            mean = format_interval(cell["mean"], cell["mean_ci_low"], cell["mean_ci_high"], 3) if cell["n"] else "-"
            iqm = format_interval(cell["iqm"], cell["iqm_ci_low"], cell["iqm_ci_high"], 3) if cell["n"] else "-"
            p = (format_interval(cell["p_improvement"], cell["p_improvement_ci_low"], cell["p_improvement_ci_high"], 2)
                 if cell["p_improvement"] is not None else "-")
            lines.append(f"| {cell['arm']} | " + "".join(f"{cell['levels'][f]} | " for f in factor_names)
                         + f"{mean} | {iqm} | {p} | {cell['n']} ({', '.join(str(s) for s in cell['seeds'])}) "
                         f"| {cell['published'] or ''} |")
        lines.append("")
    held = sum(c["status"] == "held" for c in claims)
    lines += ["## Shape claims", "",
              f"{held} of {len(claims)} held at this scale. Each is checked on the seed means above.", "",
              "| claim | status | numbers | published | source |", "| --- | --- | --- | --- | --- |"]
    for c in claims:
        lines.append(f"| {c['claim']} | **{c['status']}** | {c['numbers']} | {c['published']} | {c['source']} |")
    lines += ["", "Sources:", ""] + [f"- {key}: {text}" for key, text in bench.sources.items()] + [""]
    failed = [t for t in result["trials"] if t["status"] != "done"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- {t['arm']} {level_key(t['levels'])} seed {t['seed']}: "
                                             f"{t.get('error', 'no result')}" for t in failed] + [""]
    lines += ["![benchmark](plots/benchmark.png)", ""]
    return "\n".join(lines)


def plot_benchmark(folder: Path, bench: Benchmark, cells: list[dict[str, Any]], levels: dict[str, list[str]]) -> Path:
    """One panel per metric: IQM (with its bootstrap interval) of every arm along the first factor's levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    factor = next(iter(levels), None)
    names = levels.get(factor, ["-"]) if factor else ["-"]
    panels = len(bench.metrics)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels + 1, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], bench.metrics):
        for k, arm in enumerate(bench.arms):
            rows = [c for c in cells if c["metric"] == metric and c["arm"] == arm.name]
            xs, ys, low, high = [], [], [], []
            for i, name in enumerate(names):
                for cell in rows:
                    if (not factor or cell["levels"].get(factor) == name) and cell["n"]:
                        xs.append(i + 0.06 * (k - len(bench.arms) / 2))
                        ys.append(cell["iqm"])
                        low.append(cell["iqm"] - cell["iqm_ci_low"] if math.isfinite(cell["iqm_ci_low"]) else 0.0)
                        high.append(cell["iqm_ci_high"] - cell["iqm"] if math.isfinite(cell["iqm_ci_high"]) else 0.0)
                        break
            if xs:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=arm.name)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(bench.factors[factor].label or factor if factor else "")
        ax.set_title(metric, fontsize=10)
        if metric.startswith("win_rate") or metric == "worst_group_win_rate":
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axes[0][0].set_ylabel("IQM over seeds (95% bootstrap CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"benchmark {bench.name}", fontsize=11)
    return save_figure(fig, folder, "benchmark.png")


def print_summary(console: Any, result: dict[str, Any], folder: Path) -> None:
    from rich.table import Table

    table = Table(title=f"benchmark {result['benchmark']} ({result['scale']}): shape claims")
    for column in ("claim", "status", "numbers"):
        table.add_column(column)
    for c in result["claims"]:
        colour = {"held": "green", "not held": "red"}.get(c["status"], "yellow")
        table.add_row(c["claim"], f"[{colour}]{c['status']}[/]", c["numbers"])
    console.print(table)
    console.print(f"benchmark: [cyan]{folder / 'benchmark.md'}[/]")


def command_line(name: str, scale: str, seeds: int | None, overrides: list[str]) -> str:
    parts = ["attune benchmark", name, f"--scale {scale}"] + ([f"--seeds {seeds}"] if seeds else []) + list(overrides)
    return " ".join(parts)


def main(name: str, overrides: list[str], scale: str, seeds: int | None, address: str | None, resume: bool) -> None:
    """What ``attune benchmark`` runs (errors are raised; the CLI turns them into one line)."""
    from rich.console import Console

    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds: give a number of seeds >= 1, got {seeds}")
    bench = load_benchmark(name)
    for item in overrides:
        parse_override(item)  # a malformed key=value is a config error before anything runs
    run_benchmark(bench, scale=scale, seeds=list(range(seeds)) if seeds else None, address=address, resume=resume,
                  overrides=list(overrides), console=Console(), command=command_line(name, scale, seeds, overrides))


__all__ = ["Benchmark", "available_benchmarks", "evaluate_claim", "load_benchmark", "run_benchmark", "trial_metrics"]
