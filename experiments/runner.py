"""One experiment, start to finish: users -> policy -> rewards -> evaluation -> training -> evaluation.

Everything lands in ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl``, ``eval.json``, ``episodes.json``,
``checkpoints/final/`` (the trained model or LoRA adapter), ``report.md``, ``plots/*.png`` and ``wandb/``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from experiments.checkpoints import _checkpoint_step, find_run_to_resume
from experiments.config import ConfigError, ExperimentConfig
from experiments.config_files import dump_config
from experiments.preflight import check_prompt_supply, check_tracking
from experiments.report import build_report
from experiments.tracking import (
    RunResult,
    RunTracker,
    TermsRecorder,
    create_run_dir,
    progress_callback,
    replace_default_progress,
    run_name,
    tracking_callback,
)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # attune never downloads; fail fast instead of hanging
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()  # dataset tokenization bars would drown the training progress bar
    for pattern in (".*TRL_EXPERIMENTAL_SILENCE.*", ".*rollout_func.*experimental.*", ".*use_cache=True.*"):
        warnings.filterwarnings("ignore", message=pattern)
    # transformers 5 renames gradient_checkpointing; TRL 1.12 still uses the old names internally.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")


def prepare(config: ExperimentConfig) -> dict[str, Any]:
    """Everything that can fail because of the config, checked before anything slow or written."""
    from experiments import baselines

    if config.method in baselines.BASELINE_METHODS:
        return {"method_settings": baselines.prepare(config)}
    import agents
    from agents import TrainerSettingsError
    from agents.policy import check_model_available
    from rewards import RewardLookupError, check_reward_params

    method = agents.get_method(config.method)
    try:
        method.check_settings(config.trainer, Path(config.tracking.runs_dir) / "_check", config.seed)
        method_settings = agents.method_options(method, config.method_settings)
    except TrainerSettingsError as exc:
        raise ConfigError(str(exc).replace("this method", f"method {config.method!r}")) from None
    if config.env.max_turns > 1 and not method.MULTI_TURN:
        raise ConfigError(f"env.max_turns: method {config.method} trains on single replies; use method: grpo for "
                          "conversations, or env.max_turns=1")
    if config.resume and not method.RESUMABLE:
        resumable = [name for name in agents.METHODS if agents.get_method(name).RESUMABLE]
        raise ConfigError(f"resume: method {config.method!r} cannot resume; resumable: {', '.join(resumable)}")
    check_tracking(config)
    check_model_available(config.policy.model)
    try:
        population = _population(config)
    except ValueError as exc:
        raise ConfigError(f"users.groups: {exc}") from None
    check_prompt_supply(config, population, training_prompts=config.method not in ("sft", "prompting"))
    terms = TermsRecorder()
    for i, spec in enumerate(config.rewards):
        try:
            check_reward_params(spec.name, spec.params)
        except RewardLookupError as exc:
            raise ConfigError(f"rewards.{i}: {exc}") from None
    return {"method": method, "terms": terms, "population": population, "method_settings": method_settings}


def run(config: ExperimentConfig, console: Any = None, base_eval: dict[str, Any] | None = None,
        extra_callbacks: list[Any] | None = None) -> RunResult:
    """Run one experiment; returns the run folder and the evaluation summary.

    A config with ``variants`` runs each of them (see :func:`run_variants`). ``base_eval`` reuses an
    evaluation of the base policy (episodes and seed means) made with identical settings.
    """
    if config.sweep is not None:
        raise ConfigError("this config has a sweep block: run it with `attune sweep`, or remove sweep: to run it once")
    if config.variants:
        return run_variants(config, console)
    from experiments.baselines import BASELINE_METHODS, run_baseline

    if config.method in BASELINE_METHODS:
        return run_baseline(config, console)
    import torch
    from rich.console import Console

    import agents
    from agents.policy import load_policy
    from agents.rollouts import make_env
    from envs.seeding import derive_seed
    from experiments import evaluate

    console = console or Console()
    _quiet_libraries()
    torch.set_num_threads(config.threads)
    checked = prepare(config)
    method, terms, population = checked["method"], checked["terms"], checked["population"]
    env_kwargs = {"population": population, **config.env.env_kwargs()}
    resume_from: Path | None = None
    if config.resume:
        run_dir, resume_from = find_run_to_resume(config, report=console.print)

    started = time.perf_counter()
    if config.env.max_turns == 1 and config.env.feedback != "rating" and not any(
        s.name == "user_feedback" and s.params.get("channel") == "env" for s in config.rewards
    ):
        console.print(f"note: env.feedback={config.env.feedback} shapes evaluation and multi-turn training; to train "
                      "single-turn on it too, use rewards: [{name: user_feedback, params: {channel: env}}]")
    console.print(f"[bold]attune[/] loading policy [cyan]{config.policy.model}[/]")
    lora = config.policy.lora.model_dump() if config.policy.lora else None
    model, tokenizer, peft_config = load_policy(config.policy.model, lora=lora)

    if resume_from is None:
        run_dir = create_run_dir(Path(config.tracking.runs_dir), run_name(config))
    tracker = RunTracker(config, run_dir, resume_step=_checkpoint_step(resume_from))
    console.print(f"run folder: [cyan]{run_dir}[/]" + (f" (resuming from {resume_from.name})" if resume_from else ""))
    exit_code = 1
    try:
        eval_env = make_env(config.env.id, split="held_out", **env_kwargs)
        eval_rows = evaluate.build_eval_set(eval_env, config.evaluation.prompts, seed=config.evaluation.seed)
        settings = config.evaluation
        episode_options = dict(
            max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
            batch_size=settings.batch_size,
        )

        def play(policy: Any, seed: int, description: str) -> list[evaluate.EpisodeResult]:
            return evaluate.run_episodes(
                policy, tokenizer, lambda: make_env(config.env.id, split="held_out", **env_kwargs), eval_rows,
                seed=seed, description=description, **episode_options,
            )

        before = None
        seed_means: list[float] = []
        saved = None
        if settings.enabled and resume_from is not None and (run_dir / "eval_before.json").is_file():
            saved = json.loads((run_dir / "eval_before.json").read_text())
        elif settings.enabled and base_eval is not None:
            saved = base_eval
            tracker.write_json("eval_before.json", saved)
            tracker.log({"mean_utility": saved["seed_means"][0]}, step=0, phase="eval")
        if saved is not None:
            before = [evaluate.EpisodeResult(**{k: v for k, v in e.items() if k != "score"}) for e in saved["episodes"]]
            seed_means = saved["seed_means"]
        elif settings.enabled:
            before = play(model, settings.seed, "evaluating base policy")
            seed_means.append(evaluate.summarize(before)["mean_utility"])
            for k in range(settings.noise_seeds):
                again = play(model, derive_seed(settings.seed, "noise-seed", k + 1), f"base policy, noise seed {k + 1}")
                seed_means.append(evaluate.summarize(again)["mean_utility"])
            tracker.log({"mean_utility": seed_means[0]}, step=0, phase="eval")
            tracker.write_json("eval_before.json", {"episodes": evaluate.episode_records(before), "seed_means": seed_means})

        reward_functions = build_rewards(config, population, terms, run_dir,
                                         env_factory=lambda: make_env(config.env.id, **{**env_kwargs, "split": "all"}))
        reward_summaries = {f.__name__: f.summary for f in reward_functions if isinstance(getattr(f, "summary", None), dict)}
        if reward_summaries:
            tracker.log({f"{name}/{k}": v for name, summary in reward_summaries.items() for k, v in summary.items()},
                        step=tracker.last_step, phase="rewards")
        trainer_settings = dict(config.trainer)
        if config.checkpoint_every:
            trainer_settings.setdefault("save_strategy", "steps")
            trainer_settings.setdefault("save_steps", config.checkpoint_every)
            trainer_settings.setdefault("save_total_limit", 2)
        job = agents.TrainingJob(
            model=model,
            tokenizer=tokenizer,
            peft_config=peft_config,
            env_id=config.env.id,
            env_kwargs={**env_kwargs, "split": "train"},
            max_turns=config.env.max_turns,
            reward_functions=reward_functions,
            reward_weights=[s.weight for s in config.rewards],
            trainer_settings=trainer_settings,
            output_dir=run_dir / "checkpoints",
            seed=config.seed,
            n_prompts=config.prompts,
            population=population,
            resume_from=str(resume_from) if resume_from else None,
            log=lambda metrics: tracker.log(metrics, step=tracker.last_step, phase="method"),
            method_settings=checked["method_settings"],
            callbacks=[tracking_callback(tracker, terms), progress_callback(console), *(extra_callbacks or [])],
            after_init=[replace_default_progress],
        )
        console.print(f"training with [bold]{config.method}[/] on {len(population.train_users)} training users")
        train_started = time.perf_counter()
        try:
            trained = agents.as_policy(method.train(job))
        except agents.TrainerSettingsError as exc:  # a setting only the method could judge, e.g. batch vs prompts
            raise ConfigError(str(exc)) from None
        train_seconds = time.perf_counter() - train_started
        final_dir = run_dir / "checkpoints" / "final"
        trained.save(final_dir)
        tokenizer.save_pretrained(final_dir)

        report: dict[str, Any] = {"run_dir": str(run_dir), "method": config.method, "train_seconds": train_seconds}
        if reward_summaries:
            report["rewards"] = reward_summaries
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
    return RunResult(run_dir, report, reward_functions)


def _base_eval_key(config: ExperimentConfig) -> str:
    """What the base policy's evaluation depends on: variants equal here can share it."""
    return json.dumps(config.model_dump(mode="json", include={"env", "users", "policy", "evaluation", "seed"}),
                      sort_keys=True)


