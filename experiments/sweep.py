"""``attune sweep``: a search over experiment configurations with Ray Tune, locally or on a Ray cluster.

The config's ``sweep:`` block gives the search space as dotted config keys, each with one of
``grid``, ``choice``, ``uniform``, ``loguniform`` or ``randint``; ``seeds: [0, 1, 2]`` is a grid over
``seed``. Every trial is one ``attune run`` of the base config with the trial's values, inside a Ray Tune
function trainable that reports metrics as training logs them and the evaluation at the end. Each trial is
its own run folder and W&B run (W&B group: the sweep's name), offline unless the config says online.

The end is a results table sorted by the metric (``sweep_results.md``/``.json``), logged to W&B too, and
the best configuration as a runnable YAML (``best_config.yaml``). A killed sweep continues with
``--resume``, keeping finished trials; a trial that raises is reported with its error and the others go on.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from experiments.config import ConfigError, ExperimentConfig, apply_override, dump_config, load_config

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
TUNE_DIR = "tune"


def _tune_space(space: dict[str, Any], seeds: list[int] | None) -> dict[str, Any]:
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


def trial_config(base: dict[str, Any], values: dict[str, Any], runs_dir: str, trial_name: str) -> ExperimentConfig:
    """The experiment config of one trial: the base config with the trial's values at their dotted keys."""
    data = json.loads(json.dumps(base))
    for key, value in values.items():
        apply_override(data, key.split("."), value)
    data.pop("sweep", None)
    data["tracking"] = {**data.get("tracking", {}), "runs_dir": runs_dir, "name": trial_name}
    return ExperimentConfig.model_validate(data)


