"""The statistics behind every reported number, from scipy, each result carrying its n and interval kind.

- :func:`mean_interval`: a mean with its Student-t confidence interval (``paired_difference_interval``
  for after-minus-before on the same conversations).
- :func:`wilson_interval`: a proportion of successes (sampled wins) with its Wilson score interval,
  which is asymmetric and stays inside [0, 1].
- :func:`correlation`: Pearson or Spearman (ties get averaged ranks) with its p-value.
- Across seeds (after Agarwal et al., 2021, "Deep RL at the edge of the statistical precipice", the
  method of the ``rliable`` package): :func:`interquartile_mean` with a stratified bootstrap interval
  (:func:`iqm_interval`: runs are resampled within each task), :func:`probability_of_improvement`
  (P(X > Y) over every pair of runs, Mann-Whitney style, averaged over tasks, with a bootstrap
  interval), and :func:`summarize_seeds`, the seed-level summary of several methods.
- Across user groups (fairness): :func:`group_extremes`, the worst group's mean and the max-min gap between
  group means, each with a stratified bootstrap interval.

Every function returns an :class:`Estimate`: the point value, the interval's low and high ends, n, and
``interval``, a name such as ``"95% Student-t CI"`` that tables print beside the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval [low, high].

    ``n`` counts what the interval is over (conversations, pairs, runs); ``interval`` names the method,
    e.g. ``"95% Student-t CI"``. The ends are NaN where no interval exists (n < 2).
    """

    value: float
    low: float
    high: float
    n: int
    interval: str

    @property
    def half_width(self) -> float:
        """Half the interval's width: the ``±`` of a symmetric interval."""
        return (self.high - self.low) / 2.0

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """JSON fields ``<prefix>ci_low``, ``<prefix>ci_high``, ``<prefix>interval`` (and not the value)."""
        return {f"{prefix}ci_low": self.low, f"{prefix}ci_high": self.high, f"{prefix}interval": self.interval}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.interval}, n={self.n})"


@dataclasses.dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its two-sided p-value; NaN when either side is constant or n < 2."""

    value: float
    p_value: float
    n: int
    method: str


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
                  bounds: tuple[float, float] | None = None, what: str = "") -> Estimate:
    """The mean of ``values`` and its Student-t interval: mean ± t(1 - α/2, n - 1) · s / √n.

    ``bounds`` clips the interval to the range the mean can take (e.g. (0, 1) for probabilities);
    ``what`` is appended to the interval's name (e.g. ``"over per-pair probabilities"``).
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    kind = f"{_percent(confidence)} Student-t CI" + (f" {what}" if what else "")
    n = int(array.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, kind)
    mean = float(array.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, kind)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * array.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(mean, low, high, n, kind)


def paired_difference_interval(after: Sequence[float], before: Sequence[float],
                               confidence: float = CONFIDENCE) -> Estimate:
    """Mean of ``after - before`` over pairs (the same conversation twice) with its paired t interval."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    estimate = mean_interval(a - b, confidence)
    return dataclasses.replace(estimate, interval=f"{_percent(confidence)} paired Student-t CI")


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The proportion ``successes / n`` with its Wilson score interval (asymmetric, inside [0, 1])."""
    kind = f"{_percent(confidence)} Wilson score CI"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, kind)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), int(n), kind)


def correlation(x: Sequence[float], y: Sequence[float], method: str = "spearman") -> Correlation:
    """Pearson or Spearman correlation of paired values (scipy; Spearman averages tied ranks)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"correlation needs paired values, got {a.size} and {b.size}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"correlation method must be 'pearson' or 'spearman', got {method!r}")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return Correlation(math.nan, math.nan, int(a.size), method)
    result = stats.pearsonr(a, b) if method == "pearson" else stats.spearmanr(a, b)
    return Correlation(float(result.statistic), float(result.pvalue), int(a.size), method)


def group_extremes(samples: Mapping[str, Sequence[float]], confidence: float = CONFIDENCE,
                   n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[Estimate, Estimate]:
    """The worst group's mean (the minimum of the group means) and the max-min gap between the group means.

    ``samples`` maps each group to its values (e.g. per-conversation utilities). Both come with a stratified
    percentile bootstrap interval: each group's values are resampled on their own, so the interval carries
    the chance that another group would have come out worst (NaN ends where a group has fewer than 2 values).
    ``n`` is the number of groups.
    """
    groups = [np.asarray(values, dtype=np.float64).ravel() for values in samples.values()]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("group_extremes needs at least one value in every group")
    means = np.array([g.mean() for g in groups])

    def group_means(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.stack([np.moveaxis(r, axis, -1).mean(axis=-1) for r in resampled])

    def worst(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return group_means(*resampled, axis=axis).min(axis=0)

    def gap(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        m = group_means(*resampled, axis=axis)
        return m.max(axis=0) - m.min(axis=0)

    kind = f"{_percent(confidence)} stratified bootstrap CI (groups resampled separately)"
    estimates = []
    for statistic, value in ((worst, float(means.min())), (gap, float(means.max() - means.min()))):
        low, high = _bootstrap(groups, statistic, confidence, n_resamples, seed)
        estimates.append(Estimate(value, low, high, len(groups), kind))
    return estimates[0], estimates[1]


def interquartile_mean(scores: Sequence[float] | np.ndarray) -> float:
    """Mean of the middle 50 % of all scores (25 % cut from each end; every run and task pooled)."""
    return float(stats.trim_mean(np.asarray(scores, dtype=np.float64).ravel(), 0.25))


def _by_task(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """A runs × tasks matrix; a flat sequence is one task's runs."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"scores must be runs or a runs x tasks matrix, got shape {array.shape}")
    return array


