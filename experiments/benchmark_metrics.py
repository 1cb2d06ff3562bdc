"""The metrics ``attune benchmark`` reports per trial, each declared once with the function computing it.

A trial metric is a function of one finished trial (a :class:`Trial`: its run folder's ``eval.json``,
``episodes.json``, ``config.yaml`` and the user population they came from), declared with

- :func:`trial_metric`: one number per trial, e.g. ``worst_group_win_rate``;
- :func:`group_metric`: one number per user group, named ``<key>:<group>`` in a benchmark file (e.g.
  ``win_rate:minority``); the trial also records ``n:<group>``, the group's held-out conversations;
- :func:`evaluation_metric`: a metric :mod:`experiments.evaluate` already reports (``win_rate``,
  ``mean_utility``, ...; see :mod:`experiments.metrics`), read from ``eval.json`` under its own key or another.

A benchmark file lists the keys it reports under ``metrics:``; its claims and tables use them. A new suite's
metric is one declaration here, in its suite's section below.

Why one module over 300 lines: it is the registry of trial metrics, one small function each; the length is the
list, not a tangle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrialMetric:
    """How one benchmark metric is computed from a trial. ``chance``: its no-effect value (0.5 for a win rate),
    drawn as a line in the plot."""

    key: str
    label: str
    compute: Callable[[Trial], Any]
    per_group: bool = False
    chance: float | None = None


TRIAL_METRICS: dict[str, TrialMetric] = {}
GROUP_METRICS: dict[str, TrialMetric] = {}


def _declare(registry: dict[str, TrialMetric], key: str, label: str, per_group: bool, chance: float | None
             ) -> Callable[[Callable], Callable]:
    def decorate(compute: Callable) -> Callable:
        if key in registry:
            raise ValueError(f"benchmark metric {key!r} is declared twice; give the new one another key")
        registry[key] = TrialMetric(key, label, compute, per_group, chance)
        return compute

    return decorate


def trial_metric(key: str, label: str, chance: float | None = None) -> Callable[[Callable], Callable]:
    """Declare ``compute(trial) -> float``."""
    return _declare(TRIAL_METRICS, key, label, False, chance)


def group_metric(key: str, label: str, chance: float | None = None) -> Callable[[Callable], Callable]:
    """Declare ``compute(trial) -> {group: float}``, reported as ``<key>:<group>``."""
    return _declare(GROUP_METRICS, key, label, True, chance)


def evaluation_metric(name: str, key: str | None = None, label: str | None = None, chance: float | None = None) -> None:
    """Report the evaluation metric ``name`` (the trained policy's value, or the comparison's) as ``key``."""
    from experiments import metrics

    metric = metrics.get(name)
    section = "after" if metric.scope == metrics.POLICY else "comparison"

    def read(trial: Trial) -> float:
        if name not in trial.report[section]:  # e.g. a text metric with evaluation.text_metrics: false
            from experiments.config import ConfigError

            raise ConfigError(f"{trial.run_dir}: its evaluation did not measure {name!r}, which the benchmark reports; "
                              "run it with the evaluation settings that measure it (evaluation.text_metrics: true for "
                              "the text metrics)")
        return float(trial.report[section][name])

    trial_metric(key or name, label or metric.label, chance)(read)


class Trial:
    """One finished trial's run folder, read when first needed."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._values: dict[str, Any] = {}

    @functools.cached_property
    def report(self) -> dict[str, Any]:
        from experiments.config import ConfigError

        report = json.loads((self.run_dir / "eval.json").read_text())
        if "comparison" not in report:
            raise ConfigError(f"{self.run_dir}: the trial has no evaluation; benchmarks need evaluation.enabled: true")
        return report

    @functools.cached_property
    def config(self) -> Any:
        from experiments.config_files import load_config

        return load_config(self.run_dir / "config.yaml")

    @functools.cached_property
    def episodes(self) -> dict[str, list[dict[str, Any]]]:
        return json.loads((self.run_dir / "episodes.json").read_text())

    @property
    def population(self) -> Any:
        return _population(self.config)

    @functools.cached_property
    def groups(self) -> list[tuple[str, float]]:
        """(name, share) of each user group, as configured."""
        if self.config.users.groups:
            return [(g.name, g.share) for g in self.config.users.groups]
        return [(g.name, g.share) for g in self.population.groups]

    def first_replies(self, which: str = "after") -> list[tuple[Any, Any, str, dict[str, Any]]]:
        """Per held-out conversation: (the simulated user, the task, the policy's first reply, the episode)."""
        population, noise = self.population, self.config.env.noise
        return [(population.simulated_user(e["user_id"], noise=noise), population.task(e["task_id"]), e["replies"][0], e)
                for e in self.episodes[which]]

    def value(self, key: str) -> Any:
        """A declared trial metric's value for this trial, computed once."""
        if key not in self._values:
            self._values[key] = TRIAL_METRICS[key].compute(self)
        return self._values[key]

    def by_group(self, key: str) -> dict[str, float]:
        """A declared group metric's ``{group: value}`` for this trial, computed once."""
        if f"{key}:" not in self._values:
            self._values[f"{key}:"] = GROUP_METRICS[key].compute(self)
        return self._values[f"{key}:"]


