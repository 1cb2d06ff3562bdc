"""LinUCB: a classic contextual-bandit baseline for the discrete response-style environments.

The discrete variants (``attune/*Discrete-v1``) are contextual bandits: each episode shows the user's
visible cues ``x`` and asks for one of eight response styles. Disjoint LinUCB (Li et al. 2010, "A
contextual-bandit approach to personalized news article recommendation") fits one ridge regression per
arm ``a`` from the contexts it was played in to the rewards it got::

    A_a = ridge * I + sum x x^T        b_a = sum reward * x        theta_a = A_a^-1 b_a

and plays the arm with the highest upper confidence bound on its expected reward::

    ucb_a(x) = theta_a . x + alpha * sqrt(x^T A_a^-1 x)

The bonus shrinks as an arm is tried in similar contexts, so ``alpha`` trades exploring untried
styles against exploiting the one that looks best. Regret is exact here because the environment
knows every style's expected utility (``info["regret"]``, ``info["oracle_action"]``).

>>> result = run_linucb("attune/WritingAssistantDiscrete-v1", episodes=300, alpha=1.0, seed=0)
>>> result["linucb"]["final_mean_regret"] < result["random"]["final_mean_regret"]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from agents import BaselineJob, MethodSettings, MethodSpec
from agents.discrete_eval import make_discrete_env, play, score_played

__all__ = [
    "METHOD",
    "LinUCB",
    "LinUCBSettings",
    "run_linucb",
]


class LinUCBSettings(MethodSettings):
    """``method_settings:`` of ``method: linucb``."""

    episodes: int = Field(1000, ge=1, description="training episodes (one reply each)")
    alpha: float = Field(1.0, ge=0.0, allow_inf_nan=False, description="width of the confidence bonus; 0 = greedy")
    eval_episodes: int = Field(200, ge=0, description="greedy held-out episodes (0 skips the held-out evaluation)")


class LinUCB:
    """Disjoint LinUCB: one ridge-regression reward model per arm, arms chosen by upper confidence bound.

    Args:
        n_arms: number of actions (8 response styles in the discrete environments).
        n_features: length of the context vector (the environment's observation).
        alpha: width of the confidence bonus; 0 is greedy, larger explores more.
        ridge: the ridge penalty, i.e. ``A_a`` starts as ``ridge * I``; larger trusts few rewards less.
        fit_intercept: append a constant 1 to every context, so an arm can be good for everyone
            (the cues are in [0, 1] and a purely linear model through the origin cannot say that).
        seed: seeds the random tie-breaking (all arms tie before any reward is seen).
    """

    def __init__(
        self,
        n_arms: int,
        n_features: int,
        alpha: float = 1.0,
        ridge: float = 1.0,
        fit_intercept: bool = True,
        seed: int | None = None,
    ) -> None:
        if n_arms < 1:
            raise ValueError(f"n_arms must be at least 1, got {n_arms}")
        if n_features < 1:
            raise ValueError(f"n_features must be at least 1, got {n_features}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0 (0 is greedy), got {alpha}")
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0 so that A_a is invertible, got {ridge}")
        self.n_arms = n_arms
        self.n_features = n_features
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.fit_intercept = fit_intercept
        d = n_features + int(fit_intercept)
        # A_a^-1 is kept directly and updated by Sherman-Morrison: no matrix inverse per step.
        self.A_inv = np.stack([np.eye(d) / self.ridge for _ in range(n_arms)])
        self.b = np.zeros((n_arms, d))
        self.counts = np.zeros(n_arms, dtype=int)
        self._rng = np.random.default_rng(seed)

    def _context(self, context: Sequence[float] | np.ndarray) -> np.ndarray:
        x = np.asarray(context, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.n_features:
            raise ValueError(f"context has {x.shape[0]} features, this LinUCB was built for n_features={self.n_features}")
        return np.append(x, 1.0) if self.fit_intercept else x

    @property
    def theta(self) -> np.ndarray:
        """Per-arm ridge-regression weights, shape ``(n_arms, d)``."""
        return np.einsum("aij,aj->ai", self.A_inv, self.b)

    def expected_rewards(self, context: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted reward of every arm in this context (no exploration bonus)."""
        return self.theta @ self._context(context)

    def upper_confidence_bounds(self, context: Sequence[float] | np.ndarray) -> np.ndarray:
        """``theta_a . x + alpha * sqrt(x^T A_a^-1 x)`` for every arm ``a``."""
        x = self._context(context)
        variance = np.einsum("i,aij,j->a", x, self.A_inv, x)
        return self.theta @ x + self.alpha * np.sqrt(np.maximum(variance, 0.0))

    def _argmax(self, scores: np.ndarray) -> int:
        # Ties are broken at random: always taking the first would favour arm 0 until it is tried.
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        return int(self._rng.choice(best))

    def select(self, context: Sequence[float] | np.ndarray) -> int:
        """The arm to play while learning: highest upper confidence bound."""
        return self._argmax(self.upper_confidence_bounds(context))

    def greedy(self, context: Sequence[float] | np.ndarray) -> int:
        """The arm to play once learning is over: highest fitted reward."""
        return self._argmax(self.expected_rewards(context))

    def update(self, context: Sequence[float] | np.ndarray, arm: int, reward: float) -> None:
        """Add one observed ``reward`` for ``arm`` in ``context`` to that arm's regression."""
        if not 0 <= int(arm) < self.n_arms:
            raise ValueError(f"arm must be in [0, {self.n_arms}), got {arm!r}")
        arm = int(arm)
        x = self._context(context)
        A_inv_x = self.A_inv[arm] @ x
        self.A_inv[arm] -= np.outer(A_inv_x, A_inv_x) / (1.0 + x @ A_inv_x)
        self.b[arm] += float(reward) * x
        self.counts[arm] += 1


def run_linucb(
    env_id_or_config: str | dict[str, Any] = "attune/WritingAssistantDiscrete-v1",
    episodes: int = 500,
    alpha: float = 1.0,
    seed: int = 0,
    *,
    ridge: float = 1.0,
    eval_episodes: int = 200,
    final_fraction: float = 0.2,
) -> dict[str, Any]:
    """Learn LinUCB online on the training users, then act greedily on held-out users; compare to random.

    Args:
        env_id_or_config: a discrete env id (``attune/TutorDiscrete-v1``), a scenario name (``tutor``)
            or a :class:`~envs.discrete.DiscreteStyleEnv` config dict without ``split``.
        episodes: one-step episodes to learn from, on the ``train`` split.
        alpha: LinUCB's exploration width.
        seed: seeds the episodes (users, tasks, feedback noise), LinUCB's tie-breaking and the random policy.
        ridge: LinUCB's ridge penalty.
        eval_episodes: greedy episodes on the ``held_out`` split (0 to skip).
        final_fraction: the last part of training that ``final_mean_regret`` averages over (0.2: last 20 %).

    Returns:
        ``{"linucb": ..., "random": ..., "held_out": {"linucb": ..., "random": ...}, "model": LinUCB, ...}``
        where each policy's entry has per-episode ``rewards`` and ``regrets``, ``mean_reward``,
        ``mean_regret``, ``oracle_action_rate`` and, for training, ``final_mean_regret`` and
        ``final_mean_reward``. The random policy plays the same episodes (same seeds).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if eval_episodes < 0:
        raise ValueError(f"eval_episodes must be >= 0 (0 skips the held-out evaluation), got {eval_episodes}")
    if not 0 < final_fraction <= 1:
        raise ValueError(f"final_fraction must be in (0, 1], e.g. 0.2 for the last 20 %, got {final_fraction}")
    train_seeds, held_out_seeds, random_seed, tie_seed = np.random.SeedSequence(seed).spawn(4)
    train_episode_seeds = train_seeds.generate_state(episodes).tolist()
    held_out_episode_seeds = held_out_seeds.generate_state(max(eval_episodes, 1)).tolist()[:eval_episodes]

    env = make_discrete_env(env_id_or_config, split="train")
    model = LinUCB(
        n_arms=int(env.action_space.n),
        n_features=int(env.observation_space.shape[0]),
        alpha=alpha,
        ridge=ridge,
        seed=int(tie_seed.generate_state(1)[0]),
    )
    linucb = play(env, model.select, train_episode_seeds, learn=model.update)

    random_rng = np.random.default_rng(random_seed)
    n_actions = int(env.action_space.n)
    random_train = play(env, lambda _: int(random_rng.integers(n_actions)), train_episode_seeds)

    result: dict[str, Any] = {
        "env": env_id_or_config,
        "scenario": env.scenario,
        "episodes": episodes,
        "alpha": alpha,
        "ridge": ridge,
        "seed": seed,
        "final_fraction": final_fraction,
        "linucb": score_played(linucb, final_fraction),
        "random": score_played(random_train, final_fraction),
        "model": model,
    }
    if eval_episodes:
        held_out_env = make_discrete_env(env_id_or_config, split="held_out")
        result["held_out"] = {
            "linucb": score_played(play(held_out_env, model.greedy, held_out_episode_seeds)),
            "random": score_played(
                play(held_out_env, lambda _: int(random_rng.integers(n_actions)), held_out_episode_seeds)
            ),
        }
    return result


def train(job: BaselineJob) -> dict[str, Any] | None:
    """``method: linucb``: learn on the job's training users, logging reward and regret in 20 chunks."""
    options = LinUCBSettings.of(job.method_settings)
    result = run_linucb(dict(job.env_config), episodes=options.episodes, alpha=options.alpha, seed=job.seed,
                        eval_episodes=options.eval_episodes)
    trained, random = result["linucb"], result["random"]
    chunk = max(1, len(trained["rewards"]) // 20)
    for end in range(chunk, len(trained["rewards"]) + 1, chunk):
        window = slice(end - chunk, end)
        job.log({"reward": sum(trained["rewards"][window]) / chunk, "regret": sum(trained["regrets"][window]) / chunk,
                 "random_regret": sum(random["regrets"][window]) / chunk}, end)
    held_out = result.get("held_out")
    return {"policy": held_out["linucb"], "random": held_out["random"]} if held_out else None


METHOD = MethodSpec(
    name="linucb", kind="baseline", description="LinUCB contextual bandit over the eight response styles",
    train=train, settings=LinUCBSettings,
)
