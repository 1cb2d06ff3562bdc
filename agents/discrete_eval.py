"""The harness every discrete-action baseline is played and scored with (LinUCB, RLlib PPO/DQN).

One-step episodes on a :class:`~envs.discrete.DiscreteStyleEnv`: the same seeds show every policy the
same users, tasks and feedback noise, and each episode's regret is measured against the oracle style.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["make_discrete_env", "play", "score_played"]


def make_discrete_env(env_id_or_config: str | dict[str, Any], split: str = "train") -> Any:
    """A :class:`~envs.discrete.DiscreteStyleEnv` from an env id, a scenario name or a config dict.

    ``split`` is set here (``train`` to learn, ``held_out`` to evaluate), so the config must not name one.
    """
    from envs.discrete import DiscreteStyleEnv
    from envs.registry import discrete_scenario

    if isinstance(env_id_or_config, dict):
        config = dict(env_id_or_config)
    elif isinstance(env_id_or_config, str) and "/" in env_id_or_config:
        config = {"scenario": discrete_scenario(env_id_or_config)}
    elif isinstance(env_id_or_config, str):
        config = {"scenario": env_id_or_config}
    else:
        raise TypeError(
            f"env_id_or_config must be an env id, a scenario name or a config dict, got {type(env_id_or_config).__name__}"
        )
    if "split" in config:
        raise ValueError(
            f"config names split={config['split']!r}, but the baselines choose the split themselves "
            "(train to learn, held_out to evaluate); remove 'split' from the config"
        )
    return DiscreteStyleEnv(config={**config, "split": split})


def play(
    env: Any,
    choose: Callable[[np.ndarray], int],
    seeds: Sequence[int],
    learn: Callable[[np.ndarray, int, float], None] | None = None,
) -> dict[str, list[float]]:
    """Play one-step episodes, one per seed: ``choose(observation) -> action``, then ``learn`` if given.

    Resetting with the same seeds shows every policy the same users, tasks and feedback noise, so
    differences between policies are not luck of the draw.
    """
    rewards: list[float] = []
    regrets: list[float] = []
    oracle: list[float] = []
    for seed in seeds:
        observation, _ = env.reset(seed=int(seed))
        action = int(choose(observation))
        _, reward, _, _, info = env.step(action)
        if learn is not None:
            learn(observation, action, reward)
        rewards.append(float(reward))
        regrets.append(float(info["regret"]))
        oracle.append(float(action == info["oracle_action"]))
    return {"rewards": rewards, "regrets": regrets, "oracle_actions": oracle}


def score_played(played: dict[str, list[float]], final_fraction: float | None = None) -> dict[str, Any]:
    """Per-episode ``rewards`` and ``regrets`` with their means (and over the final part, if asked)."""
    rewards, regrets = np.asarray(played["rewards"]), np.asarray(played["regrets"])
    summary: dict[str, Any] = {
        "rewards": played["rewards"],
        "regrets": played["regrets"],
        "mean_reward": float(rewards.mean()),
        "mean_regret": float(regrets.mean()),
        "oracle_action_rate": float(np.mean(played["oracle_actions"])),
    }
    if final_fraction is not None:
        tail = max(1, int(round(len(regrets) * final_fraction)))
        summary["final_mean_reward"] = float(rewards[-tail:].mean())
        summary["final_mean_regret"] = float(regrets[-tail:].mean())
    return summary
