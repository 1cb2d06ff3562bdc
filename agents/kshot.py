"""k-shot in-context personalization (no training): past replies the user chose go into the system prompt.

PersonalLLM's in-context baselines (Zollo et al., ICLR 2025): a user's history holds past requests, the K
candidate replies and the one the user chose (:mod:`envs.choices`). The system prompt shows ``k`` past
requests with a reply:

- ``source: own``: from the user's own last ``k`` choices;
- ``source: similar``: retrieval, PersonalLLM's meta-learning baseline: the user's own ``k`` choices only
  say who they are; the replies shown are the choices of the ``k`` most similar training users (a user is
  embedded as the mean style features of the replies they chose minus those of the replies they ranked last,
  the preference direction of their choices; similarity is cosine), whose histories are longer (``database``);
- ``examples: winning`` shows the replies the user chose, ``losing`` the ones they ranked last (with the
  instruction to avoid answering like them).

A past request equal to the current one is never shown. ``method_settings``: ``k``, ``source``,
``examples``, ``database`` (past choices per training user in the retrieval database, default 10).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from agents import MethodSettings, MethodSpec, TrainedPolicy, TrainingJob
from agents.prompting import check_settings


class Settings(MethodSettings):
    k: int = Field(3, ge=1, le=32, description="past requests shown (and, for similar, the user's own choices used)")
    source: Literal["own", "similar"] = Field("own", description="the user's own past choices, or similar users'")
    examples: Literal["winning", "losing"] = Field("winning", description="the replies chosen, or those ranked last")
    database: int = Field(10, ge=1, le=64, description="past choices per training user for retrieval (similar)")


def preference_direction(population: Any, past: list[Any]) -> np.ndarray:
    """The mean style features of the replies a user chose minus those of the replies they ranked last."""
    from envs.features import features

    dimensions = population.scenario.dimensions
    return (features([p.winner for p in past], dimensions) - features([p.loser for p in past], dimensions)).mean(axis=0)


class ExampleFinder:
    """The past (request, reply) pairs to show a user, under the method's settings."""

    def __init__(self, population: Any, options: Settings) -> None:
        from envs.choices import choice_history

        self.population = population
        self.options = options
        self.history = lambda user_id, n: choice_history(population, user_id, n)
        self._neighbours: dict[str, list[str]] = {}
        if options.source == "similar":
            self._database = [u.user_id for u in population.train_users]
            vectors = np.array([preference_direction(population, self.history(u, options.database))
                                for u in self._database])
            self._vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    def neighbours(self, user_id: str) -> list[str]:
        """The training users most similar to ``user_id`` by their choices' preference direction (itself excluded)."""
        if user_id not in self._neighbours:
            mine = preference_direction(self.population, self.history(user_id, self.options.k))
            scores = self._vectors @ (mine / max(float(np.linalg.norm(mine)), 1e-9))
            order = [self._database[i] for i in np.argsort(-scores, kind="stable")]
            self._neighbours[user_id] = [u for u in order if u != user_id]
        return self._neighbours[user_id]

    def examples(self, user_id: str, request: str) -> list[tuple[str, str]]:
        pick = (lambda p: p.winner) if self.options.examples == "winning" else (lambda p: p.loser)
        k = self.options.k
        if self.options.source == "own":
            past = [p for p in self.history(user_id, k + 1) if p.request != request][:k]
            return [(p.request, pick(p)) for p in past]
        shown = []
        for neighbour in self.neighbours(user_id):  # one example from each of the k most similar users
            past = next((p for p in self.history(neighbour, self.options.database) if p.request != request), None)
            if past is not None:
                shown.append((past.request, pick(past)))
            if len(shown) == k:
                break
        return shown


def system_prompt(examples: list[tuple[str, str]], winning: bool) -> str:
    if winning:
        head = "You are a personal assistant. On earlier requests this user chose the replies below; answer in the same way."
    else:
        head = "You are a personal assistant. On earlier requests this user liked the replies below least; avoid answering like them."
    shots = [f"Request: {request}\nReply: {reply}" for request, reply in examples]
    return "\n\n".join([head, *shots])


def train(job: TrainingJob) -> TrainedPolicy:
    options = Settings.of(job.method_settings)
    finder = ExampleFinder(job.population, options)

    def system_prompt_for(user_id: str, messages: list[dict[str, str]]) -> str:
        request = next((m["content"] for m in messages if m["role"] == "user"), "")
        return system_prompt(finder.examples(user_id, request), options.examples == "winning")

    if job.log is not None:
        job.log({"kshot/k": float(options.k)})
    example_user = job.population.held_out_users[0].user_id
    example = system_prompt_for(example_user, [{"role": "user", "content": ""}])
    return TrainedPolicy(job.model, system_prompt_for=system_prompt_for, save_model=False,
                         extras={"kshot.json": {**options.model_dump(), "example_user": example_user,
                                                "example_system_prompt": example}})


METHOD = MethodSpec(
    name="kshot",
    description="no training: k past replies the user (or similar users) chose go into the system prompt",
    train=train, check_trainer=check_settings, settings=Settings, multi_turn=True, uses_prompts=False,
)