def run_variants(config: ExperimentConfig, console: Any = None) -> RunResult:
    """Run every variant of ``config`` into one folder and compare them side by side.

    The base policy is evaluated once per distinct (env, users, policy, evaluation) setting and shared,
    so every variant is compared on the same users, prompts and seeds. Writes ``comparison.md``,
    ``comparison.json`` and ``plots/comparison.png``.
    """
    from rich.console import Console

    console = console or Console()
    variants = config.variant_configs()
    parent = create_run_dir(Path(config.tracking.runs_dir), run_name(config))
    (parent / "config.yaml").write_text(dump_config(config))
    console.print(f"[bold]attune[/] {len(variants)} variants of {config.experiment!r} -> [cyan]{parent}[/]")
    shared: dict[str, dict[str, Any]] = {}
    rows, results = [], []
    for name, variant in variants:
        variant = variant.model_copy(update={
            "tracking": variant.tracking.model_copy(update={"runs_dir": str(parent / "variants"), "name": name}),
        })
        console.rule(f"variant {name}: method {variant.method}")
        key = _base_eval_key(variant)
        result = run(variant, console, base_eval=shared.get(key))
        if "before" not in result.eval:  # baselines and runs without evaluation: listed, not compared
            rows.append({"variant": name, "method": variant.method, **result.eval})
            results.append(result)
            continue
        before_file = result.run_dir / "eval_before.json"
        if key not in shared and before_file.is_file():
            shared[key] = json.loads(before_file.read_text())
        rows.append({"variant": name, "method": variant.method, **result.eval})
        results.append(result)
    comparison = write_comparison(parent, rows)
    print_comparison(console, comparison, parent)
    return RunResult(parent, {"variants": rows}, variants=results)


