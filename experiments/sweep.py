"""``attune sweep``: a search over experiment configurations with Ray Tune, locally or on a Ray cluster.

The config's ``sweep:`` block gives the search space as dotted config keys, each with one of
``grid``, ``choice``, ``uniform``, ``loguniform`` or ``randint``; ``seeds: [0, 1, 2]`` is a grid over
``seed``. Every trial is one ``attune run`` of the base config with the trial's values, inside a Ray Tune
function trainable that reports metrics as training logs them and the evaluation at the end. Each trial is
its own run folder and W&B run (W&B group: the sweep's name), offline unless the config says online.

The end is a results table sorted by the metric (``sweep_results.md``/``.json``), logged to W&B too, and
the best configuration as a runnable YAML (``best_config.yaml``). A killed sweep continues with
``--resume``: a finished trial is never run again, a trial cut short continues in its own run folder (from
its last checkpoint when it has one); a sweep killed before Tune saved its first state starts over. A trial
that raises is reported with its error and the others go on; the sweep then ends with :class:`TrialsFailed`
(exit code 1 on the command line).

Ray is imported only once the sweep knows whether it runs locally (loopback only, see
:mod:`experiments.offline`) or on a cluster (:mod:`experiments.ray_cluster`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import typer

from experiments import offline
from experiments.config import ConfigError, ExperimentConfig
from experiments.config_files import apply_override, dump_config
from experiments.ray_cluster import ClusterError, start_ray
from experiments.sweep_results import console_progress, print_results, results_table, write_results

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
TUNE_DIR = "tune"
TRIALS_DIR = "trials"
INTERRUPTED_DIR = "interrupted"

# What a trial reports at its end, by kind of method: the metrics a sweep can sort by. An evaluated LLM run
# reports every metric declared sweepable in experiments.evaluate (experiments.metrics.sweep_metrics).
TIMING_METRICS = ("train_seconds", "total_seconds")
BASELINE_METRICS = ("held_out_reward", "held_out_regret", "random_reward", "random_regret", "train_seconds")


class TrialsFailed(typer.Exit):
    """Some trials of a sweep failed; its results (with their errors) are written. Exit code 1 in the CLI."""

    def __init__(self, folder: Path, rows: list[dict[str, Any]]) -> None:
        super().__init__(code=1)
        self.folder = folder
        self.rows = rows
        self.failed = [r for r in rows if r["status"] != "done"]

    def __str__(self) -> str:
        return f"{len(self.failed)} of {len(self.rows)} trials failed: " + ", ".join(r["trial"] for r in self.failed)


def _tune_space(space: dict[str, Any], seeds: list[int] | None) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
            raise ConfigError(f"sweep.space.{key}: give one of {', '.join(SPACE_KINDS)}, e.g. {{choice: [1, 2]}}")
        kind, values = next(iter(spec.items()))
        if kind in ("grid", "choice"):
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.space.{key}.{kind}: a non-empty list of values")
            out[key] = tune.grid_search(values) if kind == "grid" else tune.choice(values)
        else:
            if not isinstance(values, list) or len(values) != 2:
                raise ConfigError(f"sweep.space.{key}.{kind}: [low, high]")
            low, high = values
            if kind == "loguniform" and not (0 < low < high):
                raise ConfigError(f"sweep.space.{key}.loguniform: need 0 < low < high, got {values}")
            out[key] = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](low, high)
    if seeds:
        if "seed" in out:
            raise ConfigError("sweep: give seeds either as sweep.seeds or as sweep.space.seed, not both")
        out["seed"] = tune.grid_search(list(seeds))
    return out


def allowed_metrics(config: ExperimentConfig) -> tuple[str, ...]:
    """The metrics every trial of this sweep reports at its end (what ``sweep.metric`` may name)."""
    import agents

    methods = {config.method}
    spec = (config.sweep.space if config.sweep else {}).get("method")
    if isinstance(spec, dict) and isinstance(next(iter(spec.values()), None), list):
        methods |= set(next(iter(spec.values())))
    evaluated = config.evaluation.enabled or "evaluation.enabled" in (config.sweep.space if config.sweep else {})
    from experiments.metrics import sweep_metrics

    eval_metrics = sweep_metrics()
    per_method = []
    for method in methods:
        if _is_baseline(agents, method):
            per_method.append(BASELINE_METRICS)
        else:
            per_method.append((*eval_metrics, *TIMING_METRICS) if evaluated else TIMING_METRICS)
    return tuple(m for m in per_method[0] if all(m in other for other in per_method[1:]))


def _is_baseline(agents: Any, method: Any) -> bool:
    try:
        return agents.get_method(method).kind == "baseline"
    except (ValueError, TypeError):  # not a method: the trial's own config validation names it
        return False


def check_metric(config: ExperimentConfig) -> None:
    allowed = allowed_metrics(config)
    if config.sweep.metric not in allowed:
        raise ConfigError(f"sweep.metric: {config.sweep.metric!r} is not reported by these trials; "
                          f"use one of {', '.join(allowed)}")


def trial_config(base: dict[str, Any], values: dict[str, Any], runs_dir: str, trial_name: str) -> ExperimentConfig:
    """The experiment config of one trial: the base config with the trial's values at their dotted keys."""
    data = json.loads(json.dumps(base))
    for key, value in values.items():
        apply_override(data, key.split("."), value)
    data.pop("sweep", None)
    data["tracking"] = {**data.get("tracking", {}), "runs_dir": runs_dir, "name": trial_name}
    return ExperimentConfig.model_validate(data)


