"""Who picks the better of two sampled replies, for the methods that learn from chosen replies (dpo, sft)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from pydantic import Field

from agents.registry import MethodSettings
from rewards.combine import reward_matrix, weighted_sum

Prefer = Callable[[dict[str, Any], str, str], "bool | None"]
"""``prefer(row, a, b)``: True where reply ``a`` is chosen, False where ``b`` is, None for no preference."""


class SampledChoiceSettings(MethodSettings):
    """The ``method_settings`` of a method that samples replies and learns from the chosen one (dpo, sft)."""

    max_new_tokens: int = Field(32, ge=1, description="length limit of the sampled replies")
    temperature: float = Field(0.9, gt=0.0, allow_inf_nan=False, description="sampling temperature of the replies")
    judge: Literal["users", "rewards"] = Field(
        "users", description="who picks the chosen reply: the prompt's own user's pairwise choices, or the "
        "configured rewards (the higher weighted sum; ties are skipped), as in RLAIF")


def pairwise_judge(
    judge: Literal["users", "rewards"],
    *,
    population: Any = None,
    noise: float = 0.1,
    seed: int = 0,
    reward_functions: Sequence[Any] = (),
    reward_weights: Sequence[float] = (),
) -> Prefer:
    """A judge of two replies to a prompt row (``prompt``, ``user_id``, ``task_id``, ...).

    ``users``: the row's own simulated user chooses (Bradley-Terry on their noisy utility: the pairwise
    feedback channel, noise included), drawing on one random stream seeded by ``seed``. ``rewards``: the
    configured rewards choose, the reply with the higher weighted sum (a tie is no preference), as in RLAIF.
    """
    if judge == "rewards":

        def prefer_by_rewards(row: dict[str, Any], a: str, b: str) -> bool | None:
            columns = {key: [row[key]] * 2 for key in row if key != "prompt"}
            completions = [[{"role": "assistant", "content": a}], [{"role": "assistant", "content": b}]]
            score_a, score_b = weighted_sum(
                reward_matrix(reward_functions, [row["prompt"]] * 2, completions, **columns), reward_weights
            )
            return None if score_a == score_b else bool(score_a > score_b)

        return prefer_by_rewards

    rng = np.random.default_rng(seed)
    users: dict[str, Any] = {}

    def prefer_by_user(row: dict[str, Any], a: str, b: str) -> bool:
        user = users.get(row["user_id"])
        if user is None:
            user = users[row["user_id"]] = population.simulated_user(row["user_id"], noise=noise)
        return bool(user.choose([a], [b], [population.task(row["task_id"])], rng)[0])

    return prefer_by_user
