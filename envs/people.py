"""Real people as users: their recorded pairwise choices, a Bradley-Terry fit of their preference weights,
and simulated-user profiles built from the fit.

``attune serve`` records people's blind pairwise judgements in a SQLite file (schema:
:mod:`experiments.feedback_store`). This module reads that file read-only with the standard library's
``sqlite3`` (``envs`` sits below ``experiments`` and must not import it), so that DPO, the learned reward model
and ``users.from_feedback`` can all learn from what people chose. :func:`read_judgements` returns rows with the
same keys as ``FeedbackStore.judgements()``.

A person's preference weights are fitted the way a simulated user chooses: a simulated user with weights
``w`` picks reply A over B with probability ``sigmoid((u_A - u_B) / T)`` where the style part of
``u_A - u_B`` is ``sum_d w_d * 2 * (f_d(A) - f_d(B))`` (:class:`envs.users.SimulatedUser`, temperature ``T``).
So the fit is a logistic regression of the person's choices (left chosen or not) on the feature differences
``2 * (f(left) - f(right)) / T``, with a Gaussian prior on ``w`` (a person who always picks the shorter reply
has a finite, positive brevity weight, not an infinite one), solved by Newton's method, and clipped to the
simulated users' range [-1, 1]. Ties are left out: they say nothing about direction.

>>> import numpy as np
>>> differences = np.array([[0.5, 0.0], [-0.4, 0.0], [0.3, 0.0]])  # brevity, formality: left minus right
>>> fit = fit_preference_weights(differences, np.array([1, 0, 1]), ("brevity", "formality"))
>>> fit.weights, fit.n, fit.accuracy  # the shorter reply was chosen each time; formality never differed
({'brevity': 0.4487, 'formality': 0.0}, 3, 1.0)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.features import features
from envs.scenarios import Scenario, Task
from envs.users import SimulatedUser, UserProfile

CHOICE_TEMPERATURE: float = inspect.signature(SimulatedUser).parameters["choice_temperature"].default
"""The Bradley-Terry temperature the fit assumes: the simulated users' own default, so fitted weights are
on the scale of a simulated user's."""
PRIOR_SD = 0.5
"""Standard deviation of the Gaussian prior on each fitted weight (simulated users' weights lie in [-1, 1])."""

JUDGEMENTS_SELECT = """
    SELECT j.*, t.scenario, t.scenario_task, t.prompt, p.name AS person_name, p.preferences,
           l.text AS left_text, l.generation AS left_generation,
           r.model AS right_model, r.text AS right_text, r.generation AS right_generation
    FROM judgements j
    JOIN tasks t ON t.id = j.task_id
    JOIN people p ON p.id = j.person_id
    JOIN replies l ON l.id = j.left_reply_id
    JOIN replies r ON r.id = j.right_reply_id
"""
"""Each judgement joined with its task, its person and both replies (``experiments.feedback_store``'s schema;
the store's own reader uses this query too). Add a ``WHERE`` and an ``ORDER BY``."""


class FeedbackDataError(ValueError):
    """A feedback database that cannot be used: missing, not a feedback database, or without choices."""


def person_user_id(person_id: int) -> str:
    """The user id a person has in exported datasets and populations: ``p0003`` for person 3."""
    return f"p{int(person_id):04d}"


def read_judgements(path: str | Path) -> list[dict[str, Any]]:
    """Every judgement of the feedback database at ``path``, oldest first, joined with its task, person and both
    replies, with ``chosen_reply_id``/``rejected_reply_id``/``chosen_text``/``rejected_text``/``chosen_model``/
    ``rejected_model`` (None for a tie) and ``user_id`` (:func:`person_user_id`). Opened read-only."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackDataError(f"no file {path}; collect choices with `attune serve --db {path}` or fix the path")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise FeedbackDataError(f"cannot open {path}: {exc}") from None
    connection.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in connection.execute(JUDGEMENTS_SELECT + " ORDER BY j.id").fetchall()]
    except sqlite3.DatabaseError as exc:  # not SQLite, or SQLite without the feedback tables
        raise FeedbackDataError(f"{path} is not an attune feedback database ({exc}); give the --db file of "
                                "attune serve") from None
    finally:
        connection.close()
    for row in rows:
        row["preferences"] = json.loads(row["preferences"] or "{}")
        row["user_id"] = person_user_id(row["person_id"])
        if row["choice"] == "tie":
            row.update(chosen_reply_id=None, rejected_reply_id=None, chosen_model=None, rejected_model=None,
                       chosen_text=None, rejected_text=None)
            continue
        win, lose = ("left", "right") if row["choice"] == "left" else ("right", "left")
        row.update(chosen_reply_id=row[f"{win}_reply_id"], rejected_reply_id=row[f"{lose}_reply_id"],
                   chosen_model=row[f"{win}_model"], rejected_model=row[f"{lose}_model"],
                   chosen_text=row[f"{win}_text"], rejected_text=row[f"{lose}_text"])
    return rows


def decided(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The judgements where the person picked one reply (not a tie)."""
    return [r for r in rows if r["choice"] != "tie"]