def final_metrics(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """What a trial reports to Tune at its end, from its ``eval.json``."""
    from experiments.metrics import final_values

    final: dict[str, Any] = {"done": 1.0, "run_dir": str(run_dir), **final_values(report)}
    final |= {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return final


def prepare_trial_folder(config: ExperimentConfig, interrupted_dir: Path) -> tuple[ExperimentConfig, dict[str, Any] | None]:
    """Make a trial safe to start again after a killed sweep: each trial has one run folder, named after it.

    Returns the config to run and, when the trial had already finished (its ``eval.json`` written, though
    Tune's saved state may predate it), its final metrics instead: a finished trial is never run again.
    A trial cut short continues in place from its last checkpoint when its method can resume, or else starts
    over in the same folder; the partial folder is kept, under ``interrupted/``.
    """
    import agents

    run_dir = Path(config.tracking.runs_dir) / config.tracking.name
    if (run_dir / "eval.json").is_file():
        return config, final_metrics(run_dir, json.loads((run_dir / "eval.json").read_text()))
    if not run_dir.exists():
        return config, None
    has_checkpoint = any(p.name.split("-")[-1].isdigit() for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    resumable = agents.get_method(config.method).resumable
    if has_checkpoint and resumable:
        return config.model_copy(update={"resume": True}), None
    keep_interrupted(run_dir, interrupted_dir)
    return config, None


def keep_interrupted(path: Path, interrupted_dir: Path) -> None:
    """Move what a killed sweep left half-written to ``interrupted_dir/<name>-<k>``, the first free ``k``."""
    interrupted_dir.mkdir(parents=True, exist_ok=True)
    k = 1
    while (interrupted_dir / f"{path.name}-{k}").exists():
        k += 1
    shutil.move(str(path), str(interrupted_dir / f"{path.name}-{k}"))


def prepare_resume(folder: Path) -> bool:
    """Whether the sweep in ``folder`` has Tune state to continue from; if not, clear the way to start it over.

    Tune writes ``tune/tuner.pkl`` and then, at its first step, the experiment state. A sweep killed between
    the two (its ``tuner.pkl`` may even be empty) cannot be restored, and none of its trials can have finished:
    its ``tune/`` folder and any trial folders are kept under ``interrupted/`` and the sweep starts over.
    """
    tune_path = folder / TUNE_DIR
    if (tune_path / "tuner.pkl").is_file() and any(tune_path.glob("experiment_state-*.json")):
        return True
    for path in [tune_path, *sorted((folder / TRIALS_DIR).glob("*"))]:
        if path.exists():
            keep_interrupted(path, folder / INTERRUPTED_DIR)
    return False


def _trainable(values: dict[str, Any], base: dict[str, Any], runs_dir: str, environment: dict[str, str]) -> None:
    """One trial: run the experiment, reporting training logs and the final evaluation to Tune."""
    os.environ.update(environment)
    from ray import tune
    from transformers import TrainerCallback

    from experiments.runner import run

    class _ReportToTune(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if numbers:
                tune.report({"step": state.global_step, **numbers})

    config = trial_config(base, values, runs_dir, tune.get_context().get_trial_name())
    config, finished = prepare_trial_folder(config, Path(runs_dir).parent / INTERRUPTED_DIR)
    if finished is not None:
        tune.report(finished)
        return
    result = run(config, extra_callbacks=[_ReportToTune()])
    tune.report(final_metrics(result.run_dir, result.eval))


def run_sweep(config: ExperimentConfig, config_path: Path, address: str | None = None, resume: bool = False,
              console: Any = None, group: str | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """Run (or ``resume``) the sweep of ``config``; returns its folder and the sorted results.

    ``group`` names the trials' W&B group (their ``experiment``); default: the sweep's folder name.

    Raises :class:`TrialsFailed` after writing the results when any trial failed, :class:`ClusterError`
    when ``address`` names no usable cluster and :class:`ConfigError` for a bad sweep block.
    """
    offline.go_offline()
    if offline.is_remote_address(address):
        offline.allow_ray_cluster()  # before Ray is imported: it reads the setting then
    from rich.console import Console

    console = console or Console()
    sweep = config.sweep
    if sweep is None:
        raise ConfigError("sweep: this config has no sweep block; add sweep: {space: {...}, metric: ..., mode: ...}")
    if config.variants:
        raise ConfigError("sweep: a swept config cannot also have variants")
    check_metric(config)
    folder = Path(config.tracking.runs_dir).resolve() / (config.tracking.name or f"sweep-{config.experiment}")
    if folder.exists() and not resume and (folder / TUNE_DIR).exists():
        raise ConfigError(f"sweep: {folder} exists; continue it with --resume, or set tracking.name to start another")
    if resume and (folder / TUNE_DIR).exists() and not prepare_resume(folder):
        console.print(f"[bold]attune[/] {folder} was stopped before Tune saved its state: starting the sweep over")
        resume = False
    space = _tune_space(sweep.space, sweep.seeds)
    import ray
    from ray import tune

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(config))
    base = config.model_dump(mode="json")
    base["experiment"] = group or folder.name  # W&B group: one per sweep (or the benchmark's)
    environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **offline.offline_environment()}
    for key in ("ATTUNE_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(key):
            environment[key] = os.environ[key]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Training reports come before the evaluation that carries the metric; Tune checks only the final one then.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    try:
        started_ray = start_ray(address, environment)
    except ClusterError as exc:
        Console(stderr=True).print(f"[red]ray cluster:[/] {exc.message}", soft_wrap=True, highlight=False)
        raise
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, base=base, runs_dir=str(folder / TRIALS_DIR), environment=environment),
        {"cpu": sweep.trial_cpus},
    )
    started = time.perf_counter()
    try:
        tune_path = folder / TUNE_DIR
        if resume:
            if not tune.Tuner.can_restore(str(tune_path)):
                raise ConfigError(f"sweep --resume: nothing to resume in {tune_path}; start the sweep without --resume")
            # Unfinished trials continue (each in its own run folder, see prepare_trial_folder); failed trials
            # stay failed: the sweep reports them, and rerunning a trial that raised would only raise again.
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            console.print(f"[bold]attune[/] resuming sweep [cyan]{folder}[/]")
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                            max_concurrent_trials=sweep.max_concurrent),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(folder), verbose=0,
                                          callbacks=[console_progress(sweep.metric)],
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
            console.print(f"[bold]attune[/] sweep [cyan]{folder}[/] ({'cluster ' + address if address else 'local Ray'})")
        grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    rows = results_table(grid, sweep.metric, sweep.mode, list(space))
    write_results(folder, rows, config, config_path, sweep.metric, time.perf_counter() - started)
    print_results(console, rows, folder, sweep.metric, sweep.mode)
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} trials failed:[/] "
                      + "; ".join(f"{r['trial']} ({r.get('error', 'no result')})" for r in failed), soft_wrap=True,
                      highlight=False)
        raise TrialsFailed(folder, rows)
    return folder, rows
