"""What training changed and why, per run and per user, from the run's saved files (no model is loaded).

The users' hidden utility is a sum of terms, one per preference dimension (``weight_d · feature_d`` of the
reply) plus task relevance (and safety where the scenario has it), and every evaluated turn's terms are saved
in ``episodes.json``. The same held-out conversations are played before and after training with the same
sampling seeds, so each term's change (after - before) says what moved, e.g. ``brevity +0.31, warmth -0.05``.
A dimension's term rises exactly when the replies moved the way the user's weight asks for (the term is
``weight · feature``), so a rise *served* that preference weight and a fall went against it; the user's
weights come from the population the run's ``config.yaml`` rebuilds (seeded: the same users).

``attune explain RUN [--user ID]`` prints it (:func:`explanation_lines`); the run report embeds it
(:func:`explanation_markdown`) with ``plots/explain.png``, the term changes per user group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NOT_PREFERENCES = ("relevance", "safety")
"""Utility terms that are not a preference dimension (no user weight behind them)."""
TOP_TERMS = 3
"""Terms named in a one-line summary (a user's own explanation lists them all)."""
REPORT_USERS = 20
"""Users listed one line each in report.md (``attune explain RUN`` lists every user)."""
REPLY_CHARS = 240


class ExplainError(ValueError):
    """A run folder that cannot be explained (missing, not evaluated, unknown user): the message says why."""


def _conversation_terms(record: Mapping[str, Any]) -> dict[str, float]:
    """One conversation's utility terms, averaged over its turns (they add up to its score)."""
    turns = record.get("terms") or []
    if not turns:
        return {}
    return {name: float(np.mean([turn[name] for turn in turns])) for name in turns[0]}


def _mean_terms(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    names = rows[0] if rows else {}
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


def _sorted_changes(changes: Mapping[str, float]) -> dict[str, float]:
    return dict(sorted(changes.items(), key=lambda item: (-abs(item[1]), item[0])))


def _pair(b: Mapping[str, Any], a: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": a["user_id"], "group": a["group"], "task_id": a["task_id"], "before_score": b["score"],
            "after_score": a["score"], "change": a["score"] - b["score"],
            "before_reply": (b.get("replies") or [""])[0], "after_reply": (a.get("replies") or [""])[0]}


def explain(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
            weights: Mapping[str, Mapping[str, float]] | None = None,
            traits: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The explanation of one run from its episode records (``episodes.json``'s ``before`` and ``after``: the same
    conversations in the same order, each with ``user_id``, ``group``, ``task_id``, ``replies``, ``terms`` and
    ``score``). ``weights`` (user -> preference weights) and ``traits`` (user -> traits) add each user's why.

    Returns ``terms`` (each term's mean before, after and change, largest change first), ``served`` (per
    preference dimension: the users whose term rose, i.e. whose weight the change served, and those whose term
    fell), ``by_group`` (group -> term -> change), ``most_changed`` (the reply pair whose score changed most) and
    ``by_user`` (each user's changes, weights and own most-changed pair).
    """
    if len(before) != len(after):
        raise ExplainError(f"episodes.json: {len(before)} conversations before training but {len(after)} after; "
                           "explanations need the same conversations played twice")
    if any(b["user_id"] != a["user_id"] or b["task_id"] != a["task_id"] for b, a in zip(before, after)):
        raise ExplainError("episodes.json: the before and after conversations are not the same users and tasks")
    pairs = [(b, a, _conversation_terms(b), _conversation_terms(a)) for b, a in zip(before, after)]
    deltas = [{k: ta[k] - tb[k] for k in tb if k in ta} for _, _, tb, ta in pairs]
    term_before = _mean_terms([tb for _, _, tb, _ in pairs if tb])
    term_after = _mean_terms([ta for _, _, _, ta in pairs if ta])
    changes = _sorted_changes(_mean_terms([d for d in deltas if d]))
    terms = {name: {"before": term_before[name], "after": term_after[name], "change": change}
             for name, change in changes.items()}

    by_group_rows: dict[str, list[dict[str, float]]] = {}
    by_user_rows: dict[str, list[int]] = {}
    for i, (b, a, _, _) in enumerate(pairs):
        by_group_rows.setdefault(a["group"], []).append(deltas[i])
        by_user_rows.setdefault(a["user_id"], []).append(i)
    by_group = {group: _sorted_changes(_mean_terms([d for d in rows if d])) for group, rows in sorted(by_group_rows.items())}

    by_user: dict[str, dict[str, Any]] = {}
    for user_id, indices in by_user_rows.items():
        b_scores = [pairs[i][0]["score"] for i in indices]
        a_scores = [pairs[i][1]["score"] for i in indices]
        top = max(indices, key=lambda i: abs(pairs[i][1]["score"] - pairs[i][0]["score"]))
        user_weights = dict(weights[user_id]) if weights and user_id in weights else None
        by_user[user_id] = {
            "group": pairs[indices[0]][1]["group"], "conversations": len(indices),
            "before": float(np.mean(b_scores)), "after": float(np.mean(a_scores)),
            "change": float(np.mean(a_scores) - np.mean(b_scores)),
            "terms": _sorted_changes(_mean_terms([deltas[i] for i in indices if deltas[i]])),
            "weights": user_weights, "traits": dict(traits[user_id]) if traits and user_id in traits else None,
            "most_changed": _pair(pairs[top][0], pairs[top][1]),
        }

    served: dict[str, dict[str, int]] = {}
    for name in changes:
        if name in NOT_PREFERENCES or (weights and not any(name in (w or {}) for w in weights.values())):
            continue
        moved = [u["terms"].get(name, 0.0) for u in by_user.values()]
        served[name] = {"served": int(sum(m > 0 for m in moved)), "against": int(sum(m < 0 for m in moved)),
                        "users": len(moved)}

    top_pair = max(range(len(pairs)), key=lambda i: abs(pairs[i][1]["score"] - pairs[i][0]["score"]), default=None)
    scores_before = [b["score"] for b, _, _, _ in pairs]
    scores_after = [a["score"] for _, a, _, _ in pairs]
    return {
        "n": len(pairs), "users": len(by_user),
        "before": float(np.mean(scores_before)) if pairs else float("nan"),
        "after": float(np.mean(scores_after)) if pairs else float("nan"),
        "terms": terms, "served": served, "by_group": by_group,
        "most_changed": _pair(pairs[top_pair][0], pairs[top_pair][1]) if top_pair is not None else None,
        "by_user": dict(sorted(by_user.items())),
    }


# --- words ------------------------------------------------------------------------------------------------


def term_list(changes: Mapping[str, float], limit: int | None = None) -> str:
    """``brevity +0.31, warmth -0.05``: the largest changes first."""
    items = list(changes.items())[:limit]
    return ", ".join(f"{name} {change:+.2f}" for name, change in items) or "no utility terms recorded"


def _reply(text: str) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= REPLY_CHARS else text[: REPLY_CHARS - 3] + "...")


def _pair_lines(pair: Mapping[str, Any], indent: str) -> list[str]:
    return [f"{indent}before ({pair['before_score']:+.2f}): {_reply(pair['before_reply'])}",
            f"{indent}after  ({pair['after_score']:+.2f}): {_reply(pair['after_reply'])}"]


def _weight_words(name: str, weight: float) -> str:
    wants = "more" if weight > 0 else "less" if weight < 0 else "no change in"
    return f"weight {weight:+.2f}: wants {wants} {name.replace('_', ' ')}"


def why_line(user: Mapping[str, Any]) -> str:
    """Which of the user's preference weights the change served (their term rose) and which it went against."""
    weights = user.get("weights")
    moved = [(name, change) for name, change in user["terms"].items()
             if name not in NOT_PREFERENCES and (weights is None or name in weights) and round(change, 2) != 0]
    if not moved:
        return "no preference term moved by 0.01 or more"
    served = [(n, c) for n, c in moved if c > 0]
    against = [(n, c) for n, c in moved if c < 0]

    def words(items: list[tuple[str, float]]) -> str:
        if weights is None:
            return ", ".join(f"{n} ({c:+.2f})" for n, c in items)
        return ", ".join(f"{n} ({c:+.2f}; {_weight_words(n, weights[n])})" for n, c in items)

    parts = []
    if served:
        parts.append("served this user's weights on " + words(served))
    if against:
        parts.append("went against " + words(against))
    return "; ".join(parts)


def user_summary_line(user_id: str, user: Mapping[str, Any]) -> str:
    return (f"{user_id} ({user['group']}, {user['conversations']} conv.): {user['before']:+.2f} -> {user['after']:+.2f} "
            f"({user['change']:+.2f}); {term_list(user['terms'], TOP_TERMS)}")


def user_lines(user_id: str, user: Mapping[str, Any]) -> list[str]:
    """Everything about one user: scores, every term's change, the why, and their most-changed reply pair."""
    traits = user.get("traits")
    about = f"group {user['group']}" + (f"; traits: {', '.join(f'{k}={v}' for k, v in sorted(traits.items()))}"
                                        if traits else "")
    pair = user["most_changed"]
    lines = [
        f"user {user_id} ({about}), {user['conversations']} held-out conversation{'s' if user['conversations'] != 1 else ''}",
        f"  utility {user['before']:+.3f} -> {user['after']:+.3f} ({user['change']:+.3f})",
        f"  what changed: {term_list(user['terms'])}",
        f"  why: {why_line(user)}",
    ]
    if user.get("weights"):
        weights = sorted(user["weights"].items(), key=lambda item: -abs(item[1]))
        lines.append("  preference weights: " + ", ".join(f"{n} {w:+.2f}" for n, w in weights))
    lines.append(f"  reply pair that changed most (task {pair['task_id']}, {pair['change']:+.2f}):")
    return lines + _pair_lines(pair, "    ")


def explanation_lines(explanation: Mapping[str, Any], user: str | None = None) -> list[str]:
    """The text ``attune explain`` prints: the run's explanation and one line per user, or one user in full."""
    if user is not None:
        if user not in explanation["by_user"]:
            known = list(explanation["by_user"])
            shown = ", ".join(known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
            raise ExplainError(f"--user {user}: not among this run's evaluated held-out users ({shown})")
        return user_lines(user, explanation["by_user"][user])
    lines = [
        f"what changed over {explanation['n']} held-out conversations ({explanation['users']} users): utility "
        f"{explanation['before']:+.3f} -> {explanation['after']:+.3f} ({explanation['after'] - explanation['before']:+.3f})",
        f"  terms (after - before): {term_list({k: v['change'] for k, v in explanation['terms'].items()})}",
    ]
    if explanation["served"]:
        lines.append("  preference weights served (users whose term rose / fell): " + ", ".join(
            f"{name} {s['served']}/{s['against']} of {s['users']}" for name, s in explanation["served"].items()))
    for group, changes in explanation["by_group"].items():
        lines.append(f"  group {group}: {term_list(changes, TOP_TERMS + 1)}")
    pair = explanation["most_changed"]
    if pair is not None:
        lines.append(f"  reply pair that changed most: user {pair['user_id']} ({pair['group']}), task {pair['task_id']}, "
                     f"{pair['change']:+.2f}")
        lines += _pair_lines(pair, "    ")
    lines.append("per user (utility before -> after, the terms that moved most; attune explain RUN --user ID for one):")
    lines += [f"  {user_summary_line(uid, u)}" for uid, u in explanation["by_user"].items()]
    return lines


# --- run files ----------------------------------------------------------------------------------------------


def _population(run_dir: Path) -> Any:
    """The run's user population, rebuilt from its config.yaml (seeded: the same users); None if it cannot be."""
    import yaml

    from experiments.config import ExperimentConfig
    from experiments.runner import _population

    try:
        config = ExperimentConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
        return _population(config)
    except Exception:  # noqa: BLE001 - e.g. a user's own env module not importable here: explain without weights
        return None


def load_explanation(run_dir: Path | str) -> dict[str, Any]:
    """The explanation of a run folder, from ``episodes.json`` (and ``config.yaml`` for the users' weights)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExplainError(f"{run_dir}: no such run folder; give a folder under runs/ (attune run prints it)")
    episodes_path = run_dir / "episodes.json"
    if not episodes_path.is_file():
        if (run_dir / "variants").is_dir():
            names = sorted(p.name for p in (run_dir / "variants").iterdir() if p.is_dir())
            raise ExplainError(f"{run_dir} holds variants; explain one of them: "
                               + ", ".join(str(run_dir / "variants" / n) for n in names[:4]))
        raise ExplainError(f"{run_dir} has no episodes.json: the run was not evaluated (evaluation.enabled: false, a "
                           "classic baseline, or it stopped early); explanations need a before/after evaluation")
    try:
        episodes = json.loads(episodes_path.read_text())
        before, after = episodes["before"], episodes["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExplainError(f"{episodes_path}: not an attune episodes file ({type(exc).__name__}: {exc})") from None
    population = _population(run_dir)
    weights = traits = None
    if population is not None:
        ids = {e["user_id"] for e in after}
        try:
            weights = {u: dict(population.user(u).preference_weights) for u in ids}
            traits = {u: dict(population.user(u).traits) for u in ids}
        except KeyError:  # the config changed after the run: leave the weights out rather than guess
            weights = traits = None
    explanation = explain(before, after, weights, traits)
    explanation["weights_known"] = weights is not None
    return explanation


def print_explanation(run_dir: Path | str, user: str | None, console: Any) -> None:
    """``attune explain RUN [--user ID]``."""
    explanation = load_explanation(run_dir)
    lines = explanation_lines(explanation, user)
    if not explanation["weights_known"]:
        lines.append("(the users' preference weights are not shown: the population could not be rebuilt from "
                     "config.yaml)")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def plot_explanation(run_dir: Path, explanation: Mapping[str, Any]) -> Path | None:
    """``plots/explain.png``: each utility term's mean change (after - before) per user group."""
    if not explanation["terms"] or not explanation["by_group"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    names = list(explanation["terms"])
    groups = list(explanation["by_group"])
    width = 0.8 / len(groups)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4))
    for k, group in enumerate(groups):
        changes = explanation["by_group"][group]
        users = sum(1 for u in explanation["by_user"].values() if u["group"] == group)
        ax.bar(x - 0.4 + width * (k + 0.5), [changes.get(n, 0.0) for n in names], width,
               label=f"{group} ({users} user{'s' if users != 1 else ''})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=20)
    ax.set_ylabel("mean change of the utility term\n(after - before, same conversations)")
    ax.set_title("what training changed, per user group")
    ax.legend(fontsize="small")
    return save_figure(fig, run_dir, "explain.png")


def explanation_markdown(run_dir: Path, report: Mapping[str, Any]) -> list[str]:
    """The ``## Explanations`` section of ``report.md`` (every run report has one, saying why when it is empty)."""
    lines = ["## Explanations", ""]
    try:
        explanation = load_explanation(run_dir)
    except ExplainError as exc:
        return lines + [f"Not available: {exc}.", ""]
    text = explanation_lines(explanation)
    users = [i for i, line in enumerate(text) if line.startswith("per user")]
    if users and len(text) - users[0] - 1 > REPORT_USERS:
        more = len(text) - users[0] - 1 - REPORT_USERS
        text = text[: users[0] + 1 + REPORT_USERS] + [f"  ... and {more} more users"]
    lines += ["What changed and why, from the utility terms of the same held-out conversations before and after "
              f"training (`attune explain {run_dir}` prints this; `--user ID` one user in full).", "",
              "```text", *text, "```", ""]
    if plot_explanation(run_dir, explanation) is not None:
        lines += ["![term changes per group](plots/explain.png)", ""]
    return lines