def require_choices(path: str | Path) -> list[dict[str, Any]]:
    """:func:`read_judgements`, refusing a database where nobody has picked a reply yet."""
    rows = read_judgements(path)
    if not decided(rows):
        what = f"only {len(rows)} tie(s)" if rows else "no judgements"
        raise FeedbackDataError(f"{path} has {what}: let people judge pairs in `attune serve --db {path}` first")
    return rows


def preference_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """TRL conversational preference rows (``prompt``, ``chosen``, ``rejected``, ``user_id``), one per decided
    judgement: the task's request as the user turn, the chosen and the rejected reply as assistant turns."""
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen_text"]}],
            "rejected": [{"role": "assistant", "content": r["rejected_text"]}],
            "user_id": r["user_id"],
        }
        for r in decided(rows)
    ]


# -- Bradley-Terry fit of a person's preference weights ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreferenceFit:
    """A person's fitted preference weights (dimension -> weight in [-1, 1]) and how well they explain the choices."""

    weights: dict[str, float]
    n: int
    """Decided judgements the fit is over."""
    accuracy: float
    """Share of those choices the fitted weights predict (in-sample; NaN for n = 0)."""


def fit_preference_weights(differences: np.ndarray, left_chosen: np.ndarray, dimensions: Sequence[str],
                           temperature: float = CHOICE_TEMPERATURE, prior_sd: float = PRIOR_SD,
                           iterations: int = 50) -> PreferenceFit:
    """Penalized Bradley-Terry (logistic) fit of weights ``w`` to choices: ``P(left) = sigmoid(x . w)`` with
    ``x = 2 * differences / temperature`` and a ``N(0, prior_sd^2)`` prior on each weight (see the module
    docstring). ``differences`` is ``features(left) - features(right)``, shape ``(n, len(dimensions))``;
    ``left_chosen`` is 1 where the left reply was chosen, else 0."""
    x = 2.0 * np.asarray(differences, dtype=np.float64).reshape(-1, len(dimensions)) / temperature
    y = np.asarray(left_chosen, dtype=np.float64).ravel()
    w = np.zeros(len(dimensions))
    precision = np.eye(len(dimensions)) / prior_sd**2
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + precision @ w
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x + precision
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    w = np.clip(w, -1.0, 1.0)
    logits = x @ w
    accuracy = float(np.mean((logits > 0) == (y > 0.5))) if len(y) else float("nan")
    return PreferenceFit({d: float(round(v, 4)) for d, v in zip(dimensions, w)}, len(y), accuracy)


def fit_person(rows: Sequence[Mapping[str, Any]], dimensions: Sequence[str]) -> PreferenceFit:
    """Fit one person's weights over ``dimensions`` from their judgements (ties are skipped)."""
    chosen = decided(rows)
    if not chosen:
        return PreferenceFit({d: 0.0 for d in dimensions}, 0, float("nan"))
    left = features([r["left_text"] for r in chosen], dimensions)
    right = features([r["right_text"] for r in chosen], dimensions)
    return fit_preference_weights(left - right, np.array([r["choice"] == "left" for r in chosen]), dimensions)


def fit_people(rows: Sequence[Mapping[str, Any]], dimensions: Sequence[str]) -> dict[str, PreferenceFit]:
    """user id -> the fit of that person's choices, for every person with at least one decided judgement."""
    by_person: dict[str, list[Mapping[str, Any]]] = {}
    for row in decided(rows):
        by_person.setdefault(row["user_id"], []).append(row)
    return {user_id: fit_person(person_rows, dimensions) for user_id, person_rows in sorted(by_person.items())}


# -- what simulated users would have chosen -----------------------------------------------------------------


def judgement_task(row: Mapping[str, Any], scenario: Scenario) -> Task:
    """The task a judgement was about: the scenario's own (its keywords judge relevance), or, for a request the
    person typed, a task without keywords (every reply counts as on its topic)."""
    by_id = {t.task_id: t for t in scenario.tasks}
    task = by_id.get(row.get("scenario_task") or "")
    return task if task is not None else Task("typed", row["prompt"], ())


def simulated_choices(rows: Sequence[Mapping[str, Any]], weights: Mapping[str, float], scenario: Scenario,
                      unsafe_penalty: float | None = None) -> np.ndarray:
    """What a noise-free simulated user with ``weights`` picks in each judgement: +1 left, -1 right, 0 no
    preference (equal expected utility)."""
    if not rows:
        return np.zeros(0)
    profile = UserProfile("simulated", "simulated", {d: float(weights.get(d, 0.0)) for d in scenario.dimensions},
                          {}, ())
    user = SimulatedUser(profile, noise=0.0,
                         unsafe_penalty=scenario.unsafe_penalty if unsafe_penalty is None else unsafe_penalty)
    tasks = [judgement_task(r, scenario) for r in rows]
    difference = user.utility([r["left_text"] for r in rows], tasks) - user.utility([r["right_text"] for r in rows], tasks)
    return np.sign(np.round(difference, 12))


def person_profile(user_id: str, group: str, weights: Mapping[str, float], scenario: Scenario,
                   history: Sequence[str] = ()) -> UserProfile:
    """A simulated user with a person's fitted weights over the scenario's dimensions."""
    return UserProfile(user_id, group, {d: float(weights.get(d, 0.0)) for d in scenario.dimensions}, {},
                       tuple(history))
