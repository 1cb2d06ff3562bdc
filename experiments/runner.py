"""One experiment, start to finish: users -> policy -> rewards -> evaluation -> training -> evaluation.

Everything lands in ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl``, ``eval.json``, ``episodes.json``,
``checkpoints/final/`` (the trained model or LoRA adapter), ``report.md``, ``plots/*.png`` and ``wandb/``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, ExperimentConfig
from experiments.report import build_report
from experiments.tracking import (
    RunTracker,
    TermsRecorder,
    create_run_dir,
    progress_callback,
    replace_default_progress,
    run_name,
    tracking_callback,
)


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    eval: dict[str, Any]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # attune never downloads; fail fast instead of hanging
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for pattern in (".*TRL_EXPERIMENTAL_SILENCE.*", ".*rollout_func.*experimental.*", ".*use_cache=True.*"):
        warnings.filterwarnings("ignore", message=pattern)
    # transformers 5 renames gradient_checkpointing; TRL 1.12 still uses the old names internally.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")


def prepare(config: ExperimentConfig) -> dict[str, Any]:
    """Everything that can fail because of the config, checked before anything slow or written."""
    import agents
    from agents import TrainerSettingsError
    from agents.policy import check_model_available
    from rewards import RewardLookupError, build_reward

    method = agents.get_method(config.method)
    try:
        method.check_settings(config.trainer, Path(config.tracking.runs_dir) / "_check", config.seed)
    except TrainerSettingsError as exc:
        raise ConfigError(str(exc)) from None
    check_model_available(config.policy.model)
    try:
        population = _population(config)
    except ValueError as exc:
        raise ConfigError(f"users.groups: {exc}") from None
    terms = TermsRecorder()
    reward_functions = []
    for i, spec in enumerate(config.rewards):
        try:
            reward_functions.append(build_reward(spec.name, spec.params, population=None, report=terms))
        except RewardLookupError as exc:
            raise ConfigError(f"rewards.{i}: {exc}") from None
    return {"method": method, "terms": terms, "population": population}


def run(config: ExperimentConfig, console: Any = None) -> RunResult:
    """Run one experiment; returns the run folder and the evaluation summary."""
    import torch
    from rich.console import Console

    import agents
    from agents.policy import load_policy
    from agents.rollouts import make_env
    from experiments import evaluate
    from rewards import build_reward

    console = console or Console()
    _quiet_libraries()
    torch.set_num_threads(config.threads)
    checked = prepare(config)
    method, terms = checked["method"], checked["terms"]

    population = checked["population"]
    env_kwargs = {"population": population, **config.env.env_kwargs()}

    started = time.perf_counter()
    console.print(f"[bold]attune[/] loading policy [cyan]{config.policy.model}[/]")
    lora = config.policy.lora.model_dump() if config.policy.lora else None
    model, tokenizer, peft_config = load_policy(config.policy.model, lora=lora)

    run_dir = create_run_dir(Path(config.tracking.runs_dir), run_name(config))
    tracker = RunTracker(config, run_dir)
    console.print(f"run folder: [cyan]{run_dir}[/]")
    exit_code = 1
    try:
        eval_env = make_env(config.env.id, split="held_out", **env_kwargs)
        eval_rows = evaluate.build_eval_set(eval_env, config.evaluation.prompts, seed=config.evaluation.seed)
        settings = config.evaluation
        episode_options = dict(
            max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
            batch_size=settings.batch_size,
        )

        def play(policy_model: Any, seed: int, description: str) -> list[evaluate.EpisodeResult]:
            return evaluate.run_episodes(
                policy_model, tokenizer, lambda: make_env(config.env.id, split="held_out", **env_kwargs), eval_rows,
                seed=seed, description=description, **episode_options,
            )

        before = after = None
        seed_means: list[float] = []
        if settings.enabled:
            before = play(model, settings.seed, "evaluating base policy")
            seed_means.append(evaluate.summarize(before)["mean_utility"])
            for k in range(settings.noise_seeds):
                again = play(model, settings.seed + 1000 * (k + 1), f"base policy, noise seed {k + 1}")
                seed_means.append(evaluate.summarize(again)["mean_utility"])
            tracker.log({"mean_utility": seed_means[0]}, step=0, phase="eval")

        reward_functions = [build_reward(s.name, s.params, population=population, report=terms) for s in config.rewards]
        job = agents.TrainingJob(
            model=model,
            tokenizer=tokenizer,
            peft_config=peft_config,
            env_id=config.env.id,
            env_kwargs={**env_kwargs, "split": "train"},
            max_turns=config.env.max_turns,
            reward_functions=reward_functions,
            reward_weights=[s.weight for s in config.rewards],
            trainer_settings=config.trainer,
            output_dir=run_dir / "checkpoints",
            seed=config.seed,
            n_prompts=config.prompts,
            callbacks=[tracking_callback(tracker, terms), progress_callback(console)],
            after_init=[replace_default_progress],
        )
        console.print(f"training with [bold]{config.method}[/] on {len(population.train_users)} training users")
        train_started = time.perf_counter()
        trained = method.train(job)
        train_seconds = time.perf_counter() - train_started
        final_dir = run_dir / "checkpoints" / "final"
        trained.save_pretrained(final_dir)
        tokenizer.save_pretrained(final_dir)

        report: dict[str, Any] = {"run_dir": str(run_dir), "train_seconds": train_seconds}
        if settings.enabled and before is not None:
            after = play(trained, settings.seed, "evaluating trained policy")
            report["before"] = evaluate.summarize(before)
            report["after"] = evaluate.summarize(after)
            report["comparison"] = evaluate.compare(before, after, population, settings.seed, config.env.noise)
            if len(seed_means) > 1:
                import numpy as np

                report["base_seed_to_seed"] = {"means": seed_means, "std": float(np.std(seed_means, ddof=1))}
            tracker.log({"mean_utility": report["after"]["mean_utility"]}, step=tracker.last_step, phase="eval")
            tracker.write_json("episodes.json", {
                "before": evaluate.episode_records(before), "after": evaluate.episode_records(after)
            })
        report["total_seconds"] = time.perf_counter() - started
        tracker.write_json("eval.json", report)
        tracker.summary(_flatten(report))
        build_report(run_dir, report)
        tracker.log_images(sorted((run_dir / "plots").glob("*.png")))
        exit_code = 0
    finally:
        tracker.finish(exit_code)
    print_report(console, report, run_dir)
    return RunResult(run_dir, report)


def _population(config: ExperimentConfig) -> Any:
    import gymnasium as gym

    import envs  # noqa: F401
    from envs.users import UserPopulation

    from gymnasium.envs.registration import load_env_creator

    from envs.users import UserGroup

    env_class = load_env_creator(gym.spec(config.env.id).entry_point)
    groups = None
    if config.users.groups is not None:
        groups = [UserGroup(g.name, g.share, g.preference_center, g.spread) for g in config.users.groups]
    return UserPopulation(
        env_class.scenario,
        n_users=config.users.n_users,
        held_out_fraction=config.users.held_out_fraction,
        seed=config.users.seed,
        groups=groups,
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float, str)):
            flat[name] = value
    return flat


def print_report(console: Any, report: dict[str, Any], run_dir: Path) -> None:
    from rich.table import Table

    if "before" not in report:
        console.print(f"[green]done[/] (evaluation disabled) -> {run_dir}")
        return
    before, after, comparison = report["before"], report["after"], report["comparison"]
    table = Table(title=f"held-out users: {before['n']} conversations, same prompts and seeds")
    table.add_column("metric")
    table.add_column("base policy", justify="right")
    table.add_column("trained policy", justify="right")
    table.add_row(
        "mean user reward (hidden utility)",
        f"{before['mean_utility']:+.3f} ± {before['ci95']:.3f}",
        f"{after['mean_utility']:+.3f} ± {after['ci95']:.3f}",
    )
    for group in before["by_group"]:
        b, a = before["by_group"][group], after["by_group"][group]
        table.add_row(f"  group {group} (n={b['n']})", f"{b['mean']:+.3f} ± {b['ci95']:.3f}", f"{a['mean']:+.3f} ± {a['ci95']:.3f}")
    table.add_row("mean feedback reward", f"{before['mean_feedback_reward']:+.3f}", f"{after['mean_feedback_reward']:+.3f}")
    table.add_row("mean reply length (words)", f"{before['mean_reply_words']:.1f}", f"{after['mean_reply_words']:.1f}")
    table.add_row(
        "improvement (paired)", "", f"{comparison['improvement']:+.3f} ± {comparison['improvement_ci95']:.3f}"
    )
    table.add_row("win rate vs base (users' choices)", "", f"{comparison['win_rate']:.2f} ± {comparison['win_rate_ci95']:.2f}")
    if "base_seed_to_seed" in report:
        table.add_row("base seed-to-seed std of the mean", f"{report['base_seed_to_seed']['std']:.3f}", "")
    console.print(table)
    console.print(f"training took {report['train_seconds']:.0f} s; run folder: [cyan]{run_dir}[/]")
