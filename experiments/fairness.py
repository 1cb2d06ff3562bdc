"""Fairness of a trained policy across its users: who gained, who lost, and how far apart the groups are.

Computed from the same held-out conversations played by the base and the trained policy (an
:class:`experiments.evaluate.Paired`), every interval from :mod:`experiments.stats`:

- per user group and per trait value (``expertise=novice``...): the mean utility before and after (Student-t),
  the paired improvement (paired t) and the win rate vs base by the users' own Bradley-Terry choices (t over
  the conversations, clipped to [0, 1]);
- the worst group's utility (the minimum of the group means) and the max-min gap between the group means,
  each with a stratified bootstrap interval (each group resampled on its own); declared as policy metrics,
  so both policies get them, in every evaluation table, W&B summary and variants table;
- the share of users made worse off by training: each held-out user's utility after minus before, averaged
  over that user's conversations (paired: the same conversations and sampling seeds), the share below zero
  with a Wilson interval (a comparison metric).

The per-group and per-trait breakdown is ``comparison.fairness`` in ``eval.json`` (:func:`fairness_section`);
:func:`fairness_markdown` renders it for ``report.md``.

The ``fairness:`` config section's mitigations are applied here too: :func:`training_rewards` swaps the
``user_feedback`` reward for MaxMin (``fairness.maxmin``); group-balanced training prompts
(``fairness.balanced_sampling``) are drawn by :func:`agents.rollouts.build_prompt_dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import metrics, stats

MIN_GROUPS = 2
"""Worst-group utility and the gap are reported only when the evaluation saw at least this many groups."""


def _scores_by_group(episodes: Sequence[Any]) -> dict[str, list[float]]:
    by_group: dict[str, list[float]] = {}
    for episode in episodes:
        by_group.setdefault(episode.group, []).append(episode.score)
    return dict(sorted(by_group.items()))


_DESCRIBE = "worst-group utility and max-min gap: {interval}"


@metrics.policy_metric(
    "worst_group_utility", "worst-group utility (min of group means)", show="interval", describe=_DESCRIBE)
def worst_group_utility(episodes: list[Any]) -> stats.Estimate | None:
    """The lowest group mean of the hidden utility; None with a single group (it is then the mean)."""
    by_group = _scores_by_group(episodes)
    if len(by_group) < MIN_GROUPS:
        return None
    return stats.group_extremes(by_group)[0]


@metrics.policy_metric(
    "group_gap", "max-min gap between group means", show="interval", higher_is_better=False, describe=_DESCRIBE)
def group_gap(episodes: list[Any]) -> stats.Estimate | None:
    """The highest group mean minus the lowest (0: every group served equally); None with a single group."""
    by_group = _scores_by_group(episodes)
    if len(by_group) < MIN_GROUPS:
        return None
    return stats.group_extremes(by_group)[1]


def user_changes(paired: Any) -> dict[str, dict[str, Any]]:
    """Per held-out user: their conversations' mean utility before and after, and the change (after - before)."""
    per_user: dict[str, dict[str, Any]] = {}
    for before, after in zip(paired.before, paired.after):
        entry = per_user.setdefault(after.user_id, {"group": after.group, "before": [], "after": []})
        entry["before"].append(before.score)
        entry["after"].append(after.score)
    out = {}
    for user_id, entry in per_user.items():
        b, a = float(np.mean(entry["before"])), float(np.mean(entry["after"]))
        out[user_id] = {"group": entry["group"], "conversations": len(entry["after"]), "before": b, "after": a,
                        "change": a - b}
    return out


@metrics.comparison_metric(
    "worse_off_share", "users made worse off by training", show="count", count_key="worse_off_users",
    count_of="worse_off_share_n", higher_is_better=False,
    describe="users worse off: held-out users whose mean utility fell (after - before < 0, over their own "
             "conversations), with the {interval}")
def worse_off_share(paired: Any) -> dict[str, Any]:
    """The share of held-out users whose mean utility after training is below theirs before (Wilson)."""
    changes = [u["change"] for u in user_changes(paired).values()]
    worse = sum(change < 0 for change in changes)
    share = stats.wilson_interval(worse, len(changes))
    # worse_off_share_n counts users, not conversations (the count column shows worse_off_users of it).
    return {"worse_off_share": share.value, "worse_off_users": int(worse), **share.as_dict("worse_off_share_"),
            "worse_off_share_n": share.n}


