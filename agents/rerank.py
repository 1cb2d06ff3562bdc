"""Fit-and-rerank (no training): fit the user's Bradley-Terry weights from k past choices, answer with the best of K.

The population benchmark's upper bound. A user's past choices (:mod:`envs.choices`: K candidate replies to a
request and the one the user chose) are K-way Bradley-Terry choices, i.e. the multinomial logit::

    P(user picks c) ∝ exp(u_c / T),   u_c = Σ_d w_d · r_c · (2 f_cd − 1) + (2 r_c − 1)

with ``f_cd`` the candidate's style features, ``r_c`` its task relevance (:func:`envs.relevance.features_and_relevance`, the
quantities the simulated users score with) and ``T`` the users' choice temperature. The weights ``w`` are
fitted by maximum likelihood with an L2 penalty (a Gaussian prior that keeps the fit finite when k choices
are separable); the users' ``-(1 - r)·|w|`` term for off-topic replies is left out of the model, a small
approximation for replies that answer. At evaluation the base policy samples ``candidates`` replies per
conversation and the one with the highest fitted utility is sent (:attr:`agents.TrainedPolicy.choose_reply`).

``method_settings``: ``k`` (past choices fitted on, default 5), ``candidates`` (replies sampled per
conversation, default 8, PersonalLLM's K), ``l2`` (the penalty, default 1.0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from agents import MethodSettings, MethodSpec, TrainedPolicy, TrainingJob
from agents.prompting import check_settings


class Settings(MethodSettings):
    k: int = Field(5, ge=1, le=64, description="past choices the user's weights are fitted on")
    candidates: int = Field(8, ge=1, le=64, description="replies sampled per conversation; the best is sent")
    l2: float = Field(1.0, ge=0.0, description="L2 penalty of the fit (a Gaussian prior on the weights)")


def choice_design(replies: list[str], dimensions: tuple[str, ...], keywords: Any, request: str | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per reply: the style terms ``r · (2f − 1)`` (one column per dimension) and the relevance term ``2r − 1``.

    Without ``keywords`` (the task is unknown) relevance counts as 1: the style features alone."""
    from envs.features import features
    from envs.relevance import features_and_relevance

    if keywords is None:
        return 2.0 * features(replies, dimensions) - 1.0, np.ones(len(replies))
    values, relevance = features_and_relevance(replies, dimensions, [keywords] * len(replies), [request] * len(replies))
    return relevance[:, None] * (2.0 * values - 1.0), 2.0 * relevance - 1.0


def fit_preference_weights(design: np.ndarray, offsets: np.ndarray, chosen: np.ndarray, temperature: float,
                           l2: float = 1.0) -> np.ndarray:
    """Maximum-likelihood weights of the multinomial-logit choice model, with an L2 penalty.

    ``design``: (n choices, K candidates, D) terms; ``offsets``: (n, K) fixed utility; ``chosen``: (n,) indices.
    """
    from scipy.optimize import minimize

    design = np.asarray(design, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.int64)
    rows = np.arange(len(chosen))
    scale = 1.0 / max(temperature, 1e-6)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = scale * (design @ w + offsets)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        nll = -np.log(p[rows, chosen] + 1e-300).sum() + 0.5 * l2 * w @ w
        grad = scale * (np.einsum("nk,nkd->d", p, design) - design[rows, chosen].sum(axis=0)) + l2 * w
        return float(nll), grad

    result = minimize(loss, np.zeros(design.shape[2]), jac=True, method="L-BFGS-B")
    return result.x


class Reranker:
    """Each user's weights fitted once from their first k past choices; candidates scored by them."""

    def __init__(self, population: Any, options: Settings) -> None:
        self.population = population
        self.options = options
        self.dimensions = population.scenario.dimensions
        self.temperature = population.simulated_user(population.users[0].user_id).choice_temperature
        self._weights: dict[str, np.ndarray] = {}
        self._tasks: dict[str, dict[str, Any]] = {}

    def weights(self, user_id: str) -> np.ndarray:
        if user_id not in self._weights:
            from envs.choices import choice_history

            design, offsets, chosen = [], [], []
            for past in choice_history(self.population, user_id, self.options.k):
                task = self.population.task(past.task_id)
                x, o = choice_design(list(past.candidates), self.dimensions, task.keyword_set, past.request)
                design.append(x)
                offsets.append(o)
                chosen.append(past.chosen)
            self._weights[user_id] = fit_preference_weights(np.array(design), np.array(offsets), np.array(chosen),
                                                            self.temperature, self.options.l2)
        return self._weights[user_id]

    def _task_of(self, user_id: str, messages: list[dict[str, str]]) -> Any:
        """The task the user asked for, from their opening message (as the user phrases each task)."""
        if user_id not in self._tasks:
            user = self.population.simulated_user(user_id)
            self._tasks[user_id] = {user.ask(t): t for t in self.population.tasks}
        opening = next((m["content"] for m in messages if m["role"] == "user"), "")
        return self._tasks[user_id].get(opening), opening

    def choose(self, user_id: str, messages: list[dict[str, str]], candidates: list[str]) -> int:
        task, request = self._task_of(user_id, messages)
        x, o = choice_design(candidates, self.dimensions, task.keyword_set if task else None, request)
        return int(np.argmax(x @ self.weights(user_id) + o))


def train(job: TrainingJob) -> TrainedPolicy:
    options = Settings.of(job.method_settings)
    reranker = Reranker(job.population, options)
    example = job.population.held_out_users[0].user_id
    fitted = dict(zip(reranker.dimensions, np.round(reranker.weights(example), 4).tolist()))
    if job.log is not None:
        job.log({"fit_rerank/k": float(options.k), "fit_rerank/candidates": float(options.candidates)})
    return TrainedPolicy(
        job.model, save_model=False, choose_reply=reranker.choose, candidates=options.candidates,
        extras={"fit_rerank.json": {**options.model_dump(), "example_user": example, "fitted_weights": fitted,
                                    "true_weights": dict(job.population.user(example).preference_weights)}},
    )


METHOD = MethodSpec(
    name="fit_rerank",
    description="no training: fit the user's Bradley-Terry weights from k past choices, send the best of K sampled replies",
    train=train, check_trainer=check_settings, settings=Settings, multi_turn=True, uses_prompts=False,
)
