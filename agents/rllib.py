"""RLlib PPO and DQN on the discrete response-style environments: classic deep-RL baselines.

RLlib is used because it is the standard, scalable implementation of classic RL algorithms (the same
code runs on a laptop or a cluster), so these baselines are not ours to get wrong. It trains small MLP
policies over the visible user cues, next to :mod:`agents.bandit` (LinUCB). The LLM methods (GRPO, PPO,
DPO, ... on the conversation environments) live in the other ``agents/`` files.

>>> result = train_rllib("ppo", "writing", iterations=5, seed=0)   # starts and stops a local Ray
>>> result["held_out"]["policy"]["mean_reward"] > result["held_out"]["random"]["mean_reward"]
True

Why one module over 300 lines: the two RLlib baselines share their env wrapper, Ray start-up, training loop
and held-out harness; each method's own part is a few lines.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from pydantic import Field, PositiveInt

from agents import BaselineJob, MethodSettings, MethodSpec
from agents.discrete_eval import make_discrete_env, play, score_played

__all__ = ["ALGORITHMS", "DQN_METHOD", "ENV_NAME", "PPO_METHOD", "RLlibSettings", "train_rllib"]

ALGORITHMS: tuple[str, ...] = ("ppo", "dqn")
ENV_NAME = "attune-discrete"
"""The name the discrete environment is registered under with ``ray.tune.registry.register_env``."""


class RLlibSettings(MethodSettings):
    """``method_settings:`` of ``method: rllib_ppo`` and ``rllib_dqn``."""

    iterations: int = Field(8, ge=1, description="RLlib training iterations")
    eval_episodes: int = Field(200, ge=0, description="greedy held-out episodes (0 skips the held-out evaluation)")
    lr: float | None = Field(None, gt=0.0, allow_inf_nan=False, description="learning rate (default: RLlib's)")
    train_batch_size: int | None = Field(None, ge=1, description="environment steps per iteration (default: RLlib's)")
    hidden: list[PositiveInt] = Field([32], min_length=1, description="hidden layer sizes of the MLP policy")


def _make_env(config: Any) -> Any:
    # Module level, not a lambda: remote env runners unpickle it by reference.
    from envs.discrete import DiscreteStyleEnv

    return DiscreteStyleEnv(config=dict(config))


def _record_episode(*, episode: Any, metrics_logger: Any, **_: Any) -> None:
    """RLlib callback: log each finished episode's reward, regret and oracle match.

    ``reduce="mean"`` without a window is cleared at every iteration's reduce, so the numbers in a
    result are that iteration's means (RLlib's own ``episode_return_mean`` may be smoothed).
    """
    info = episode.get_infos(-1)
    metrics_logger.log_value("reward", float(episode.get_return()), reduce="mean")
    metrics_logger.log_value("regret", float(info["regret"]), reduce="mean")
    metrics_logger.log_value("oracle_action_rate", float(info["oracle_action"] == episode.get_actions(-1)), reduce="mean")


def _resolve_env_config(scenario: str, env_config: dict[str, Any] | None) -> dict[str, Any]:
    from envs.registry import discrete_scenario

    if "/" in scenario:
        try:
            scenario = discrete_scenario(scenario)
        except ValueError as exc:
            raise ValueError(f"scenario {exc}; or give a scenario name (writing, support, tutor, health)") from None
    config = dict(env_config or {})
    if "split" in config:
        raise ValueError(
            "env_config names 'split', but train_rllib trains on the train split and evaluates on held_out; "
            "remove 'split' from env_config"
        )
    if "scenario" in config and config["scenario"] != scenario:
        raise ValueError(
            f"env_config['scenario']={config['scenario']!r} contradicts scenario={scenario!r}; pass the scenario once"
        )
    return {**config, "scenario": scenario}


def _build_config(
    algorithm: str,
    env_config: dict[str, Any],
    seed: int,
    hidden: Sequence[int],
    lr: float | None,
    train_batch_size: int | None,
    num_env_runners: int,
) -> Any:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if algorithm == "ppo":
        from ray.rllib.algorithms.ppo import PPOConfig

        batch = train_batch_size or 256
        # One-step episodes: no bootstrapping, so gamma/lambda do not matter; a few epochs over small
        # minibatches learn a bandit policy in a handful of iterations.
        config = PPOConfig().training(
            train_batch_size_per_learner=batch,
            minibatch_size=min(64, batch),
            num_epochs=4,
            lr=lr if lr is not None else 3e-3,
            entropy_coeff=0.01,
        )
        model_config = DefaultModelConfig(fcnet_hiddens=list(hidden), vf_share_layers=False)
    elif algorithm == "dqn":
        from ray.rllib.algorithms.dqn import DQNConfig

        batch = train_batch_size or 32
        config = DQNConfig().training(
            train_batch_size_per_learner=batch,
            lr=lr if lr is not None else 1e-3,
            n_step=1,
            num_steps_sampled_before_learning_starts=64,
            target_network_update_freq=50,
            replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 5000},
            # Exploration decays over ~1000 episodes, i.e. about five iterations of 200 episodes.
            epsilon=[(0, 1.0), (1000, 0.05)],
            dueling=False,
            double_q=True,
        ).reporting(
            # DQN otherwise loops until 1000 env steps per iteration; 200 keeps iterations short on 2 cores.
            min_sample_timesteps_per_iteration=200,
            min_time_s_per_iteration=None,
        )
        model_config = DefaultModelConfig(fcnet_hiddens=list(hidden))
    else:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")

    env_runner_settings: dict[str, Any] = {"num_env_runners": num_env_runners, "num_envs_per_env_runner": 1}
    if algorithm == "dqn":
        env_runner_settings["rollout_fragment_length"] = 8
    return (
        config.environment(ENV_NAME, env_config={**env_config, "split": "train"})
        .env_runners(**env_runner_settings)
        .learners(num_learners=0)
        .rl_module(model_config=model_config)
        .callbacks(on_episode_end=_record_episode)
        .debugging(seed=seed)
    )


@contextlib.contextmanager
def _local_ray(ray_tmpdir: str | None) -> Iterator[bool]:
    """Use the running Ray if there is one; otherwise start a 2-CPU local one and shut it down after."""
    import ray

    if ray.is_initialized():
        yield False
        return
    init_kwargs: dict[str, Any] = {"num_cpus": 2, "include_dashboard": False}
    if ray_tmpdir is not None:
        init_kwargs["_temp_dir"] = ray_tmpdir
    ray.init(**init_kwargs)
    try:
        yield True
    finally:
        # ray.shutdown(), never `ray stop`: the latter kills every Ray process on the machine.
        ray.shutdown()


@contextlib.contextmanager
def _results_dir(results_dir: str | None) -> Iterator[str]:
    """Point the Algorithm's log directory away from ``~/ray_results``.

    An Algorithm built outside Tune makes a log directory under ``ray.train.constants.DEFAULT_STORAGE_PATH``
    (``~/ray_results``, fixed at import). It stays empty here, so by default it goes to a temporary
    folder that is removed afterwards.
    """
    import ray.tune.trainable.trainable as trainable_module

    folder = results_dir or tempfile.mkdtemp(prefix="attune-rllib-")
    os.makedirs(folder, exist_ok=True)
    previous = trainable_module.DEFAULT_STORAGE_PATH
    trainable_module.DEFAULT_STORAGE_PATH = folder
    try:
        yield folder
    finally:
        trainable_module.DEFAULT_STORAGE_PATH = previous
        if results_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _greedy_policy(module: Any) -> Any:
    """``choose(observation) -> action`` from an RLModule's ``forward_inference`` (no exploration)."""
    import torch

    def choose(observation: np.ndarray) -> int:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(observation[None], dtype=torch.float32)})
        if "actions" in out:  # DQN: argmax of the Q-values
            return int(out["actions"][0])
        return int(torch.argmax(out["action_dist_inputs"][0]))  # PPO: most likely action

    return choose


