"""Combining reward functions: one place that turns several rewards into one number per reply.

TRL's GRPO/RLOO sum ``weight * reward`` over the reward functions with ``nansum``: a function that
returns ``None`` for a reply (it does not apply to it) adds nothing. Everything in attune that combines
rewards outside TRL (PPO's reward module, mixtures, ``compare-rewards``' proxies) uses these two
functions, so a reply scores the same wherever it is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["reward_matrix", "weighted_sum"]


def reward_matrix(reward_functions: Sequence[Any], prompts: Sequence[Any], completions: Sequence[Any],
                  **columns: Any) -> np.ndarray:
    """Every function's reward for every reply, ``(replies, functions)``; ``None`` becomes NaN.

    Functions are called by keyword, as TRL calls them, so ``def reward(completions, **kwargs)`` works too.
    """
    scores = []
    for function in reward_functions:
        values = function(prompts=prompts, completions=completions, **columns)  # by keyword, as TRL calls them
        scores.append([np.nan if v is None else float(v) for v in values])
    return np.array(scores, dtype=np.float64).reshape(len(scores), len(completions)).T


def weighted_sum(scores: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """``sum_i weight_i * reward_i`` per reply, as TRL's ``nansum``: a NaN (``None``) reward adds nothing.

    ``weights`` is one weight per function, or one row of weights per reply (users' own mixtures).
    """
    weights = np.asarray(weights, dtype=np.float64)
    return np.nansum(scores * weights, axis=1)
