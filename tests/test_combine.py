"""Weighted reward sums: one implementation, TRL's semantics (None adds nothing), literal values."""

import math

import numpy as np

from rewards.combine import reward_matrix, weighted_sum


def _length(prompts, completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def _only_long(completions, **kwargs):  # TRL passes every argument by keyword: no `prompts` needed
    return [1.0 if len(c[0]["content"]) > 3 else None for c in completions]


def _user_bonus(prompts, completions, user_id, **kwargs):
    return [2.0 if uid == "u1" else 0.0 for uid in user_id]


COMPLETIONS = [[{"role": "assistant", "content": text}] for text in ("hi", "hello", "hey there")]
PROMPTS = [[{"role": "user", "content": "greet me"}]] * 3


def test_matrix_has_one_column_per_function_and_nan_for_none():
    scores = reward_matrix([_length, _only_long, _user_bonus], PROMPTS, COMPLETIONS, user_id=["u0", "u1", "u2"])
    assert scores.shape == (3, 3)
    assert scores[:, 0].tolist() == [2.0, 5.0, 9.0]
    assert math.isnan(scores[0, 1]) and scores[1:, 1].tolist() == [1.0, 1.0]
    assert scores[:, 2].tolist() == [0.0, 2.0, 0.0]


def test_weighted_sum_skips_none_like_trls_nansum():
    scores = reward_matrix([_length, _only_long], PROMPTS, COMPLETIONS)
    assert weighted_sum(scores, [0.5, 10.0]).tolist() == [1.0, 12.5, 14.5]


def test_weights_may_differ_per_reply():
    scores = np.array([[1.0, 2.0], [3.0, np.nan]])
    assert weighted_sum(scores, [[1.0, 0.0], [0.25, 0.75]]).tolist() == [1.0, 0.75]


def test_no_functions_gives_zero_per_reply():
    assert weighted_sum(reward_matrix([], PROMPTS, COMPLETIONS), []).tolist() == [0.0, 0.0, 0.0]