def train_rllib(
    algorithm: str,
    scenario: str = "writing",
    iterations: int = 10,
    seed: int = 0,
    env_config: dict[str, Any] | None = None,
    *,
    eval_episodes: int = 200,
    hidden: Sequence[int] = (32,),
    lr: float | None = None,
    train_batch_size: int | None = None,
    num_env_runners: int = 0,
    ray_tmpdir: str | None = None,
    results_dir: str | None = None,
) -> dict[str, Any]:
    """Train RLlib PPO or DQN on a discrete variant's train users; evaluate greedily on held-out users.

    Args:
        algorithm: ``"ppo"`` or ``"dqn"``.
        scenario: a scenario name (``writing``, ``support``, ``tutor``, ``health``) or a discrete env id.
        iterations: ``Algorithm.train()`` calls. PPO samples ``train_batch_size`` (256) episodes per
            iteration; DQN at least 200.
        seed: RLlib's seed, and the seed of the held-out episodes.
        env_config: extra :class:`~envs.discrete.DiscreteStyleEnv` settings (``n_users``,
            ``population_seed``, ``noise``, ``feedback``); not ``split``.
        eval_episodes: held-out episodes played by the greedy policy and, on the same seeds, by a
            uniformly random policy (0 to skip).
        hidden: MLP layer sizes.
        lr: learning rate (default 3e-3 for PPO, 1e-3 for DQN).
        train_batch_size: per-learner train batch (default 256 for PPO, 32 for DQN).
        num_env_runners: 0 samples in this process (fastest on 2 cores); 1 uses one remote runner.
        ray_tmpdir: Ray's session folder if this call starts Ray (default: ``RAY_TMPDIR`` or /tmp/ray);
            keep it short, Ray's socket paths must fit in 107 bytes.
        results_dir: where the Algorithm's (empty) log directory goes; default a temporary folder.

    Returns:
        ``per_iteration``: a list of ``{"iteration", "mean_reward", "mean_regret", "oracle_action_rate",
        "episodes", "env_steps", "time_s"}`` over the training episodes of each iteration (exploring);
        ``held_out``: ``{"policy": ..., "random": ...}`` with per-episode ``rewards``, ``regrets`` and
        their means; and the settings used.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if eval_episodes < 0:
        raise ValueError(f"eval_episodes must be >= 0 (0 skips the held-out evaluation), got {eval_episodes}")
    if num_env_runners not in (0, 1):
        raise ValueError(
            f"num_env_runners must be 0 or 1 on a 2-core machine, got {num_env_runners}; "
            "for more, build the config yourself"
        )
    env_config = _resolve_env_config(scenario, env_config)
    # Before Ray (and torch) are imported, so the driver and every worker it starts use one thread
    # and a throwaway local cluster needs no auth token; a value the user set wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray.tune.registry import register_env

    # Workers do not see Gymnasium's registry; they build envs from this name and a config dict.
    register_env(ENV_NAME, _make_env)
    config = _build_config(algorithm, env_config, seed, hidden, lr, train_batch_size, num_env_runners)

    started = time.perf_counter()
    per_iteration: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "algorithm": algorithm,
        "scenario": env_config["scenario"],
        "env_config": env_config,
        "iterations": iterations,
        "seed": seed,
    }
    with _local_ray(ray_tmpdir), _results_dir(results_dir):
        algo = config.build_algo()
        try:
            for _ in range(iterations):
                train_result = algo.train()
                runners = train_result.get("env_runners", {})
                per_iteration.append(
                    {
                        "iteration": int(train_result["training_iteration"]),
                        "mean_reward": float(runners.get("reward", np.nan)),
                        "mean_regret": float(runners.get("regret", np.nan)),
                        "oracle_action_rate": float(runners.get("oracle_action_rate", np.nan)),
                        "episodes": int(runners.get("num_episodes", 0)),
                        "env_steps": int(train_result.get("num_env_steps_sampled_lifetime", 0)),
                        "time_s": float(train_result.get("time_this_iter_s", np.nan)),
                    }
                )
            if eval_episodes:
                # Separate stream from training's, shared by the trained and the random policy.
                episode_seeds = np.random.SeedSequence([seed, 1]).generate_state(eval_episodes).tolist()
                held_out_env = make_discrete_env(env_config, split="held_out")
                module = algo.get_module()
                module.eval()
                rng = np.random.default_rng([seed, 2])
                n_actions = int(held_out_env.action_space.n)
                result["held_out"] = {
                    "policy": score_played(play(held_out_env, _greedy_policy(module), episode_seeds)),
                    "random": score_played(play(held_out_env, lambda _: int(rng.integers(n_actions)), episode_seeds)),
                }
        finally:
            algo.stop()
    result["per_iteration"] = per_iteration
    result["time_s"] = time.perf_counter() - started
    return result


def train(job: BaselineJob, algorithm: str) -> dict[str, Any] | None:
    """``method: rllib_<algorithm>``: train in the job's local Ray, then log each iteration's means."""
    options = RLlibSettings.of(job.method_settings)
    env_config = dict(job.env_config)
    with job.local_ray():
        result = train_rllib(algorithm, scenario=env_config.pop("scenario"), iterations=options.iterations,
                             seed=job.seed, env_config=env_config, eval_episodes=options.eval_episodes,
                             hidden=tuple(options.hidden), lr=options.lr, train_batch_size=options.train_batch_size,
                             results_dir=str(job.output_dir / "rllib"))
    for row in result["per_iteration"]:
        job.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, int(row["iteration"]))
    return result.get("held_out")


PPO_METHOD = MethodSpec(
    name="rllib_ppo", kind="baseline", description="RLlib PPO, an MLP policy over the users' visible cues",
    train=functools.partial(train, algorithm="ppo"), settings=RLlibSettings,
)
DQN_METHOD = MethodSpec(
    name="rllib_dqn", kind="baseline", description="RLlib DQN, an MLP Q-network over the users' visible cues",
    train=functools.partial(train, algorithm="dqn"), settings=RLlibSettings,
)