def _slice(paired: Any, indices: list[int]) -> dict[str, Any]:
    """Utility before/after, paired improvement and expected win rate over these conversations."""
    before = stats.mean_interval([paired.before[i].score for i in indices])
    after = stats.mean_interval([paired.after[i].score for i in indices])
    improvement = stats.paired_difference_interval([paired.after[i].score for i in indices],
                                                   [paired.before[i].score for i in indices])
    win = stats.mean_interval([paired.choice_probabilities[i] for i in indices], bounds=(0.0, 1.0),
                              what="over per-conversation Bradley-Terry win probabilities")
    return {
        "n": len(indices), "users": len({paired.after[i].user_id for i in indices}),
        "before": before.value, **before.as_dict("before_"), "before_ci95": before.half_width,
        "after": after.value, **after.as_dict("after_"), "after_ci95": after.half_width,
        "improvement": improvement.value, **improvement.as_dict("improvement_"), "improvement_ci95": improvement.half_width,
        "win_rate": win.value, **win.as_dict("win_rate_"),
    }


def _traits(population: Any, user_id: str) -> Mapping[str, Any]:
    """A user's visible traits; none where the population cannot say (a stand-in in tests, a user's own env)."""
    lookup = getattr(population, "user", None)
    if lookup is None:
        return {}
    try:
        return dict(getattr(lookup(user_id), "traits", {}) or {})
    except KeyError:
        return {}


def fairness_section(paired: Any) -> dict[str, Any]:
    """``comparison.fairness`` of ``eval.json``: per group and per trait value, the worst group and the gap
    (before and after), the worse-off users, and each user's change (what ``attune explain`` lists)."""
    by_group: dict[str, list[int]] = {}
    by_trait: dict[str, list[int]] = {}
    for i, episode in enumerate(paired.after):
        by_group.setdefault(episode.group, []).append(i)
        for trait, value in sorted(_traits(paired.population, episode.user_id).items()):
            by_trait.setdefault(f"{trait}={value}", []).append(i)
    section: dict[str, Any] = {
        "groups": {name: _slice(paired, idx) for name, idx in sorted(by_group.items())},
        "traits": {name: _slice(paired, idx) for name, idx in sorted(by_trait.items())},
    }
    for side, episodes in (("before", paired.before), ("after", paired.after)):
        scores = _scores_by_group(episodes)
        if len(scores) >= MIN_GROUPS:
            worst, gap = stats.group_extremes(scores)
            section[side] = {"worst_group": min(scores, key=lambda g: float(np.mean(scores[g]))),
                             "worst_group_utility": worst.value, **worst.as_dict("worst_group_utility_"),
                             "group_gap": gap.value, **gap.as_dict("group_gap_")}
    section |= worse_off_share(paired)
    section["by_user"] = user_changes(paired)
    return section


# --- report.md -------------------------------------------------------------------------------------------


def fairness_table(report: Mapping[str, Any]) -> Any:
    """Groups, then trait values: n, utility before and after, paired improvement, expected win rate."""
    from experiments.tables import Column, Table, interval_column, mean_column

    section = report["comparison"]["fairness"]
    rows = [{"slice": f"group {name}", **values} for name, values in section["groups"].items()]
    rows += [{"slice": name, **values} for name, values in section["traits"].items()]
    first = rows[0]
    return Table(
        [Column("slice", "group / trait", align="left"), Column("n"), Column("users"),
         mean_column("before", "utility before"), mean_column("after", "utility after"),
         mean_column("improvement", "improvement (paired)"), interval_column("win_rate", "win rate vs base")],
        rows,
        title="Per group and per trait",
        caption=(f"n held-out conversations per slice; utility ± the half-width of the {first['after_interval']}; "
                 f"improvement ± the half-width of the {first['improvement_interval']}; win rate: the users' "
                 f"Bradley-Terry expected preference for the trained reply, with its {first['win_rate_interval']}."),
    )


