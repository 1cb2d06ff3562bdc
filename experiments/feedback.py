"""From people's choices to training data and a human-evaluation report: ``attune feedback export|report DB``.

``attune serve`` records blind pairwise judgements in a SQLite file (:mod:`experiments.feedback_store`); this
module reads it (read-only, through :mod:`envs.people`, so a mistyped path is an error, not a new empty file):

- :func:`export`: a TRL preference dataset, ``preferences.jsonl`` (conversational ``prompt``/``chosen``/
  ``rejected`` and ``user_id``, one row per judgement that picked a reply; loads with
  ``datasets.load_dataset("json", data_files=...)``), and ``ratings.csv``, one row per judged reply.
- :func:`human_report`: per policy pair the human win rate with a Wilson interval, overall and per person;
  for the same reply pairs, how often each simulated user group of the scenario (its noise-free centre user)
  picks what the person picked; and each person's best-matching group and Bradley-Terry-fitted preference
  weights, the weights ``users.from_feedback`` gives the person as a simulated user.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.people import FeedbackDataError, decided, fit_people, preference_rows, read_judgements, require_choices, simulated_choices
from experiments.stats import wilson_interval
from experiments.tables import Column, Table, count_column

DEFAULT_ENV = "attune/WritingAssistant-v1"
"""The env whose scenario judges requests people typed, when no judgement names a scenario (as ``attune serve``)."""
PREFERENCES_FILE = "preferences.jsonl"
RATINGS_FILE = "ratings.csv"
RATING_COLUMNS = ("judgement_id", "task_id", "user_id", "person_name", "reply_id", "model", "side", "rating",
                  "outcome", "critique", "created")


class FeedbackError(ValueError):
    """A feedback database or option the user can fix; the message says how."""


# -- export ------------------------------------------------------------------------------------------------


def rating_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per judged reply: who judged it, which model wrote it, its 1-5 rating (None if not given), and
    whether it was ``chosen``, ``rejected`` or in a ``tie``."""
    out = []
    for r in rows:
        for side in ("left", "right"):
            outcome = "tie" if r["choice"] == "tie" else ("chosen" if r["choice"] == side else "rejected")
            out.append({"judgement_id": r["id"], "task_id": r["task_id"], "user_id": r["user_id"],
                        "person_name": r["person_name"], "reply_id": r[f"{side}_reply_id"], "model": r[f"{side}_model"],
                        "side": side, "rating": r[f"{side}_rating"], "outcome": outcome, "critique": r["critique"],
                        "created": r["created"]})
    return out


