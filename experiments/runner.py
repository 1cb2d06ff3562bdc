"""One experiment, start to finish: users -> policy -> rewards -> evaluation -> training -> evaluation.

Everything lands in ``runs/<name>/``: ``config.yaml``, ``metrics.jsonl``, ``eval.json``, ``episodes.json``,
``checkpoints/final/`` (the trained model or LoRA adapter), ``report.md``, ``plots/*.png`` and ``wandb/``.

Why one module over 300 lines: :func:`run` is the order of a run, read top to bottom (prepare, base
evaluation, rewards, the method's job, training, evaluation, report); splitting it would scatter that order.
Variants, tables, caching and metrics live elsewhere (:mod:`experiments.comparison`,
:mod:`experiments.eval_cache`, :mod:`experiments.metrics`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments import redact
from experiments.checkpoints import _checkpoint_step, find_run_to_resume
from experiments.config import PRIVATE_REWARDS, ConfigError, ExperimentConfig
from experiments.config_files import dump_config
from experiments.preflight import check_prompt_supply, check_tracking
from experiments.report import build_report, print_report
from experiments.tables import flatten as _flatten
from experiments.tracking import (
    RunResult,
    RunTracker,
    TermsRecorder,
    create_run_dir,
    learning_curve_callback,
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
    import agents
    from experiments import baselines

    redact.configure(config.privacy.redact)  # this run's setting, whatever ran before in this process
    method = agents.get_method(config.method)
    if method.kind == "baseline":
        if config.users.from_feedback is not None:
            raise ConfigError(f"users.from_feedback: baseline {config.method} builds its own discrete-env users; use "
                              "an LLM method with people as users, or remove users.from_feedback")
        return {"method": method, "method_settings": baselines.prepare(config)}
    from agents import TrainerSettingsError
    from agents.policy import check_model_available
    from rewards import RewardLookupError, check_reward_params

    try:
        method.check_trainer_settings(config.trainer, Path(config.tracking.runs_dir) / "_check", config.seed)
        method_settings = agents.method_options(method, config.method_settings)
    except TrainerSettingsError as exc:
        raise ConfigError(str(exc).replace("this method", f"method {config.method!r}")) from None
    if config.env.max_turns > 1 and not method.multi_turn:
        raise ConfigError(f"env.max_turns: method {config.method} trains on single replies; use method: grpo for "
                          "conversations, or env.max_turns=1")
    if config.resume and not method.resumable:
        resumable = [m.name for m in agents.methods() if m.kind == "llm" and m.resumable]
        raise ConfigError(f"resume: method {config.method!r} cannot resume; resumable: {', '.join(resumable)}")
    check_tracking(config)
    check_model_available(config.policy.model)
    try:
        population = _population(config)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"users.groups: {exc}") from None
    check_prompt_supply(config, population, training_prompts=method.uses_prompts)
    check_privacy(config, method, method_settings, population)
    check_users = getattr(method, "check_population", None)  # optional: what a method needs of the users
    if check_users is not None:
        try:
            check_users(method_settings, population)
        except TrainerSettingsError as exc:
            raise ConfigError(str(exc)) from None
    terms = TermsRecorder()
    from experiments.fairness import training_rewards

    for i, spec in enumerate(training_rewards(config)):  # with fairness.maxmin, MaxMin in user_feedback's place
        try:
            check_reward_params(spec.name, spec.params)
        except RewardLookupError as exc:
            raise ConfigError(f"rewards.{i}: {exc}") from None
    return {"method": method, "terms": terms, "population": population, "method_settings": method_settings}


def run(config: ExperimentConfig, console: Any = None, base_eval: dict[str, Any] | None = None,
        extra_callbacks: list[Any] | None = None) -> RunResult:
    """Run one experiment; returns the run folder and the evaluation summary.

    A config with ``variants`` or ``seeds`` runs each of them (see :func:`run_variants`). ``base_eval`` reuses an
    evaluation of the base policy (episodes and seed means) made with identical settings.
    """
    if config.sweep is not None:
        raise ConfigError("this config has a sweep block: run it with `attune sweep`, or remove sweep: to run it once")
    if config.variants or config.seeds:
        return run_variants(config, console)
    import agents
    from experiments.baselines import run_baseline

    if agents.get_method(config.method).kind == "baseline":
        return run_baseline(config, console)
    import torch
    from rich.console import Console

    from agents.policy import load_policy
    from agents.rollouts import make_env
    from experiments import eval_cache, evaluate, text_metrics

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
        s.name == "user_feedback" and s.params.get("feedback") == "env" for s in config.rewards
    ):
        console.print(f"note: env.feedback={config.env.feedback} shapes evaluation and multi-turn training; to train "
                      "single-turn on it too, use rewards: [{name: user_feedback, params: {feedback: env}}]")
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
        eval_rows = evaluate.build_eval_set(eval_env, config.evaluation.prompts, seed=config.evaluation.seed,
                                             balance_groups=config.evaluation.balance_groups)
        settings = config.evaluation
        episode_options = dict(
            max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
            batch_size=settings.batch_size,
            # The text metrics' scores of the policy's own replies (temperature 1 for the base's perplexity, the
            # sampling temperature for the KL), taken from the sampling instead of a second forward pass.
            logprob_temperatures=tuple(sorted({1.0, settings.temperature} - {0.0})) if settings.text_metrics else (),
        )

        def play(policy: Any, seed: int, description: str) -> list[evaluate.EpisodeResult]:
            return evaluate.run_episodes(
                policy, tokenizer, lambda: make_env(config.env.id, split="held_out", **env_kwargs), eval_rows,
                seed=seed, description=description, **episode_options,
            )

        text_seconds = 0.0

        def score(policy: Any, episodes: list[evaluate.EpisodeResult], base: Any = None) -> None:
            """The text metrics' model scores (evaluation.text_metrics), timed: they must stay cheap."""
            nonlocal text_seconds
            if settings.text_metrics:
                scoring_started = time.perf_counter()
                text_metrics.score_texts(policy, tokenizer, episodes, population, base=base,
                                         temperature=settings.temperature)
                text_seconds += time.perf_counter() - scoring_started

        evaluation_started = time.perf_counter()
        before, seed_means = eval_cache.base_evaluation(
            config, lambda seed, description: play(model, seed, description), lambda episodes: score(model, episodes),
            tracker, console, resumed=resume_from is not None, shared=base_eval)
        base_evaluation_seconds = time.perf_counter() - evaluation_started  # ~0 when the attune cache had it

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
        curve = None
        if settings.enabled and before is not None and settings.curve_every:
            curve_rows = eval_rows[: settings.curve_prompts]

            def score_subset(policy: Any) -> float:
                played = evaluate.run_episodes(
                    policy, tokenizer, lambda: make_env(config.env.id, split="held_out", **env_kwargs), curve_rows,
                    seed=settings.seed, show_progress=False, **{**episode_options, "logprob_temperatures": ()})
                return float(sum(r.score for r in played) / len(played))

            curve = learning_curve_callback(settings.curve_every, score_subset, tracker)
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
            prompts=config.prompts,
            population=population,
            balance_groups=config.fairness.balanced_sampling,
            resume_from=str(resume_from) if resume_from else None,
            log=lambda metrics: tracker.log(metrics, step=tracker.last_step, phase="method"),
            method_settings=checked["method_settings"],
            callbacks=[tracking_callback(tracker, terms), progress_callback(console), *([curve] if curve else []),
                       *(extra_callbacks or [])],
            after_init=[replace_default_progress],
            privacy=config.privacy.dp if getattr(method, "check_privacy", None) is not None else None,
            local_ray=_method_ray,
        )
        console.print(f"training with [bold]{config.method}[/] on {len(population.train_users)} training users")
        train_started = time.perf_counter()
        if curve is not None:
            curve.started = train_started
        try:
            trained = agents.as_policy(method.train(job))
        except agents.TrainerSettingsError as exc:  # a setting only the method could judge, e.g. batch vs prompts
            raise ConfigError(str(exc)) from None
        # Learning-curve evaluations pause the clock: the seconds are training's own.
        train_seconds = time.perf_counter() - train_started - (curve.paused if curve else 0.0)
        final_dir = run_dir / "checkpoints" / "final"
        trained.extras = redact.redact_data(trained.extras)  # e.g. prompting's example system prompt quotes a user
        trained.save(final_dir)
        tokenizer.save_pretrained(final_dir)

        report: dict[str, Any] = {"run_dir": str(run_dir), "method": config.method, "train_seconds": train_seconds}
        if reward_summaries:
            report["rewards"] = reward_summaries
        if config.privacy.dp is not None:
            report["privacy"] = privacy_report(config, trained, reward_functions)
        report.update(trained.report)
        if settings.enabled and before is not None:
            evaluation_started = time.perf_counter()
            after = play(trained, settings.seed, "evaluating trained policy")
            score(trained, after, base=text_metrics.base_model(trained, lambda: load_policy(config.policy.model)[0]))
            if settings.text_metrics:
                report["text_metrics_seconds"] = text_seconds
            report["before"] = evaluate.summarize(before)
            report["after"] = evaluate.summarize(after)
            report["comparison"] = evaluate.compare(before, after, population, settings.seed, config.env.noise)
            also_played = {}
            for name, other in trained.also_evaluate.items():
                also_played[name] = play(other, settings.seed, f"evaluating {name} policy")
                score(other, also_played[name], base=text_metrics.base_model(other, lambda: load_policy(config.policy.model)[0]))
            if also_played:
                report[trained.report_section] = {
                    **report.get(trained.report_section, {}),
                    **evaluate.also_evaluated(before, after, also_played, trained.label, population, settings.seed,
                                              config.env.noise)}
            if curve is not None:
                k = len(curve_rows)
                report["curve"] = {"prompts": k, "points": [
                    {"step": 0, "seconds": 0.0, "mean_utility": sum(r.score for r in before[:k]) / k},
                    *curve.points,
                    {"step": tracker.last_step, "seconds": train_seconds, "mean_utility": sum(r.score for r in after[:k]) / k},
                ]}
            if len(seed_means) > 1:
                import numpy as np

                report["base_seed_to_seed"] = {"means": seed_means, "std": float(np.std(seed_means, ddof=1))}
            # Where a run's wall time goes (make bench-eval measures the batch size's share of it).
            report["evaluation_seconds"] = {
                "base": base_evaluation_seconds, "trained": time.perf_counter() - evaluation_started,
                "learning_curve": curve.paused if curve else 0.0}
            tracker.log({"mean_utility": report["after"]["mean_utility"]}, step=tracker.last_step, phase="eval")
            tracker.write_json("episodes.json", {
                "before": evaluate.episode_records(before), "after": evaluate.episode_records(after),
                **{f"after_{name}": evaluate.episode_records(played) for name, played in also_played.items()},
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
    """What the base policy's evaluation depends on: variants (and training seeds) equal here share it."""
    return json.dumps(config.model_dump(mode="json", include={"env", "users", "policy", "evaluation"}), sort_keys=True)


def run_variants(config: ExperimentConfig, console: Any = None) -> RunResult:
    """Run every variant of ``config`` (once per training seed with ``seeds:``) into one folder, side by side.

    The base policy is evaluated once per distinct (env, users, policy, evaluation) setting and shared,
    so every variant and seed is compared on the same users, prompts and sampling seeds. Writes
    ``comparison.md``, ``comparison.json`` and ``plots/comparison.png`` (see :mod:`experiments.comparison`).
    """
    from rich.console import Console

    from experiments.comparison import print_comparison, write_comparison

    console = console or Console()
    variants = config.variant_configs()
    seeds = config.seeds or [None]
    for _, variant in variants:  # every variant's config errors before anything is written
        prepare(variant)
    parent = create_run_dir(Path(config.tracking.runs_dir), run_name(config))
    (parent / "config.yaml").write_text(dump_config(config))
    runs = f"{len(variants)} variants" + (f" x {len(seeds)} training seeds" if config.seeds else "")
    console.print(f"[bold]attune[/] {runs} of {config.experiment!r} -> [cyan]{parent}[/]")
    shared: dict[str, dict[str, Any]] = {}
    rows, results = [], []
    for name, variant in variants:
        for seed in seeds:
            folder = name if seed is None else f"{name}-seed{seed}"
            variant_run = variant.model_copy(update={
                "tracking": variant.tracking.model_copy(update={"runs_dir": str(parent / "variants"), "name": folder}),
                **({"seed": seed} if seed is not None else {}),
            })
            console.rule(f"variant {name}: method {variant.method}" + (f", seed {seed}" if seed is not None else ""))
            key = _base_eval_key(variant_run)
            result = run(variant_run, console, base_eval=shared.get(key))
            row = {"variant": name, "method": variant.method, "seed": variant_run.seed, **result.eval}
            if "before" in result.eval:  # baselines and runs without evaluation are listed, not compared
                base = json.loads((result.run_dir / "eval_before.json").read_text())
                shared.setdefault(key, base)
                episodes = json.loads((result.run_dir / "episodes.json").read_text())
                row["after_scores"] = [e["score"] for e in episodes["after"]]
                row["base_scores"] = base.get("seed_scores") or [[e["score"] for e in base["episodes"]]]
            rows.append(row)
            rows.extend(_also_evaluated_rows(row, result))
            results.append(result)
    comparison = write_comparison(parent, rows, config.tracking)
    print_comparison(console, comparison, parent)
    return RunResult(parent, {"variants": rows}, variants=results)


def _also_evaluated_rows(row: dict[str, Any], result: RunResult) -> list[dict[str, Any]]:
    """Comparison rows for the further policies a method had scored (``<variant>/<name>``, e.g. federated's
    personalized adapters), beside the variant's own row, on the same conversations."""
    if "after_scores" not in row:
        return []
    episodes = json.loads((result.run_dir / "episodes.json").read_text())
    extra = []
    for key, records in episodes.items():
        if not key.startswith("after_"):
            continue
        name = key.removeprefix("after_")
        section = next(v for v in result.eval.values() if isinstance(v, dict) and name in v.get("policies", {}))
        extra.append({**row, "variant": f"{row['variant']}/{name}", "after": section["policies"][name]["after"],
                      "comparison": section["policies"][name]["comparison"],
                      "after_scores": [e["score"] for e in records]})
    return extra


@contextlib.contextmanager
def _method_ray() -> Iterator[None]:
    """The Ray a method runs on: the cluster ``RAY_ADDRESS`` names, or a local one started the offline way;
    shut down after if this started it (a running Ray is used as it is)."""
    import ray

    from experiments import offline
    from experiments.ray_cluster import start_ray

    environment = {**offline.offline_environment(), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = start_ray(os.environ.get("RAY_ADDRESS"), environment)
    try:
        yield
    finally:
        if started:
            ray.shutdown()  # never `ray stop`: it would end every Ray process on the machine


def build_rewards(config: ExperimentConfig, population: Any, terms: Any, run_dir: Path, env_factory: Any = None) -> list[Any]:
    """The configured reward functions, ready for the trainers (learned ones are trained here)."""
    from agents.policy import resolve_model
    from experiments.fairness import training_rewards
    from rewards import build_reward

    private_training = None
    if config.privacy.dp is not None:
        from agents.privacy import private_trainer

        private_training = private_trainer(config.privacy.dp)
    return [
        build_reward(s.name, s.params, population=population, report=terms, output_dir=run_dir / "rewards" / s.name,
                     resolve_model=resolve_model, env_factory=env_factory, private_training=private_training)
        for s in training_rewards(config)  # fairness.maxmin swaps user_feedback for MaxMin
    ]


def check_privacy(config: ExperimentConfig, method: Any, method_settings: Any, population: Any) -> None:
    """``privacy.dp``: every private part of the run can plan its noise (users, users per step, steps, delta)."""
    import inspect

    from agents import TrainerSettingsError
    from agents.privacy import PrivacySettingsError, plan
    from rewards import get_reward

    dp = config.privacy.dp
    if dp is None:
        return
    check = getattr(method, "check_privacy", None)
    if check is not None:
        try:
            check(dp, method_settings, config.trainer, population)
        except TrainerSettingsError as exc:
            raise ConfigError(str(exc)) from None
    for i, spec in enumerate(config.rewards):
        if spec.name in PRIVATE_REWARDS:
            defaults = {k: p.default for k, p in inspect.signature(get_reward(spec.name).__init__).parameters.items()}
            params = {**defaults, **spec.params}
            try:
                plan(dp, users=len(population.train_users), users_per_step=params["batch_size"], steps=params["steps"],
                     where=f"rewards.{i}.params.batch_size")
            except PrivacySettingsError as exc:
                raise ConfigError(str(exc)) from None


def privacy_report(config: ExperimentConfig, trained: Any, reward_functions: list[Any]) -> dict[str, Any]:
    """eval.json's ``privacy`` section: each private part's accounting and the run's epsilon and delta (parts
    trained on the same users compose sequentially: the sums)."""
    from agents.privacy import ACCOUNTANT, combine

    parts = {f.__name__: f.privacy for f in reward_functions if isinstance(getattr(f, "privacy", None), dict)}
    if trained.privacy is not None:
        parts["policy"] = trained.privacy
    total = combine(parts, sequential=True) if len(parts) > 1 else {k: next(iter(parts.values())).get(k) for k in ("epsilon", "delta")}
    out: dict[str, Any] = {"unit": "user", "accountant": ACCOUNTANT, **total, "parts": parts}
    if trained.privacy is None:
        out["not_private"] = (f"the policy's own training (method {config.method}) sees the users' data without "
                              "differential privacy; only the parts listed are private")
    return out


def _population(config: ExperimentConfig) -> Any:
    import envs
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup

    if config.users.from_feedback is not None:
        from experiments.feedback import FeedbackError, people_population

        try:
            return people_population(config.users.from_feedback, config.env.id,
                                     held_out_fraction=config.users.held_out_fraction, seed=config.users.seed)
        except FeedbackError as exc:
            raise ConfigError(f"users.from_feedback: {exc}") from None
    groups = None
    if config.users.groups is not None:
        groups = [UserGroup(g.name, g.share, g.preference_center, g.spread) for g in config.users.groups]
    population = UserPopulation(
        envs.scenario_of(config.env.id),
        n_users=config.users.n_users,
        held_out_fraction=config.users.held_out_fraction,
        seed=config.users.seed,
        groups=groups,
        dirichlet_alpha=config.users.dirichlet_alpha,
    )
    # Everything this process writes from here on is redacted, the users' own names included.
    redact.configure(config.privacy.redact, (u.name for u in population.users))
    return population
