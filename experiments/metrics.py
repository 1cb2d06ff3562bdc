"""The reported metrics, each declared once where it is computed, and the evaluation tables built from them.

A metric is a function decorated where it is computed (the built-ins are in :mod:`experiments.evaluate`):

- :func:`policy_metric`: computed from one policy's held-out episodes by ``evaluate.summarize`` (a
  value for the base policy and one for the trained policy);
- :func:`comparison_metric`: computed from the paired before/after episodes by ``evaluate.compare``
  (one value: the trained policy against the base policy).

The function returns a number, a :class:`~experiments.stats.Estimate` (stored as ``key`` plus
``<prefix>ci95``, ``<prefix>ci_low``, ``<prefix>ci_high``, ``<prefix>interval``, ``<prefix>n``), a dict of
fields when it needs more, or None where the evaluation did not measure it (no fields, no row). From the
declaration alone the metric lands in ``eval.json``, the run's console table and ``report.md`` (one row, in
declaration order), the W&B summary (``after/<key>``, ``comparison/<key>``...), the caption's list of interval
kinds, and the metrics ``attune sweep`` can sort by.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from experiments import stats
from experiments.tables import Column, Table, count_column, interval_column, mean_column

POLICY = "policy"
COMPARISON = "comparison"
SHOW = ("auto", "mean", "interval", "count", "number")

# The headline metric: the per-group rows (``by_group`` in ``summarize``) break it down.
HEADLINE = "mean_utility"


@dataclasses.dataclass(frozen=True)
class Metric:
    """How one reported number is computed, stored and shown.

    - ``key``: its name in ``eval.json`` (and in W&B, and as ``sweep.metric``); ``label``: its row in tables.
    - ``show``: ``mean`` (value ± half-width), ``interval`` (value [low, high], for asymmetric or clipped
      intervals), ``count`` (k/n = rate [low, high], with ``count_key`` naming k), ``number`` (``format``),
      or ``auto``: ``mean`` when the value came with an interval, else ``number``. ``count_of`` names the field
      holding the count's total (default ``n``, the conversations; e.g. users for a per-user share).
    - ``prefix``: the stored interval fields' prefix (default ``key + "_"``).
    - ``describe``: the caption's words for its interval, ``{interval}`` standing for the interval's kind
      (default ``"<label>: {interval}"`` where it differs from the headline's).
    - ``higher_is_better``; ``sweep``: whether ``attune sweep`` may sort by it (the trained policy's value for
      a policy metric).
    """

    key: str
    label: str
    scope: str
    compute: Callable[..., Any]
    show: str = "auto"
    prefix: str | None = None
    format: str = "{:+.3f}"
    count_key: str | None = None
    count_of: str = "n"
    describe: str | None = None
    higher_is_better: bool = True
    sweep: bool = True

    def __post_init__(self) -> None:
        if self.scope not in (POLICY, COMPARISON):
            raise ValueError(f"metric {self.key!r}: scope must be {POLICY!r} or {COMPARISON!r}, got {self.scope!r}")
        if self.show not in SHOW:
            raise ValueError(f"metric {self.key!r}: show must be one of {', '.join(SHOW)}, got {self.show!r}")
        if self.show == "count" and not self.count_key:
            raise ValueError(f"metric {self.key!r}: show='count' needs count_key, the field holding the count")

    @property
    def field_prefix(self) -> str:
        return f"{self.key}_" if self.prefix is None else self.prefix

    def fields(self, value: Any) -> dict[str, Any]:
        """What :attr:`compute` returned, as the fields stored in ``eval.json``."""
        if isinstance(value, stats.Estimate):
            p = self.field_prefix
            return {self.key: value.value, f"{p}ci95": value.half_width, **value.as_dict(p), f"{p}n": value.n}
        if isinstance(value, Mapping):
            if self.key not in value:
                raise ValueError(f"metric {self.key!r}: the fields its function returned lack {self.key!r}")
            return dict(value)
        return {self.key: float(value) if isinstance(value, bool) else value}

    def column(self, header: str | None = None, **options: Any) -> Column:
        """The column showing this metric in a table whose rows hold its fields (e.g. one row per variant)."""
        header = self.label if header is None else header
        p = self.field_prefix
        if self.show == "mean":
            return mean_column(self.key, header, p, **options)
        if self.show == "interval":
            return interval_column(self.key, header, p, **options)
        if self.show == "count":
            return count_column(self.key, self.count_key, header, p, n_key=self.count_of, **options)
        number = Column(self.key, header, self.format, **options)
        if self.show == "number":
            return number
        mean = mean_column(self.key, header, p, **options)
        return Column(self.key, header, lambda row: (mean if f"{p}ci95" in row else number).cell(row), **options)

    def interval_kind(self, section: Mapping[str, Any]) -> str | None:
        return section.get(f"{self.field_prefix}interval")


METRICS: dict[str, Metric] = {}
"""Every declared metric by key, in declaration order (the order of the tables' rows)."""


def _register(key: str, label: str, scope: str, options: dict[str, Any]) -> Callable[[Callable], Callable]:
    def decorate(compute: Callable) -> Callable:
        if key in METRICS:
            raise ValueError(f"metric {key!r} is declared twice (by {METRICS[key].compute.__module__} and "
                             f"{compute.__module__}); give the new one another key")
        METRICS[key] = Metric(key, label, scope, compute, **options)
        return compute

    return decorate


def policy_metric(key: str, label: str, **options: Any) -> Callable[[Callable], Callable]:
    """Declare ``compute(episodes) -> number | Estimate | dict``, computed for the base and the trained policy."""
    return _register(key, label, POLICY, options)


def comparison_metric(key: str, label: str, **options: Any) -> Callable[[Callable], Callable]:
    """Declare ``compute(paired) -> number | Estimate | dict`` of the trained policy against the base policy;
    ``paired`` is an :class:`experiments.evaluate.Paired` (the before/after episodes, the users, the seed)."""
    return _register(key, label, COMPARISON, options)


def declared(scope: str | None = None) -> list[Metric]:
    """The declared metrics (of one scope), the built-ins of :mod:`experiments.evaluate` included."""
    import experiments.evaluate  # noqa: F401  (declares the built-in metrics)

    return [m for m in METRICS.values() if scope is None or m.scope == scope]


def get(key: str) -> Metric:
    """One declared metric, e.g. ``get("improvement").column("improvement over base")`` for a table of variants."""
    known = {m.key: m for m in declared()}
    if key not in known:
        raise KeyError(f"no metric {key!r}; declared: {', '.join(known)}")
    return known[key]


def compute(scope: str, data: Any) -> dict[str, Any]:
    """Every metric of ``scope`` computed on ``data`` (episodes, or a ``Paired``), as ``eval.json`` fields."""
    out: dict[str, Any] = {}
    for metric in declared(scope):
        value = metric.compute(data)
        if value is not None:  # None: not measured in this evaluation (e.g. text metrics turned off)
            out |= metric.fields(value)
    return out


def sweep_metrics() -> tuple[str, ...]:
    """What every evaluated trial reports at its end, besides its timings (see :func:`final_values`)."""
    return tuple(m.key for m in declared() if m.sweep)


def final_values(report: Mapping[str, Any]) -> dict[str, Any]:
    """A run's sweepable metrics from its ``eval.json``: the trained policy's, and the comparison's."""
    if "after" not in report:
        return {}
    sections = {POLICY: report["after"], COMPARISON: report.get("comparison", {})}
    return {m.key: sections[m.scope][m.key] for m in declared() if m.sweep and m.key in sections[m.scope]}


def describe_intervals(before: Mapping[str, Any], comparison: Mapping[str, Any] | None = None, seeds: int = 1,
                       per_variant: bool = False) -> str:
    """The caption every evaluation table carries: n, seeds and the kind of each interval shown.

    ``before`` holds the headline's fields (``n``, ``interval``, as a ``summarize`` result does) and any policy
    metric's; ``comparison`` the comparison metrics' (a ``compare`` result, or a row that copied them).
    """
    n = before["n"]
    parts = [
        f"n = {n} held-out conversation{'s' if n != 1 else ''}, {seeds} seed{'s' if seeds != 1 else ''}"
        + (" per variant" if per_variant else ""),
        f"± is the half-width of the {before['interval']} (per group over its own n)",
    ]
    for metric in declared():
        section = before if metric.scope == POLICY else comparison
        kind = metric.interval_kind(section) if section is not None else None
        if kind is None or (metric.scope == POLICY and kind == before["interval"] and metric.describe is None):
            continue
        part = (metric.describe or f"{metric.label}: {{interval}}").format(interval=kind)
        if part not in parts:  # metrics that share an interval kind may share a description
            parts.append(part)
    return "; ".join(parts) + "."


def evaluation_table(report: Mapping[str, Any]) -> Table:
    """A run's before/after table: one row per declared metric, the headline's per-group rows under it."""
    before, after, comparison = report["before"], report["after"], report["comparison"]
    rows, records = [], []
    for metric in declared():
        sections = (before, after) if metric.scope == POLICY else (None, comparison)
        if metric.key not in sections[1]:
            continue  # an eval.json written before the metric was declared
        column = metric.column()
        rows.append({"metric": metric.label, "base": column.cell(sections[0]) if sections[0] else None,
                     "trained": column.cell(sections[1])})
        records.append({"metric": metric.key, "base": sections[0][metric.key] if sections[0] else None,
                        "trained": sections[1][metric.key]})
        if metric.key == HEADLINE:
            group_column = mean_column("mean", prefix="")
            for group, b in before["by_group"].items():
                a = after["by_group"][group]
                rows.append({"metric": f"  group {group} (n={b['n']})", "base": group_column.cell(b),
                             "trained": group_column.cell(a)})
                records.append({"metric": f"{HEADLINE}/group/{group}", "base": b["mean"], "trained": a["mean"]})
    if "base_seed_to_seed" in report:
        std = report["base_seed_to_seed"]["std"]
        rows.append({"metric": "base seed-to-seed std of the mean", "base": f"{std:.3f}", "trained": None})
        records.append({"metric": "base_seed_to_seed_std", "base": std, "trained": None})
    return Table(
        [Column("metric", align="left"), Column("base", "base policy"), Column("trained", "trained policy")],
        rows,
        title=f"held-out users: {before['n']} conversations, same prompts and seeds",
        caption=describe_intervals(before, comparison),
        records=records,
    )


def term_table(report: Mapping[str, Any]) -> Table | None:
    """Each utility term's mean before and after, and its paired change; largest change first."""
    before, after, comparison = report["before"], report["after"], report["comparison"]
    changes = comparison.get("term_changes") or {}
    if not changes:
        return None
    rows = [{"term": name, "base": before["terms"].get(name, float("nan")), "trained": after["terms"].get(name, float("nan")),
             **change} for name, change in sorted(changes.items(), key=lambda item: -abs(item[1]["change"]))]
    return Table(
        [Column("term", align="left"), Column("base", "base policy", "{:+.3f}"),
         Column("trained", "trained policy", "{:+.3f}"), mean_column("change", prefix="")],
        rows,
        title="What moved: the users' utility terms",
        caption="Each term's mean over the held-out conversations (they add up to the hidden utility), and its "
                f"paired change with the {rows[0]['interval']} (n={comparison['n']}).",
    )


def baseline_table(report: Mapping[str, Any]) -> Table:
    """A classic baseline's held-out table: the trained policy and a uniformly random one, same episodes."""
    rows = []
    for name, label in (("policy", report["method"]), ("random", "uniformly random")):
        summary = report["held_out"][name]
        reward = stats.mean_interval(summary["rewards"])
        rows.append({"policy": label, "mean_reward": reward.value, **reward.as_dict("mean_reward_"),
                     "mean_reward_ci95": reward.half_width, "mean_reward_n": reward.n, "mean_regret": summary["mean_regret"],
                     "oracle_action_rate": summary["oracle_action_rate"]})
    n = rows[0]["mean_reward_n"]
    return Table(
        [Column("policy", align="left"), mean_column("mean_reward", "mean reward"),
         Column("mean_regret", "mean regret", "{:.3f}"), Column("oracle_action_rate", "oracle action rate", "{:.2f}")],
        rows, title=f"held-out users: {n} episodes, the same for both policies",
        caption=f"n = {n} held-out episodes, 1 seed; ± is the half-width of the {rows[0]['mean_reward_interval']}.")