def _trainable(values: dict[str, Any], base: dict[str, Any], runs_dir: str, environment: dict[str, str]) -> None:
    """One trial: run the experiment, reporting training logs and the final evaluation to Tune."""
    os.environ.update(environment)
    from transformers import TrainerCallback

    from experiments.runner import run

    class _ReportToTune(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if numbers:
                tune.report({"step": state.global_step, **numbers})

    config = trial_config(base, values, runs_dir, tune.get_context().get_trial_name())
    result = run(config, extra_callbacks=[_ReportToTune()])
    final: dict[str, Any] = {"done": 1.0, "run_dir": str(result.run_dir)}
    if "after" in result.eval:
        final |= {
            "mean_utility": result.eval["after"]["mean_utility"],
            "improvement": result.eval["comparison"]["improvement"],
            "win_rate": result.eval["comparison"]["win_rate"],
        }
    final |= {k: v for k, v in result.eval.items() if isinstance(v, (int, float))}
    tune.report(final)


def _start_ray(address: str | None) -> bool:
    """Connect to ``address`` (an existing cluster) or start a local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    # Pitfalls seen here: Ray writes into HOME unless told otherwise, and a throwaway local cluster needs no auth.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = os.environ.get("RAY_TMPDIR") or f"/tmp/ray-{os.getuid()}"
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
    return True


def run_sweep(config: ExperimentConfig, config_path: Path, address: str | None = None, resume: bool = False,
              console: Any = None) -> tuple[Path, list[dict[str, Any]]]:
    """Run (or ``resume``) the sweep of ``config``; returns its folder and the sorted results."""
    import ray
    from rich.console import Console

    console = console or Console()
    sweep = config.sweep
    if sweep is None:
        raise ConfigError("sweep: this config has no sweep block; add sweep: {space: {...}, metric: ..., mode: ...}")
    if config.variants:
        raise ConfigError("sweep: a swept config cannot also have variants")
    folder = Path(config.tracking.runs_dir).resolve() / (config.tracking.name or f"sweep-{config.experiment}")
    if folder.exists() and not resume and (folder / TUNE_DIR).exists():
        raise ConfigError(f"sweep: {folder} exists; continue it with --resume, or set tracking.name to start another")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(config))
    base = config.model_dump(mode="json")
    base["experiment"] = folder.name  # W&B group: one per sweep
    space = _tune_space(sweep.space, sweep.seeds)
    environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for key in ("ATTUNE_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(key):
            environment[key] = os.environ[key]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Training reports come before the evaluation that carries the metric; Tune checks only the final one then.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    started_ray = _start_ray(address)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, base=base, runs_dir=str(folder / "trials"), environment=environment),
        {"cpu": sweep.trial_cpus},
    )
    started = time.perf_counter()
    try:
        tune_path = folder / TUNE_DIR
        if resume:
            if not tune.Tuner.can_restore(str(tune_path)):
                raise ConfigError(f"sweep --resume: nothing to resume in {tune_path}; start the sweep without --resume")
            tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True, restart_errored=True)
            console.print(f"[bold]attune[/] resuming sweep [cyan]{folder}[/]")
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                            max_concurrent_trials=sweep.max_concurrent),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(folder), verbose=0,
                                          callbacks=[_ConsoleProgress(sweep.metric)],
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
            console.print(f"[bold]attune[/] sweep [cyan]{folder}[/] ({'cluster ' + address if address else 'local Ray'})")
        grid = tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    rows = results_table(grid, sweep.metric, sweep.mode, list(space))
    write_results(folder, rows, config, config_path, sweep.metric, time.perf_counter() - started)
    print_results(console, rows, folder, sweep.metric)
    return folder, rows


def results_table(grid: Any, metric: str, mode: str, keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        values = {k: result.config.get(k) for k in keys}
        row = {"trial": (result.metrics or {}).get("trial_id") or Path(result.path or "?").name[:24], **values,
               "status": "error" if result.error else "done",
               metric: (result.metrics or {}).get(metric),
               "run_dir": (result.metrics or {}).get("run_dir")}
        if result.error:
            row["error"] = str(result.error).strip().splitlines()[-1][:300]
        rows.append(row)
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r[metric] is None, sign * (r[metric] if r[metric] is not None else 0)))
    return rows


def write_results(folder: Path, rows: list[dict[str, Any]], config: ExperimentConfig, config_path: Path,
                  metric: str, seconds: float) -> None:
    (folder / "sweep_results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    keys = [k for k in rows[0] if k not in ("trial", "status", metric, "run_dir", "error")] if rows else []
    lines = [f"# Sweep {folder.name}", "", f"Sorted by {metric} ({config.sweep.mode}); {len(rows)} trials in {seconds:.0f} s.", "",
             "| trial | " + " | ".join(keys) + f" | {metric} | status |", "|" + " --- |" * (len(keys) + 3)]
    for r in rows:
        value = f"{r[metric]:+.4f}" if isinstance(r[metric], (int, float)) else "-"
        status = r["status"] + (f": {r['error']}" if r.get("error") else "")
        lines.append(f"| {r['trial']} | " + " | ".join(str(r[k]) for k in keys) + f" | {value} | {status} |")
    (folder / "sweep_results.md").write_text("\n".join(lines) + "\n")
    best = next((r for r in rows if r["status"] == "done" and r[metric] is not None), None)
    if best is not None:
        data = config.model_dump(mode="json", exclude={"sweep", "variants", "resume"})
        for key in keys:
            apply_override(data, key.split("."), best[key])
        data["tracking"]["name"] = None
        header = (f"# attune run {folder / 'best_config.yaml'}\n"
                  f"# The best trial of sweep {folder.name} ({metric} = {best[metric]:+.4f}), from {config_path}.\n")
        (folder / "best_config.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))
        load_config(folder / "best_config.yaml")  # it must run as written
    _log_table(folder, rows, config)


def _log_table(folder: Path, rows: list[dict[str, Any]], config: ExperimentConfig) -> None:
    if config.tracking.wandb == "disabled" or not rows:
        return
    import wandb

    from experiments.tracking import wandb_settings

    os.environ.setdefault("WANDB_SILENT", "true")
    columns = [c for c in rows[0] if c != "error"]
    run = wandb.init(project=config.tracking.project, name=f"{folder.name}-summary", group=folder.name,
                     dir=str(folder), mode=config.tracking.wandb,
                     settings=wandb_settings())
    run.log({"sweep_results": wandb.Table(columns=columns, data=[[str(r.get(c)) for c in columns] for r in rows])})
    run.finish()


def print_results(console: Any, rows: list[dict[str, Any]], folder: Path, metric: str) -> None:
    from rich.table import Table

    keys = [k for k in rows[0] if k not in ("trial", "status", metric, "run_dir", "error")] if rows else []
    table = Table(title=f"sweep results, best first ({metric})")
    for column in ["trial", *keys, metric, "status"]:
        table.add_column(column)
    for r in rows:
        value = f"{r[metric]:+.4f}" if isinstance(r[metric], (int, float)) else "-"
        table.add_row(r["trial"], *[str(r[k]) for k in keys], value, r["status"] + (f": {r['error'][:60]}" if r.get("error") else ""))
    console.print(table)
    if (folder / "best_config.yaml").exists():
        console.print(f"best config: [cyan]{folder / 'best_config.yaml'}[/]")


class _ConsoleProgress(tune.Callback):
    """One line per finished or failed trial (Tune itself runs with verbose=0). Picklable: no console held."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        value = (trial.last_result or {}).get(self.metric)
        shown = f"{value:+.4f}" if isinstance(value, (int, float)) else "-"
        print(f"trial {trial.trial_id} done: {self.metric} {shown}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"trial {trial.trial_id} failed (the other trials go on)", flush=True)