_POPULATIONS: dict[str, Any] = {}


def _population(config: Any) -> Any:
    """The run's population, built once per distinct env and users settings."""
    from experiments.runner import _population as build

    key = json.dumps(config.model_dump(mode="json", include={"env", "users"}), sort_keys=True)
    if key not in _POPULATIONS:
        _POPULATIONS[key] = build(config)
    return _POPULATIONS[key]


def metric_problem(name: str) -> str | None:
    """Why ``name`` is not a benchmark metric, or None."""
    head, sep, group = name.partition(":")
    if (not sep and name in TRIAL_METRICS) or (sep and head in GROUP_METRICS and group):
        return None
    return (f"unknown metric {name!r}; use {', '.join(TRIAL_METRICS)}, or "
            + " / ".join(f"{m}:<group>" for m in GROUP_METRICS))


def metric_of(name: str) -> TrialMetric:
    head, sep, _ = name.partition(":")
    return GROUP_METRICS[head] if sep else TRIAL_METRICS[name]


def trial_metrics(run_dir: Path, names: list[str]) -> dict[str, float]:
    """The named metrics of one finished trial; with any group metric, ``n:<group>`` for every group too."""
    trial = Trial(run_dir)
    out: dict[str, float] = {}
    for name in names:
        head, sep, group = name.partition(":")
        if sep:
            out[name] = float(trial.by_group(head).get(group, math.nan))
        else:
            out[name] = float(trial.value(name))
    if any(":" in name for name in names):
        counts: dict[str, int] = {}
        for episode in trial.episodes["after"]:
            counts[episode["group"]] = counts.get(episode["group"], 0) + 1
        out |= {f"n:{g}": float(counts.get(g, 0)) for g, _ in trial.groups}
    return out


# --- every suite: the evaluation's own metrics ----------------------------------------------------------

evaluation_metric("win_rate", chance=0.5)
evaluation_metric("mean_utility")
evaluation_metric("improvement", chance=0.0)


@group_metric("win_rate", "win rate vs base, per group", chance=0.5)
def group_win_rates(trial: Trial) -> dict[str, float]:
    """Per group: the users' mean Bradley-Terry probability of preferring the trained policy's first reply to
    the base policy's (over the group's own held-out conversations)."""
    by_group: dict[str, list[float]] = {}
    for (user, task, after, episode), before in zip(trial.first_replies("after"), trial.episodes["before"], strict=True):
        utility_after, utility_before = user.utility([after, before["replies"][0]], [task, task])
        by_group.setdefault(episode["group"], []).append(float(user.choice_probability(utility_after, utility_before)))
    return {group: float(np.mean(values)) for group, values in by_group.items()}


@group_metric("mean_utility", "mean hidden utility, per group")
def group_mean_utilities(trial: Trial) -> dict[str, float]:
    return {group: float(row["mean"]) for group, row in trial.report["after"]["by_group"].items()}


# --- pluralistic ----------------------------------------------------------------------------------------


@trial_metric("worst_group_win_rate", "worst group's win rate vs base", chance=0.5)
def worst_group_win_rate(trial: Trial) -> float:
    rates = [trial.by_group("win_rate").get(name, math.nan) for name, _ in trial.groups]
    return float(min(rates)) if rates and not any(math.isnan(r) for r in rates) else math.nan


