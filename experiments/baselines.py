"""The harness of the classic baselines (``kind="baseline"`` methods in :data:`agents.METHODS`), run like any experiment.

``method: linucb | rllib_ppo | rllib_dqn`` (or a baseline of your own) with ``env.id: attune/<Name>Discrete-v1``.
The run folder gets the resolved config, ``metrics.jsonl`` (what the method logs as it trains, e.g. reward and
regret against the oracle best style), ``eval.json`` (held-out users: the learned policy acting greedily vs. a
uniformly random policy on the same episodes) and a W&B run; so they also run through ``attune sweep`` and
``attune run`` variants. Each baseline's ``method_settings`` are listed by ``attune run --help``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
from experiments.config import ConfigError, ExperimentConfig


def env_config(config: ExperimentConfig) -> dict[str, Any]:
    """The :class:`~envs.discrete.DiscreteStyleEnv` config of a baseline run."""
    import envs

    if config.env.feedback not in ("rating", "utility"):
        raise ConfigError("env.feedback: the discrete variants answer with 'rating' or 'utility'")
    return {
        "scenario": envs.scenario_of(config.env.id),
        "n_users": config.users.n_users,
        "population_seed": config.users.seed,
        "noise": config.env.noise,
        "feedback": config.env.feedback,
    }


@contextlib.contextmanager
def _offline_ray() -> Iterator[None]:
    """The local Ray a baseline trains in, started the offline way (loopback, no usage report, no cloud probes)
    unless one is running already; shut down after if this started it."""
    import os

    import ray

    from experiments import offline

    if ray.is_initialized():
        yield
        return
    offline.start_local_ray(os.environ.get("RAY_TMPDIR") or f"/tmp/ray-{os.getuid()}", num_cpus=2,
                            log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()  # never `ray stop`: it would end every Ray process on the machine


def prepare(config: ExperimentConfig) -> Any:
    """A baseline's validated ``method_settings``; the config's parts a baseline would ignore are refused.

    Raises :class:`ConfigError`, before anything is written.
    """
    model = agents.get_method(config.method).settings
    try:
        options = model.of(config.method_settings)
    except agents.TrainerSettingsError as exc:
        raise ConfigError(str(exc).replace("this method", f"method {config.method!r}")) from None
    ignored = {
        "resume": (config.resume, "baselines train in one go; remove resume"),
        "checkpoint_every": (config.checkpoint_every, "baselines save no checkpoints; remove checkpoint_every"),
        "trainer": (config.trainer, "TRL trainer settings do not apply; a baseline's settings go under "
                                    "method_settings (" + ", ".join(model.model_fields) + ")"),
        "rewards": ([s.model_dump() for s in config.rewards] != [{"name": "user_feedback", "weight": 1.0, "params": {}}],
                    "baselines learn from the environment's own feedback (env.feedback); remove rewards"),
        "policy.lora": (config.policy.lora is not None, "baselines have no LLM policy; remove policy.lora"),
        "env.max_turns": (config.env.max_turns != 1, "the discrete variants are one reply per episode; remove env.max_turns"),
    }
    for field, (is_set, fix) in ignored.items():
        if is_set:
            raise ConfigError(f"{field}: method {config.method} would ignore it: {fix}")
    return options


def run_baseline(config: ExperimentConfig, console: Any = None, **_: Any) -> Any:
    from rich.console import Console

    from experiments.metrics import baseline_table
    from experiments.report import write_report
    from experiments.tracking import RunResult, RunTracker, create_run_dir, run_name

    console = console or Console()
    options = prepare(config)
    settings = env_config(config)
    run_dir = create_run_dir(Path(config.tracking.runs_dir), run_name(config))
    tracker = RunTracker(config, run_dir)
    console.print(f"[bold]attune[/] {config.method} on {config.env.id} -> [cyan]{run_dir}[/]")
    started = time.perf_counter()
    exit_code = 1
    try:
        job = agents.BaselineJob(env_config=settings, seed=config.seed, method_settings=options, output_dir=run_dir,
                                 log=lambda metrics, step: tracker.log(metrics, step=step), local_ray=_offline_ray)
        held_out = agents.get_method(config.method).train(job) or {}
        policy, random = held_out.get("policy"), held_out.get("random")
        report: dict[str, Any] = {"run_dir": str(run_dir), "method": config.method, "env": config.env.id,
                                  "train_seconds": time.perf_counter() - started}
        if policy is not None and random is not None:
            keep = ("mean_reward", "mean_regret", "oracle_action_rate", "rewards")
            report |= {
                "held_out_reward": policy["mean_reward"], "held_out_regret": policy["mean_regret"],
                "random_reward": random["mean_reward"], "random_regret": random["mean_regret"],
                "held_out": {name: {k: summary[k] for k in keep if k in summary}
                             for name, summary in (("policy", policy), ("random", random))},
            }
            tracker.log({"held_out_reward": policy["mean_reward"], "held_out_regret": policy["mean_regret"]},
                        step=tracker.last_step, phase="eval")
        tracker.write_json("eval.json", report)
        tracker.summary({k: v for k, v in report.items() if isinstance(v, (int, float))})
        write_report(run_dir, report, (run_dir / "config.yaml").read_text())
        exit_code = 0
    finally:
        tracker.finish(exit_code)
    if "held_out_reward" in report:
        console.print(baseline_table(report).to_rich())
    console.print(f"run folder: [cyan]{run_dir}[/]")
    return RunResult(run_dir, report)