def write_comparison(parent: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from experiments.stats import format_interval, format_mean

    table = []
    for row in rows:
        entry = {"variant": row["variant"], "method": row["method"], "train_seconds": row.get("train_seconds"),
                 "total_seconds": row.get("total_seconds")}
        if "after" in row:
            before, after, comparison = row["before"], row["after"], row["comparison"]
            entry |= {
                "n": after["n"], "seeds": 1,
                "base_mean": before["mean_utility"], "base_ci95": before["ci95"],
                "mean": after["mean_utility"], "ci95": after["ci95"],
                "ci_low": after["ci_low"], "ci_high": after["ci_high"], "interval": after["interval"],
                **{key: comparison[key] for key in comparison if key.startswith(("improvement", "win_rate", "sampled_"))},
            }
        table.append(entry)
    (parent / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    caption = _comparison_caption(table)
    lines = [f"# {parent.name}", "", "Held-out users, same prompts and sampling seeds for every variant.", ""]
    if caption:
        lines += [caption, ""]
    lines += [
        "| variant | method | n | mean utility after | improvement over base | win rate vs base (expected) "
        "| sampled wins | train time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in table:
        if "mean" in e:
            lines.append(
                f"| {e['variant']} | {e['method']} | {e['n']} | {format_mean(e['mean'], e['ci95'])} "
                f"| {format_mean(e['improvement'], e['improvement_ci95'])} "
                f"| {format_interval(e['win_rate'], e['win_rate_ci_low'], e['win_rate_ci_high'])} "
                f"| {_sampled_wins(e)} | {e['train_seconds']:.0f} |"
            )
        else:
            lines.append(f"| {e['variant']} | {e['method']} | | (evaluation off) | | | | {e['train_seconds']:.0f} |")
    if table and "base_mean" in table[0]:
        lines += ["", f"Base policy: {format_mean(table[0]['base_mean'], table[0]['base_ci95'])}."]
    lines += ["", "![comparison](plots/comparison.png)", ""]
    (parent / "comparison.md").write_text("\n".join(lines))
    plot_comparison(parent, table)
    return table


def _comparison_caption(table: list[dict[str, Any]]) -> str | None:
    """One caption for a table of variants: n, seeds and interval kinds (see the n column if n differs)."""
    from experiments.evaluate import describe_intervals

    evaluated = [e for e in table if "mean" in e]
    if not evaluated:
        return None
    caption = describe_intervals(evaluated[0], evaluated[0], seeds=1, per_variant=True)
    if len({e["n"] for e in evaluated}) > 1:
        caption += " The variants were evaluated on different numbers of conversations: see the n column."
    return caption


def _sampled_wins(entry: dict[str, Any]) -> str:
    from experiments.stats import format_interval

    wins = format_interval(entry["sampled_win_rate"], entry["sampled_win_rate_ci_low"], entry["sampled_win_rate_ci_high"])
    return f"{entry['sampled_wins']}/{entry['n']} = {wins}"


def plot_comparison(parent: Path, table: list[dict[str, Any]]) -> Path | None:
    rows = [e for e in table if "mean" in e]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4))
    x = range(len(rows))
    ax.bar(x, [e["mean"] for e in rows], yerr=[e["ci95"] for e in rows], capsize=4, color="tab:orange",
           label="after training")
    ax.axhline(rows[0]["base_mean"], color="tab:blue", linestyle="--", label="base policy")
    ax.set_xticks(list(x), [e["variant"] for e in rows], rotation=20)
    ax.set_ylabel(f"held-out mean hidden utility\n({rows[0]['interval']}, n={rows[0]['n']})")
    ax.set_title("personalization methods on the same users")
    ax.legend()
    return save_figure(fig, parent, "comparison.png")


def print_comparison(console: Any, table: list[dict[str, Any]], parent: Path) -> None:
    from rich.table import Table

    from experiments.stats import format_interval, format_mean

    out = Table(title="variants on the same held-out users, prompts and seeds", caption=_comparison_caption(table))
    for column in ("variant", "method", "n", "mean utility after", "improvement", "win rate vs base", "sampled wins",
                   "train s"):
        out.add_column(column, justify="left" if column in ("variant", "method") else "right")
    for e in table:
        if "mean" in e:
            out.add_row(e["variant"], e["method"], str(e["n"]), format_mean(e["mean"], e["ci95"]),
                        format_mean(e["improvement"], e["improvement_ci95"]),
                        format_interval(e["win_rate"], e["win_rate_ci_low"], e["win_rate_ci_high"]),
                        _sampled_wins(e), f"{e['train_seconds']:.0f}")
        else:
            out.add_row(e["variant"], e["method"], "-", "-", "-", "-", "-", f"{e['train_seconds']:.0f}")
    console.print(out)
    if table and "base_mean" in table[0]:
        console.print(f"base policy: {format_mean(table[0]['base_mean'], table[0]['base_ci95'])}")
    console.print(f"comparison: [cyan]{parent / 'comparison.md'}[/]")


def build_rewards(config: ExperimentConfig, population: Any, terms: Any, run_dir: Path, env_factory: Any = None) -> list[Any]:
    """The configured reward functions, ready for the trainers (learned ones are trained here)."""
    from agents.policy import resolve_model
    from rewards import build_reward

    return [
        build_reward(s.name, s.params, population=population, report=terms, output_dir=run_dir / "rewards" / s.name,
                     resolve_model=resolve_model, env_factory=env_factory)
        for s in config.rewards
    ]


def _population(config: ExperimentConfig) -> Any:
    import envs
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup

    groups = None
    if config.users.groups is not None:
        groups = [UserGroup(g.name, g.share, g.preference_center, g.spread) for g in config.users.groups]
    return UserPopulation(
        envs.scenario_of(config.env.id),
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

    from experiments.evaluate import describe_intervals
    from experiments.stats import format_interval, format_mean

    if "before" not in report:
        console.print(f"[green]done[/] (evaluation disabled) -> {run_dir}")
        return
    before, after, comparison = report["before"], report["after"], report["comparison"]
    table = Table(title=f"held-out users: {before['n']} conversations, same prompts and seeds",
                  caption=describe_intervals(before, comparison))
    table.add_column("metric")
    table.add_column("base policy", justify="right")
    table.add_column("trained policy", justify="right")
    table.add_row(
        "mean user reward (hidden utility)",
        format_mean(before["mean_utility"], before["ci95"]),
        format_mean(after["mean_utility"], after["ci95"]),
    )
    for group in before["by_group"]:
        b, a = before["by_group"][group], after["by_group"][group]
        table.add_row(f"  group {group} (n={b['n']})", format_mean(b["mean"], b["ci95"]), format_mean(a["mean"], a["ci95"]))
    table.add_row("mean feedback return (per episode)",
                  format_mean(before["mean_feedback_return"], before["feedback_return_ci95"]),
                  format_mean(after["mean_feedback_return"], after["feedback_return_ci95"]))
    table.add_row("mean reply length (words)", f"{before['mean_reply_words']:.1f}", f"{after['mean_reply_words']:.1f}")
    table.add_row("improvement (paired)", "", format_mean(comparison["improvement"], comparison["improvement_ci95"]))
    table.add_row("win rate vs base (users' choices, expected)", "",
                  format_interval(comparison["win_rate"], comparison["win_rate_ci_low"], comparison["win_rate_ci_high"]))
    sampled = format_interval(comparison["sampled_win_rate"], comparison["sampled_win_rate_ci_low"],
                              comparison["sampled_win_rate_ci_high"])
    table.add_row("sampled wins vs base", "", f"{comparison['sampled_wins']}/{comparison['n']} = {sampled}")
    if "base_seed_to_seed" in report:
        table.add_row("base seed-to-seed std of the mean", f"{report['base_seed_to_seed']['std']:.3f}", "")
    console.print(table)
    changes = sorted((comparison.get("term_changes") or {}).items(), key=lambda item: -abs(item[1]["change"]))
    if changes:
        console.print("utility terms that moved most (paired change, see report.md): "
                      + ", ".join(f"{name} {c['change']:+.3f}" for name, c in changes[:3]))
    console.print(f"training took {report['train_seconds']:.0f} s; run folder: [cyan]{run_dir}[/]")