@trial_metric("majority_minority_gap", "majority minus minority win rate", chance=0.0)
def majority_minority_gap(trial: Trial) -> float:
    """The largest group's win rate minus the smallest's; with equal shares, the first's minus the last's."""
    groups = trial.groups
    if len(groups) < 2:
        return math.nan
    order = sorted(range(len(groups)), key=lambda i: (-groups[i][1], i))
    rates = trial.by_group("win_rate")
    return rates.get(groups[order[0]][0], math.nan) - rates.get(groups[order[-1]][0], math.nan)


# --- population -----------------------------------------------------------------------------------------

evaluation_metric("mean_utility", key="persona_score", label="persona score (the user's hidden utility)")


def _win_rate_against(trial: Trial, reference: Callable[[Any, Any, np.ndarray], int], which: str = "after") -> float:
    """Mean over conversations of the user's Bradley-Terry probability of preferring the policy's first reply to
    the candidate that ``reference(user, task, candidate utilities)`` picks among the task's K candidates
    (``which``: the trained policy's replies, ``after``, or the base policy's, ``before``)."""
    from envs.choices import candidate_replies

    probabilities = []
    for user, task, reply, _ in trial.first_replies(which):
        candidates = list(candidate_replies(task))
        utilities = user.utility([reply, *candidates], [task] * (len(candidates) + 1))
        best = reference(user, task, utilities[1:])
        probabilities.append(float(user.choice_probability(utilities[0], utilities[1 + best])))
    return float(np.mean(probabilities)) if probabilities else math.nan


@trial_metric("win_rate_vs_best_of_k", "win rate vs the user's best of K", chance=0.5)
def win_rate_vs_best_of_k(trial: Trial) -> float:
    """Against the candidate the user likes best of the K (PersonalLLM's "win rate vs best response")."""
    return _win_rate_against(trial, lambda user, task, utilities: int(np.argmax(utilities)))


@trial_metric("win_rate_vs_top_candidate", "win rate vs the everyone's-best candidate", chance=0.5)
def win_rate_vs_top_candidate(trial: Trial, which: str = "after") -> float:
    """Against the candidate the training users like best on average: what one reward model for everyone would
    pick (PersonalLLM's "win rate vs GPT-4o", the strongest single model's reply)."""
    population = trial.population

    def everyones_best(user: Any, task: Any, utilities: np.ndarray) -> int:
        return _everyones_best(population, task)

    return _win_rate_against(trial, everyones_best, which)


@trial_metric("base_win_rate_vs_top_candidate", "zero-shot (base policy) win rate vs the everyone's-best candidate",
              chance=0.5)
def base_win_rate_vs_top_candidate(trial: Trial) -> float:
    """The same for the base policy on the same conversations: every trial's zero-shot, paired with its arm."""
    return win_rate_vs_top_candidate(trial, which="before")


@functools.lru_cache(maxsize=4096)
def _everyones_best(population: Any, task: Any) -> int:
    from envs.choices import candidate_replies

    candidates = list(candidate_replies(task))
    mean = np.mean([population.simulated_user(u.user_id).utility(candidates, [task] * len(candidates))
                    for u in population.train_users], axis=0)
    return int(np.argmax(mean))


# --- frontier -------------------------------------------------------------------------------------------
# The reward-KL frontier (RL4LMs): how far a method moved from the base policy for the reward it gained. The
# user reward is mean_utility / improvement above; these need evaluation.text_metrics (on by default).

evaluation_metric("kl_to_base", chance=0.0)
evaluation_metric("reply_perplexity")
evaluation_metric("distinct_2")


# --- elicit ---------------------------------------------------------------------------------------------
# Information gathering (LMRL-Gym; CURIO) on attune/Elicitation-v1. An episode's return here is its noise-free
# return: the sum of its turns' expected utilities (each question -question_cost, then the answer's utility).
# EpisodeResult.score (their mean per turn) would count a question as a turn worth -cost and understate the env.


def _episode_return(episode: Mapping[str, Any]) -> float:
    return float(sum(episode["expected_utilities"]))


def _questions(episode: Mapping[str, Any]) -> int:
    """Questions asked: every turn before the last, and the last when it made the user leave (it cost a question)."""
    last = episode["terms"][-1] if episode.get("terms") else {}
    return len(episode["replies"]) - 1 + int(last.get("questions", 0.0) < 0)