def _bootstrap(samples: list[np.ndarray], statistic: Any, confidence: float, n_resamples: int,
               seed: int) -> tuple[float, float]:
    """Percentile bootstrap where every sample (one per task and method) is resampled on its own."""
    if any(s.size < 2 for s in samples):
        return math.nan, math.nan
    result = stats.bootstrap(samples, statistic, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def iqm_interval(scores: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
                 n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """IQM of a runs × tasks score matrix with a stratified bootstrap interval (runs resampled per task)."""
    matrix = _by_task(scores)

    def iqm(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
        pooled = np.concatenate([np.moveaxis(c, axis, -1) for c in columns], axis=-1)
        return stats.trim_mean(pooled, 0.25, axis=-1)

    low, high = _bootstrap(list(matrix.T), iqm, confidence, n_resamples, seed)
    kind = f"{_percent(confidence)} stratified bootstrap CI (IQM)"
    return Estimate(interquartile_mean(matrix), low, high, int(matrix.shape[0]), kind)


def _improvement_probability(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) over every pair of a run of X and a run of Y (last axis holds the runs)."""
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def probability_of_improvement(x_scores: Sequence[float] | np.ndarray, y_scores: Sequence[float] | np.ndarray,
                               confidence: float = CONFIDENCE, n_resamples: int = BOOTSTRAP_RESAMPLES,
                               seed: int = 0) -> Estimate:
    """P(X > Y): the chance that a run of method X beats a run of method Y on a task, averaged over tasks.

    Both are runs × tasks matrices (a flat sequence is one task) with the same tasks; their numbers of
    runs may differ. Per task it is the Mann-Whitney U statistic over n_x · n_y (ties count half). The
    interval is a stratified bootstrap: each method's runs are resampled within each task.
    """
    x, y = _by_task(x_scores), _by_task(y_scores)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"both methods need scores on the same tasks, got {x.shape[1]} and {y.shape[1]} tasks")
    tasks = x.shape[1]

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        samples = tuple(np.moveaxis(s, axis, -1) for s in samples)
        per_task = [_improvement_probability(samples[t], samples[tasks + t]) for t in range(tasks)]
        return np.mean(per_task, axis=0)

    value = float(np.mean([_improvement_probability(x[:, t], y[:, t]) for t in range(tasks)]))
    low, high = _bootstrap([*x.T, *y.T], statistic, confidence, n_resamples, seed)
    kind = f"{_percent(confidence)} stratified bootstrap CI (P(X > Y))"
    return Estimate(value, low, high, int(min(x.shape[0], y.shape[0])), kind)


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """One method across seeds: IQM with its bootstrap interval, and P(method > baseline) if one was given."""

    method: str
    runs: int
    tasks: int
    iqm: Estimate
    mean: float
    probability_of_improvement: Estimate | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"method": self.method, "runs": self.runs, "tasks": self.tasks, "iqm": self.iqm.value,
                               **self.iqm.as_dict("iqm_"), "mean": self.mean}
        if self.probability_of_improvement is not None:
            p = self.probability_of_improvement
            row |= {"probability_of_improvement": p.value, **p.as_dict("probability_of_improvement_")}
        return row


def summarize_seeds(scores: Mapping[str, Sequence[float] | np.ndarray], baseline: str | None = None,
                    confidence: float = CONFIDENCE, n_resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> list[SeedSummary]:
    """The seed-level table of several methods: one runs × tasks matrix (or list of runs) per method.

    Each gets its IQM with a stratified bootstrap interval and its plain mean; with ``baseline`` (a key
    of ``scores``), every other method also gets the probability that it improves on the baseline.
    """
    if baseline is not None and baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not one of the methods: {', '.join(scores)}")
    rows = []
    for method, method_scores in scores.items():
        matrix = _by_task(method_scores)
        improvement = None
        if baseline is not None and method != baseline:
            improvement = probability_of_improvement(matrix, scores[baseline], confidence, n_resamples, seed)
        rows.append(SeedSummary(method, int(matrix.shape[0]), int(matrix.shape[1]),
                                iqm_interval(matrix, confidence, n_resamples, seed), float(matrix.mean()), improvement))
    return rows


def format_mean(value: float, half_width: float | None) -> str:
    """``+0.123 ± 0.045`` for a symmetric interval; ``+0.123 (no CI)`` where none exists (n < 2)."""
    if half_width is None or not math.isfinite(half_width):
        return f"{value:+.3f} (no CI)"
    return f"{value:+.3f} ± {half_width:.3f}"


def format_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    """``0.62 [0.55, 0.69]``: a point value and its (possibly asymmetric) interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f} (no CI)"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
