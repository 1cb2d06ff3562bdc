"""Variants side by side: ``comparison.md``, ``comparison.json`` and ``plots/comparison.png``.

One row per variant. With one training seed a row is that run's paired comparison with the base policy
(Student-t, Bradley-Terry and Wilson intervals over the held-out conversations). With ``seeds:`` a row
summarizes the variant across its training seeds, the way Agarwal et al. (2021, the ``rliable`` method)
ask for: the mean improvement with a Student-t interval over the seeds' means, the interquartile mean of
the per-conversation improvements with a stratified bootstrap interval (seeds resampled within each
conversation), and the probability that a trained run beats a base-policy run on a conversation.

A variant *learns* when its improvement exceeds twice the evaluation's seed-to-seed spread (the base
policy re-scored with ``evaluation.noise_seeds`` other sampling seeds): the project's criterion.
The plot shows held-out utility against training seconds (``evaluation.curve_every`` adds the points
in between), so methods with different costs are compared on the axis a researcher pays for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments import stats
from experiments.stats import format_mean
from experiments.tables import Column, Table, count_column, interval_column, log_tables_to_wandb, mean_column

LEARNS_FACTOR = 2.0
"""A gain counts as learning when it exceeds this many times the evaluation's seed-to-seed spread."""


def _variant_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    return groups


def _spread(rows: list[dict[str, Any]]) -> float | None:
    for row in rows:
        if "base_seed_to_seed" in row:
            return float(row["base_seed_to_seed"]["std"])
    return None


def _learns(improvement: float, spread: float | None) -> bool | None:
    if spread is None or not math.isfinite(spread):
        return None
    return bool(improvement > LEARNS_FACTOR * spread)


def _one_seed_entry(row: dict[str, Any], spread: float | None) -> dict[str, Any]:
    entry = {"variant": row["variant"], "method": row["method"], "train_seconds": row.get("train_seconds"),
             "total_seconds": row.get("total_seconds")}
    if "after" not in row:
        return entry
    before, after, comparison = row["before"], row["after"], row["comparison"]
    return entry | {
        "n": after["n"], "seeds": 1,
        "base_mean": before["mean_utility"], "base_ci95": before["ci95"],
        "mean": after["mean_utility"], "ci95": after["ci95"],
        "ci_low": after["ci_low"], "ci_high": after["ci_high"], "interval": after["interval"],
        **{key: comparison[key] for key in comparison if key.startswith(("improvement", "win_rate", "sampled_", "worse_off_"))},
        **{key: after[key] for key in after if key.startswith(FAIRNESS_POLICY_METRICS)},
        "learns": _learns(comparison["improvement"], spread),
    }


def _seeds_entry(runs: list[dict[str, Any]], spread: float | None) -> dict[str, Any]:
    """One variant over its training seeds (every run scored on the same conversations and sampling seeds)."""
    first = runs[0]
    entry: dict[str, Any] = {
        "variant": first["variant"], "method": first["method"], "seeds": len(runs),
        "seed_list": [r.get("seed") for r in runs],
        "train_seconds": float(np.mean([r.get("train_seconds") or 0.0 for r in runs])),
        "train_seconds_per_seed": [r.get("train_seconds") for r in runs],
        "total_seconds": float(np.sum([r.get("total_seconds") or 0.0 for r in runs])),
    }
    if any("after" not in r for r in runs):
        return entry
    after = np.array([r["after_scores"] for r in runs])  # seeds x conversations
    base = np.array(runs[0]["base_scores"])  # base-policy sampling runs x conversations
    improvement = stats.mean_interval([r["comparison"]["improvement"] for r in runs], what="over training seeds")
    iqm = stats.iqm_interval(after - base[0])
    beats_base = stats.probability_of_improvement(after, base)
    win_rate = stats.mean_interval([r["comparison"]["win_rate"] for r in runs], bounds=(0.0, 1.0),
                                   what="over training seeds")
    before = first["before"]
    return entry | {
        "n": int(after.shape[1]),
        "base_mean": before["mean_utility"], "base_ci95": before["ci95"],
        "mean": float(after.mean()),
        "mean_per_seed": [float(m) for m in after.mean(axis=1)],
        "improvement": improvement.value, **improvement.as_dict("improvement_"),
        "improvement_ci95": improvement.half_width,
        "improvement_per_seed": [r["comparison"]["improvement"] for r in runs],
        "iqm_improvement": iqm.value, **iqm.as_dict("iqm_improvement_"),
        "probability_of_improvement": beats_base.value, **beats_base.as_dict("probability_of_improvement_"),
        "base_runs": int(base.shape[0]),
        "win_rate": win_rate.value, **win_rate.as_dict("win_rate_"),
        **_fairness_over_seeds(runs),
        "learns": _learns(improvement.value, spread),
    }