def fairness_markdown(report: Mapping[str, Any]) -> list[str]:
    """The ``## Fairness`` section of ``report.md`` (every run report has one, saying why when it is empty)."""
    lines = ["## Fairness", ""]
    if "before" not in report:
        reason = ("a classic baseline on a discrete env has no before/after evaluation of the LLM"
                  if "held_out" in report else "evaluation was disabled (evaluation.enabled: false)")
        return lines + [f"Not measured: {reason}.", ""]
    section = report["comparison"].get("fairness")
    if section is None:
        return lines + ["Not measured: this eval.json predates the fairness report.", ""]
    lines += [_headline(section), ""]
    lines += [fairness_table(report).to_markdown(title=False)]
    return lines


def _headline(section: Mapping[str, Any]) -> str:
    share = stats.format_interval(section["worse_off_share"], section["worse_off_share_ci_low"],
                                  section["worse_off_share_ci_high"])
    worse = (f"Users made worse off by training: {section['worse_off_users']} of {section['worse_off_share_n']} "
             f"held-out users, {share} ({section['worse_off_share_interval']}).")
    if "after" not in section:
        return f"One user group in this evaluation: no worst group or gap to report. {worse}"
    b, a = section["before"], section["after"]

    def extreme(side: Mapping[str, Any], key: str) -> str:
        return stats.format_interval(side[key], side[f"{key}_ci_low"], side[f"{key}_ci_high"], digits=3)

    return (f"Worst group after training: **{a['worst_group']}**, utility {extreme(a, 'worst_group_utility')} "
            f"(before: {b['worst_group']}, {extreme(b, 'worst_group_utility')}). Max-min gap between group means: "
            f"{extreme(b, 'group_gap')} before, {extreme(a, 'group_gap')} after ({a['group_gap_interval']}). {worse}")


def fairness_line(report: Mapping[str, Any]) -> str | None:
    """One console line after the run's table: the worst group, the gap and the users made worse off."""
    section = (report.get("comparison") or {}).get("fairness")
    if not section:
        return None
    worse = f"{section['worse_off_users']}/{section['worse_off_share_n']} users worse off"
    if "after" not in section:
        return f"fairness: {worse} (one user group)"
    a, b = section["after"], section["before"]
    return (f"fairness: worst group {a['worst_group']} {a['worst_group_utility']:+.3f} (base {b['worst_group_utility']:+.3f}), "
            f"gap {a['group_gap']:.3f} (base {b['group_gap']:.3f}), {worse}")


def plot_fairness(run_dir: Any, report: Mapping[str, Any]) -> Any:
    """``plots/fairness.png``: each group's and trait value's paired improvement with its interval."""
    section = (report.get("comparison") or {}).get("fairness")
    if not section:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    slices = [(f"group {k}", v) for k, v in section["groups"].items()] + list(section["traits"].items())
    values = [v["improvement"] for _, v in slices]
    low = [v["improvement"] - v["improvement_ci_low"] for _, v in slices]
    high = [v["improvement_ci_high"] - v["improvement"] for _, v in slices]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(slices) + 1)))
    y = np.arange(len(slices))
    colors = ["tab:blue" if name.startswith("group ") else "tab:gray" for name, _ in slices]
    ax.barh(y, values, xerr=np.nan_to_num([low, high]), capsize=3, color=colors)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_yticks(y, [f"{name} (n={v['n']})" for name, v in slices])
    ax.invert_yaxis()
    ax.set_xlabel(f"paired improvement in hidden utility\n({slices[0][1]['improvement_interval']})")
    ax.set_title("who gained from training: groups (blue) and traits")
    return save_figure(fig, run_dir, "fairness.png")


# --- the fairness: mitigations ---------------------------------------------------------------------------


def training_rewards(config: Any) -> list[Any]:
    """The reward specs training uses: the config's, with ``user_feedback`` swapped for ``maxmin`` (same weight,
    the same perception noise and noise seed) when ``fairness.maxmin`` is on."""
    if not config.fairness.maxmin:
        return list(config.rewards)
    swapped = []
    for spec in config.rewards:
        if spec.name == "user_feedback":
            params = {k: v for k, v in spec.params.items() if k in ("noise", "noise_seed")}
            spec = spec.model_copy(update={"name": "maxmin", "params": params})
        swapped.append(spec)
    return swapped