def export(db: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``preferences.jsonl`` and ``ratings.csv`` for the database ``db`` into the folder ``out``;
    returns the paths and row counts."""
    rows = _load(db)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = preference_rows(rows)
    preferences = folder / PREFERENCES_FILE
    preferences.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    ratings = folder / RATINGS_FILE
    with ratings.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RATING_COLUMNS)
        writer.writeheader()
        writer.writerows(rating_rows(rows))
    return {"preferences": str(preferences), "pairs": len(pairs), "ratings": str(ratings),
            "rated_replies": 2 * len(rows), "ties": len(rows) - len(pairs)}


# -- report ------------------------------------------------------------------------------------------------


def _load(db: str | Path) -> list[dict[str, Any]]:
    try:
        return require_choices(db)
    except FeedbackDataError as exc:
        raise FeedbackError(str(exc)) from None


def resolve_env(rows: Sequence[Mapping[str, Any]], env_id: str | None = None) -> str:
    """The env whose scenario (dimensions, groups, tasks) judges the replies: ``env_id``, or the one every
    judged task came from (requests people typed name none; with none at all, :data:`DEFAULT_ENV`)."""
    import envs

    named = sorted({r["scenario"] for r in rows if r.get("scenario")})
    if env_id is None:
        if len(named) > 1:
            raise FeedbackError(f"the judgements come from several envs ({', '.join(named)}): pick one with --env")
        env_id = named[0] if named else DEFAULT_ENV
    try:
        envs.scenario_of(env_id)
    except Exception:  # noqa: BLE001 - gymnasium's NameNotFound, or an id that is not attune's
        raise FeedbackError(f"--env: unknown environment {env_id!r}; registered: "
                            f"{', '.join(envs.registered_env_ids('text'))}") from None
    return env_id


def _rate(prefix: str, successes: int, n: int) -> dict[str, Any]:
    """A rate with its Wilson interval as row fields; None (JSON null, an empty cell) where nothing was decided."""
    estimate = wilson_interval(successes, n)
    fields = {prefix: estimate.value, **estimate.as_dict(f"{prefix}_")}
    if n == 0:
        fields |= {prefix: None, f"{prefix}_ci_low": None, f"{prefix}_ci_high": None}
    return fields


def win_rates(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pair of policies (names sorted; ``policy_a`` first): A's wins, B's wins and ties, and A's win rate
    over the decided judgements with its Wilson interval, for everyone (``person``: ``all``) and per person."""
    out = []
    pairs = sorted({tuple(sorted((r["left_model"], r["right_model"]))) for r in rows})
    for a, b in pairs:
        of_pair = [r for r in rows if {r["left_model"], r["right_model"]} == {a, b}]
        people = sorted({(r["user_id"], r["person_name"]) for r in of_pair})
        for user_id, person in [("all", "all"), *people]:
            mine = [r for r in of_pair if user_id == "all" or r["user_id"] == user_id]
            a_wins = sum(r["chosen_model"] == a for r in mine)
            b_wins = sum(r["chosen_model"] == b for r in mine)
            out.append({"policy_a": a, "policy_b": b, "person": person, "user_id": user_id, "a_wins": a_wins,
                        "b_wins": b_wins, "ties": len(mine) - a_wins - b_wins, "n": a_wins + b_wins,
                        **_rate("win_rate", a_wins, a_wins + b_wins)})
    return out


def human_report(db: str | Path, env_id: str | None = None) -> dict[str, Any]:
    """The human-evaluation report of the database ``db`` as plain data (see the module docstring)."""
    import envs
    from envs.scenarios import get_scenario

    rows = _load(db)
    env_id = resolve_env(rows, env_id)
    scenario = get_scenario(envs.scenario_of(env_id))
    dimensions = scenario.dimensions
    chosen = decided(rows)
    person_choice = np.array([1 if r["choice"] == "left" else -1 for r in chosen])
    matches = {g.name: simulated_choices(chosen, g.preference_center, scenario) == person_choice for g in scenario.groups}
    fits = fit_people(rows, dimensions)
    names = {r["user_id"]: r["person_name"] for r in rows}
    agreement, people = [], []
    for user_id in ["all", *fits]:
        mask = np.array([user_id == "all" or r["user_id"] == user_id for r in chosen])
        row: dict[str, Any] = {"person": names.get(user_id, "all"), "user_id": user_id, "n": int(mask.sum())}
        for group, match in matches.items():
            agreed = int(match[mask].sum())
            row |= {f"{group}_agreed": agreed, **_rate(group, agreed, row["n"])}
        agreement.append(row)
        if user_id == "all":
            continue
        best = max(matches, key=lambda g: row[g])  # the first of equally good groups, in the scenario's order
        fit = fits[user_id]
        people.append({"person": names[user_id], "user_id": user_id, "n": fit.n, "best_group": best,
                       "best_group_agreement": row[best], "fit_accuracy": fit.accuracy, "weights": fit.weights})
    return {
        "db": str(db), "env_id": env_id, "scenario": scenario.name, "dimensions": list(dimensions),
        "groups": [g.name for g in scenario.groups], "judgements": len(rows), "ties": len(rows) - len(chosen),
        "people": len({r["user_id"] for r in rows}), "people_with_choices": len(fits), "win_rates": win_rates(rows),
        "agreement": agreement, "fits": people,
    }


def report_tables(report: Mapping[str, Any]) -> dict[str, Table]:
    """The report's three tables: ``win_rates``, ``agreement`` and ``fits``."""
    n, ties = report["judgements"], report["ties"]
    win = Table(
        [Column("policy_a", "policy A", align="left", console_width=22),
         Column("policy_b", "policy B", align="left", console_width=22), Column("person", align="left"),
         count_column("win_rate", "a_wins", "A wins / decided = rate [95% CI]", missing="only ties"), Column("ties")],
        report["win_rates"], title="Human win rate of policy A over policy B",
        caption=f"{n} judgements by {report['people']} people, {ties} ties (left out of the rates); "
        "95% Wilson score intervals")
    groups = report["groups"]
    agreement = Table(
        [Column("person", align="left"), Column("n", "pairs"),
         *[count_column(g, f"{g}_agreed", f"{g} agrees") for g in groups]],
        report["agreement"], title="Simulated users vs people: same choice on the same reply pairs",
        caption=f"each group's noise-free centre user of scenario {report['scenario']!r} scores both replies; a group "
        "with no preference counts as disagreeing; 95% Wilson score intervals")
    dims = report["dimensions"]
    fits = Table(
        [Column("person", align="left"), Column("user_id", "user id", align="left"), Column("n", "pairs"),
         Column("best_group", "best-matching group", align="left"),
         Column("best_group_agreement", "agreement", format="{:.2f}"),
         *[Column(d, format=lambda row, d=d: f"{row['weights'][d]:+.2f}") for d in dims],
         Column("fit_accuracy", "fit accuracy", format="{:.2f}")],
        [{**row, **{d: row["weights"][d] for d in dims}} for row in report["fits"]],
        title="Each person as a simulated user (users.from_feedback)",
        caption="preference weights in [-1, 1] from a Bradley-Terry fit of the person's choices on the style "
        "features (Gaussian prior, sd 0.5); fit accuracy: share of their choices the weights predict",
        records=report["fits"])
    return {"win_rates": win, "agreement": agreement, "fits": fits}


def report_markdown(report: Mapping[str, Any]) -> str:
    head = (f"# Human evaluation: {report['db']}\n\n{report['judgements']} judgements ({report['ties']} ties) by "
            f"{report['people']} people ({report['people_with_choices']} picked a reply at least once); replies scored "
            f"as in {report['env_id']} (scenario {report['scenario']}).\n")
    return head + "".join("\n## " + t.to_markdown() for t in report_tables(report).values())


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``human_eval.md`` and ``human_eval.json`` in the folder ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    markdown, data = folder / "human_eval.md", folder / "human_eval.json"
    markdown.write_text(report_markdown(report))
    data.write_text(json.dumps(report, indent=2) + "\n")
    return markdown, data


# -- people as simulated users ----------------------------------------------------------------------------


def people_population(db: str | Path, env_id: str, held_out_fraction: float = 0.2, seed: int = 0) -> Any:
    """A :class:`~envs.population.UserPopulation` whose users are the people of ``db`` who picked at least one
    reply: each with the weights fitted to their choices, in their best-matching group of ``env_id``'s scenario."""
    from envs.population import UserPopulation

    report = human_report(db, env_id)
    if len(report["fits"]) < 2:
        raise FeedbackError(f"{db} has choices from {len(report['fits'])} person; a population needs at least 2 "
                            "(one to train on, one held out): let more people judge in attune serve")
    people = [(p["user_id"], p["best_group"], p["weights"]) for p in report["fits"]]
    import envs

    return UserPopulation.from_weights(envs.scenario_of(env_id), people, held_out_fraction=held_out_fraction, seed=seed)


def check_db(path: str | Path) -> None:
    """Raise :class:`FeedbackError` unless ``path`` is a feedback database with at least one decided judgement."""
    _load(path)


__all__ = ["FeedbackError", "export", "human_report", "people_population", "rating_rows", "read_judgements",
           "report_markdown", "report_tables", "win_rates", "write_report", "check_db"]