FAIRNESS_POLICY_METRICS = ("worst_group_utility", "group_gap")
"""The trained policy's fairness metrics (experiments.fairness) that the variants table shows."""


def _fairness_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst-group utility, the max-min gap and the share of users worse off: mean over seeds, t interval."""
    out: dict[str, Any] = {}
    for key, section in (*((k, "after") for k in FAIRNESS_POLICY_METRICS), ("worse_off_share", "comparison")):
        values = [r[section][key] for r in runs if key in r[section]]
        if len(values) == len(runs):
            estimate = stats.mean_interval(values, what="over training seeds")
            out |= {key: estimate.value, **estimate.as_dict(f"{key}_"), f"{key}_ci95": estimate.half_width}
    return out


def comparison_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant: a run's paired comparison, or (several seeds) the across-seed summary."""
    spread = _spread(rows)
    table = []
    for runs in _variant_groups(rows).values():
        entry = _one_seed_entry(runs[0], spread) if len(runs) == 1 else _seeds_entry(runs, spread)
        if "privacy" in runs[0]:  # privacy.dp: the run's epsilon per user (the same plan for every seed)
            entry["dp_epsilon"] = runs[0]["privacy"]["epsilon"]
            entry["dp_delta"] = runs[0]["privacy"]["delta"]
        if spread is not None:
            entry["seed_to_seed_std"] = spread
        table.append(entry)
    return table


def caption(table: list[dict[str, Any]]) -> str | None:
    """n, seeds and the interval kind of every column (see the n column if n differs)."""
    from experiments.metrics import describe_intervals

    evaluated = [e for e in table if "mean" in e]
    if not evaluated:
        return None
    first = evaluated[0]
    if first["seeds"] == 1:
        text = describe_intervals(first, first, seeds=1, per_variant=True)
    else:
        text = (f"n = {first['n']} held-out conversations, {first['seeds']} training seeds per variant "
                f"(seeds {', '.join(str(s) for s in first['seed_list'])}), every seed scored on the same "
                f"conversations and sampling seeds; improvement: mean over seeds ± the half-width of the "
                f"{first['improvement_interval']}; IQM: interquartile mean of the per-conversation improvements "
                f"over seeds x conversations, with its {first['iqm_improvement_interval']}; P(beats base): "
                f"the probability that a trained run's utility exceeds a base-policy run's on a conversation "
                f"({first['base_runs']} base sampling runs), with its {first['probability_of_improvement_interval']}; "
                f"win rate: the users' Bradley-Terry expected preference, mean over seeds.")
        if "worse_off_share_interval" in first:
            text += (" Worst-group utility, max-min group gap and the share of users worse off: each run's own, mean "
                     f"over seeds with the {first['worse_off_share_interval']}.")
    if len({e["n"] for e in evaluated}) > 1:
        text += " The variants were evaluated on different numbers of conversations: see the n column."
    spread = first.get("seed_to_seed_std")
    if spread is not None:
        text += (f" Learns: improvement > {LEARNS_FACTOR:g} x the evaluation's seed-to-seed spread "
                 f"(std {spread:.3f}, base policy re-scored with other sampling seeds).")
    return text


def _learns_cell(entry: dict[str, Any]) -> str:
    return {True: "yes", False: "no", None: "-"}[entry.get("learns")]


def _columns(table: list[dict[str, Any]]) -> list[Column]:
    """The columns for these entries: per-run intervals with one seed, across-seed summaries with several."""
    text = {"missing": "-"}
    first = [Column("variant", align="left"), Column("method", align="left")]
    last = [Column("learns", format=_learns_cell, **text),
            Column("train_seconds", "train time (s)", "{:.0f}", missing="-")]
    win_rate = interval_column("win_rate", "win rate vs base (expected)", **text)
    if any("dp_delta" in e for e in table):  # a privacy-utility comparison: each variant's epsilon (no DP: inf)
        last.insert(0, Column("dp_epsilon", "DP epsilon (per user)", "{:.3g}", missing="inf"))
    if any(e.get("seeds", 1) > 1 for e in table):
        return [*first, Column("seeds", **text), Column("n", **text), Column("mean", "mean utility after", "{:+.3f}", **text),
                mean_column("improvement", "improvement (mean over seeds)", **text),
                interval_column("iqm_improvement", "IQM improvement", digits=3, **text),
                interval_column("probability_of_improvement", "P(beats base)", **text),
                *[interval_column(key, header, **text) for key, header in _FAIRNESS_HEADERS.items()],
                win_rate, *last]
    from experiments.metrics import get

    return [*first, Column("n", **text), mean_column("mean", "mean utility after", prefix="", **text),
            mean_column("improvement", "improvement over base", **text),
            *[get(key).column(header, **text) for key, header in _FAIRNESS_HEADERS.items()], win_rate,
            count_column("sampled_win_rate", "sampled_wins", "sampled wins", **text), *last]