@functools.lru_cache(maxsize=32)
def _reference(config_json: str, rows_json: str) -> Any:
    """LMRL-Gym's min / dataset average / max returns on a trial's evaluation conversations (cached: every arm of a
    suite evaluates the same ones)."""
    from agents.rollouts import make_env
    from experiments.config import ExperimentConfig
    from experiments.elicitation_metrics import reference_returns

    config = ExperimentConfig.model_validate(json.loads(config_json))
    env = make_env(config.env.id, population=_population(config), split="held_out", **config.env.env_kwargs())
    return reference_returns(env, json.loads(rows_json), seed=config.evaluation.seed, average="behaviour")


def elicitation_reference(trial: Trial) -> Any:
    """The trial's :class:`~experiments.elicitation_metrics.ReferenceReturns` (average: the behaviour policy's)."""
    rows = [{"user_id": e["user_id"], "task_id": e["task_id"]} for e in trial.episodes["after"]]
    config = trial.config.model_dump(mode="json", include={"env", "users", "evaluation"})
    return _reference(json.dumps(config, sort_keys=True), json.dumps(rows))


@trial_metric("episode_return", "mean episode return (noise-free, after question costs)")
def mean_episode_return(trial: Trial) -> float:
    return float(np.mean([_episode_return(e) for e in trial.episodes["after"]]))


@trial_metric("normalised_return", "LMRL-Gym normalised return (0 min, 50 behaviour data, 100 oracle)", chance=50.0)
def normalised_episode_return(trial: Trial) -> float:
    """The mean episode return mapped so that the worst return is 0, the behaviour policy's mean (LMRL-Gym's
    "dataset average": the data filtered BC trains on) 50 and the oracle reply's 100, on the same conversations."""
    return float(elicitation_reference(trial).normalise(mean_episode_return(trial)))


@trial_metric("turns", "assistant turns per episode")
def mean_turns(trial: Trial) -> float:
    return float(np.mean([len(e["replies"]) for e in trial.episodes["after"]]))


@trial_metric("questions", "clarifying questions per episode")
def mean_questions(trial: Trial) -> float:
    return float(np.mean([_questions(e) for e in trial.episodes["after"]]))


@group_metric("return", "mean episode return, per group")
def group_returns(trial: Trial) -> dict[str, float]:
    by_group: dict[str, list[float]] = {}
    for episode in trial.episodes["after"]:
        by_group.setdefault(episode["group"], []).append(_episode_return(episode))
    return {group: float(np.mean(values)) for group, values in by_group.items()}


def seed_siblings(trial: Trial) -> list[Trial]:
    """The trials of the same arm and factor levels under every seed (this one included): the run folders beside
    it whose config differs from its own only in ``seed`` (and the run's name)."""
    def key(config: Any) -> str:
        return json.dumps(config.model_dump(mode="json", exclude={"seed", "tracking"}), sort_keys=True, default=str)

    own = key(trial.config)
    siblings = [Trial(p.parent) for p in sorted(trial.run_dir.parent.glob("*/episodes.json"))]
    found = [t for t in siblings if (t.run_dir / "config.yaml").exists() and key(t.config) == own]
    return found or [trial]


def pass_hat_k_over_seeds(trial: Trial, k: int) -> float:
    """tau-bench's pass^k with the seeds as the trials: over the evaluation conversations every seed played, the
    mean of C(c, k) / C(n, k) (c of n seeds left the user satisfied). NaN with fewer than k seeds. The value pools
    the seeds, so every seed's trial reports the same number."""
    from experiments.elicitation_metrics import pass_hat_k

    outcomes: dict[tuple[str, str], list[bool]] = {}
    siblings = seed_siblings(trial)
    for sibling in siblings:
        for episode in sibling.episodes["after"]:
            outcomes.setdefault((episode["user_id"], episode["task_id"]), []).append(bool(episode["satisfied"]))
    rows = [v for v in outcomes.values() if len(v) == len(siblings)]
    if len(siblings) < k or not rows:
        return math.nan
    return pass_hat_k(rows, k)


for _k in (1, 2, 3):
    trial_metric(f"pass_hat_{_k}", f"pass^{_k} over seeds (user satisfied in all {_k})")(
        functools.partial(pass_hat_k_over_seeds, k=_k))