_FAIRNESS_HEADERS = {"worst_group_utility": "worst-group utility after", "group_gap": "max-min group gap after",
                     "worse_off_share": "users worse off"}


def comparison_rendering(table: list[dict[str, Any]], title: str) -> Table:
    """The one table of these variants: console, markdown, JSON (every field) and W&B."""
    return Table(_columns(table), table, title=title, caption=caption(table) or "")


def write_comparison(parent: Path, rows: list[dict[str, Any]], tracking: Any = None) -> list[dict[str, Any]]:
    """Write ``comparison.json``, ``comparison.md`` and the plot for these variant rows; returns the table.

    With ``tracking`` (the config's block) the table and plot also go to one W&B run grouped with the variants'.
    """
    table = comparison_table(rows)
    rendering = comparison_rendering(table, f"# {parent.name}")
    (parent / "comparison.json").write_text(rendering.to_json())
    lines = [f"# {parent.name}", "", "Held-out users, same prompts and sampling seeds for every variant.", "",
             rendering.to_markdown(title=False)]
    evaluated = [e for e in table if "base_mean" in e]
    if evaluated:
        lines += [f"Base policy: {format_mean(evaluated[0]['base_mean'], evaluated[0]['base_ci95'])}.", ""]
    lines += ["![comparison](plots/comparison.png)", ""]
    (parent / "comparison.md").write_text("\n".join(lines))
    plot = plot_comparison(parent, table, rows)
    if tracking is not None:
        log_tables_to_wandb(tracking, parent, f"{parent.name}-comparison", parent.name, {"comparison": rendering},
                            images={"comparison_plot": plot} if plot else None)
    return table


def print_comparison(console: Any, table: list[dict[str, Any]], parent: Path) -> None:
    console.print(comparison_rendering(table, "variants on the same held-out users, prompts and seeds").to_rich())
    evaluated = [e for e in table if "base_mean" in e]
    if evaluated:
        console.print(f"base policy: {format_mean(evaluated[0]['base_mean'], evaluated[0]['base_ci95'])}")
    console.print(f"comparison: [cyan]{parent / 'comparison.md'}[/]")


def _curve(row: dict[str, Any]) -> list[tuple[float, float]]:
    """(training seconds, held-out utility) points of one run.

    With ``evaluation.curve_every`` the run's own curve (base, the points in between and the trained
    policy, all on the first ``evaluation.curve_prompts`` conversations); else the two end points.
    """
    if row.get("curve"):
        return [(float(p["seconds"]), float(p["mean_utility"])) for p in row["curve"]["points"]]
    return [(0.0, row["before"]["mean_utility"]), (float(row["train_seconds"]), row["after"]["mean_utility"])]


def plot_comparison(parent: Path, table: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> Path | None:
    entries = [e for e in table if "mean" in e]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(entries) + 7), 4.5))
    x = np.arange(len(entries))
    low = [e["improvement"] - e["improvement_ci_low"] for e in entries]
    high = [e["improvement_ci_high"] - e["improvement"] for e in entries]
    bars.bar(x, [e["improvement"] for e in entries], yerr=np.nan_to_num([low, high]), capsize=4, color="tab:orange")
    for i, e in enumerate(entries):
        per_seed = e.get("improvement_per_seed")
        if per_seed:
            bars.scatter([i] * len(per_seed), per_seed, color="black", s=12, zorder=3)
    spread = entries[0].get("seed_to_seed_std")
    if spread is not None:
        bars.axhline(LEARNS_FACTOR * spread, color="tab:red", linestyle=":", label=f"{LEARNS_FACTOR:g} x seed-to-seed spread")
        bars.legend()
    bars.axhline(0.0, color="grey", linewidth=0.8)
    bars.set_xticks(list(x), [e["variant"] for e in entries], rotation=20)
    seeds = entries[0]["seeds"]
    bars.set_ylabel(f"held-out improvement over the base policy\n(n={entries[0]['n']}, {seeds} seed"
                    f"{'s' if seeds != 1 else ''}; {entries[0]['improvement_interval']})")
    bars.set_title("improvement (dots: training seeds)" if seeds > 1 else "improvement")

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by_variant = _variant_groups([r for r in rows or [] if "after" in r])
    for i, (name, runs) in enumerate(by_variant.items()):
        for k, run in enumerate(runs):
            points = _curve(run)
            curves.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                        color=colors[i % len(colors)], alpha=0.8, label=name if k == 0 else None)
    curves.set_xlabel("training wall-clock seconds (evaluation excluded)")
    subsets = {run["curve"]["prompts"] for runs in by_variant.values() for run in runs if run.get("curve")}
    scored_on = f" (first {subsets.pop()} conversations)" if len(subsets) == 1 else ""
    curves.set_ylabel(f"held-out mean hidden utility{scored_on}")
    curves.set_title("utility against training time")
    if by_variant:
        curves.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, parent, "comparison.png")
