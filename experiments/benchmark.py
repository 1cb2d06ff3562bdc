"""``attune benchmark``: a paper's experiment as one command, with seeds, intervals and its published shape.

A benchmark is a YAML file (its format: :mod:`experiments.benchmark_spec`). Every arm runs as one
``attune sweep`` (the factor keys and the seeds as its grid) on one Ray: locally by default, on a cluster
with ``--address``. ``--resume`` continues a killed benchmark without rerunning a finished trial: an arm whose
sweep had ended is read back from its ``sweep_results.json``, the others continue as ``attune sweep --resume``
does. Every trial is a normal run folder and W&B run, grouped by benchmark. Each finished trial's metrics are
computed from its run folder (:mod:`experiments.benchmark_metrics`), then summarized over seeds, checked against
the shape claims and written (:mod:`experiments.benchmark_report`): ``benchmark.md``, ``benchmark.json`` and
``plots/benchmark.png``.

A new suite: a YAML in ``experiments/benchmarks/`` and, for a metric attune does not report yet, one
declaration in :mod:`experiments.benchmark_metrics`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from experiments.benchmark_metrics import trial_metrics
from experiments.benchmark_report import aggregate, evaluate_claim, plot_benchmark, print_summary, render_markdown
from experiments.benchmark_spec import (
    BENCHMARKS_DIR,
    Benchmark,
    arm_config_data,
    load_benchmark,
    scale_arms,
    scale_levels,
)
from experiments.config import ConfigError
from experiments.config_files import parse_override


def _trial_levels(row: dict[str, Any], bench: Benchmark) -> dict[str, str]:
    out = {}
    for name, factor in bench.factors.items():
        value = row.get(factor.key)
        out[name] = next((lv for lv, v in factor.levels.items() if v == value), str(value))
    return out


def run_benchmark(bench: Benchmark, scale: str = "smoke", seeds: list[int] | None = None, address: str | None = None,
                  resume: bool = False, overrides: list[str] = (), console: Any = None,
                  command: str = "", partial: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run every arm x factor level x seed as Ray Tune trials (one sweep per arm) and write the report.

    Returns the benchmark folder and the contents of ``benchmark.json``. Raises :class:`TrialsFailed`
    (exit code 1) after writing the report when a trial failed. ``partial``: run nothing, report the trials of
    the benchmark's folder that have finished (:func:`finished_trials`), the report marked partial.
    """
    from rich.console import Console

    from experiments import offline, ray_cluster, sweep
    from experiments.config import ExperimentConfig
    from experiments.preflight import check_tracking

    console = console or Console()
    if scale not in bench.scales:
        raise ConfigError(f"--scale: {scale!r} is not a scale of benchmark {bench.name}; use one of {', '.join(bench.scales)}")
    seeds = list(seeds if seeds is not None else (bench.scales[scale].seeds or bench.seeds))
    levels = scale_levels(bench, scale)
    space = {bench.factors[name].key: {"grid": [bench.factors[name].levels[lv] for lv in names]}
             for name, names in levels.items()}
    configs = {}
    arms = scale_arms(bench, scale)
    for arm in arms:
        data = arm_config_data(bench, arm, scale, overrides)
        data.pop("sweep", None)
        seeded = {"seeds": seeds} if bench.seed_key == "seed" else {"space": {**space, bench.seed_key: {"grid": seeds}}}
        data["sweep"] = {"space": space, "metric": "win_rate", "mode": "max",
                         "max_concurrent": bench.scales[scale].max_concurrent,
                         "trial_cpus": bench.scales[scale].trial_cpus, **seeded}
        try:
            configs[arm.name] = ExperimentConfig.model_validate(data)
        except ValidationError as exc:
            from experiments.config_files import format_validation_error

            raise ConfigError(f"arm {arm.name}: {format_validation_error(exc)}") from None
        if not configs[arm.name].evaluation.enabled:
            raise ConfigError(f"arm {arm.name}: evaluation.enabled must be true: every metric comes from it")
    first = next(iter(configs.values()))
    check_tracking(first)
    folder = Path(first.tracking.runs_dir).resolve() / (first.tracking.name or f"benchmark-{bench.name}-{scale}")
    if partial:
        if not (folder / "arms").is_dir():
            raise ConfigError(f"--partial: {folder} has no trials yet; start the benchmark without --partial "
                              "(tracking.runs_dir and tracking.name must be those it was run with)")
        trials = [t for arm in arms for t in finished_trials(folder / "arms" / arm.name, arm.name, bench)]
        expected = len(arms) * len(seeds) * math.prod(len(names) for names in levels.values())
        return _write_report(bench, folder, arms, levels, seeds, trials, scale=scale, command=command, model=first.policy.model,
                             eval_conversations=first.evaluation.prompts, seconds=0.0, console=console,
                             partial={"finished": len(trials), "expected": expected})
    if folder.exists() and any((folder / "arms").glob(f"*/{sweep.TUNE_DIR}")) and not resume:
        raise ConfigError(f"benchmark: {folder} exists; continue it with --resume, or set tracking.name=... to start another")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchmark.yaml").write_text(json.dumps(bench.model_dump(mode="json"), indent=2) + "\n")

    offline.go_offline()
    if offline.is_remote_address(address):
        offline.allow_ray_cluster()
    environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **offline.offline_environment()}
    for key in ("ATTUNE_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(key):
            environment[key] = os.environ[key]
    try:
        started_ray = ray_cluster.start_ray(address, environment)  # one Ray for every arm's sweep
    except ray_cluster.ClusterError as exc:
        Console(stderr=True).print(f"[red]ray cluster:[/] {exc.message}", soft_wrap=True, highlight=False)
        raise
    started = time.perf_counter()
    trials: list[dict[str, Any]] = []
    try:
        for arm in arms:
            config = configs[arm.name]
            config = config.model_copy(update={"tracking": config.tracking.model_copy(
                update={"runs_dir": str(folder / "arms"), "name": arm.name})})
            arm_resume = resume and (folder / "arms" / arm.name / sweep.TUNE_DIR).exists()
            console.rule(f"arm {arm.name}")
            rows = _finished_arm_rows(folder / "arms" / arm.name) if arm_resume else None
            if rows is not None:  # its sweep had ended before the kill: its table, not another Tune restore
                console.print(f"arm {arm.name}: finished before, {len(rows)} trials")
            else:
                try:
                    _, rows = sweep.run_sweep(config, benchmark_path_for_report(bench), address=address,
                                              resume=arm_resume, console=console, group=folder.name)
                except sweep.TrialsFailed as exc:
                    rows = exc.rows
            for row in rows:
                trial = {"arm": arm.name, "levels": _trial_levels(row, bench), "seed": row.get(bench.seed_key),
                         "status": row["status"], "trial": row["trial"], "run_dir": row.get("run_dir")}
                if row.get("error"):
                    trial["error"] = row["error"]
                if row["status"] == "done" and row.get("run_dir"):
                    trial["metrics"] = trial_metrics(Path(row["run_dir"]), bench.metrics)
                else:
                    trial["status"] = "error"
                    trial["metrics"] = {}
                trials.append(trial)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    folder, result = _write_report(bench, folder, arms, levels, seeds, trials, scale=scale, command=command,
                                   model=first.policy.model, eval_conversations=first.evaluation.prompts,
                                   seconds=time.perf_counter() - started, console=console)
    failed = [t for t in trials if t["status"] != "done"]
    if failed:
        rows = [{"trial": t["trial"], "status": t["status"]} for t in trials]
        raise sweep.TrialsFailed(folder, rows)
    return folder, result


def _write_report(bench: Benchmark, folder: Path, arms: list[Any], levels: dict[str, list[str]], seeds: list[int],
                  trials: list[dict[str, Any]], *, scale: str, command: str, model: str, eval_conversations: int,
                  seconds: float, console: Any, partial: dict[str, int] | None = None) -> tuple[Path, dict[str, Any]]:
    """Summarize the trials over seeds, check the claims, write benchmark.json, benchmark.md and the plot."""
    trials.sort(key=lambda t: ([a.name for a in bench.arms].index(t["arm"]), list(t["levels"].values()), t["seed"]))
    cells = aggregate(bench, trials, levels, [a.name for a in arms])
    claims = [evaluate_claim(c, cells, levels) for c in bench.claims]
    result = {
        "benchmark": bench.name, "title": bench.title, "scale": scale, "command": command, "seeds": seeds,
        "levels": levels, "arms": [a.model_dump() for a in arms], "metrics": bench.metrics,
        "model": model, "seconds": seconds, "eval_conversations": eval_conversations, "sources": bench.sources,
        "cells": cells, "claims": claims, "trials": trials, **({"partial": partial} if partial else {}),
    }
    (folder / "benchmark.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    plot_benchmark(folder, bench, cells, levels)
    (folder / "benchmark.md").write_text(render_markdown(bench, result))
    print_summary(console, result, folder)
    return folder, result


def finished_trials(arm_folder: Path, arm: str, bench: Benchmark) -> list[dict[str, Any]]:
    """The arm's trials that have finished, read from their run folders (``trials/*/eval.json``), with the factor
    levels and seed their ``config.yaml`` holds: what a partial report summarizes while the benchmark runs on."""
    import yaml

    trials = []
    for eval_json in sorted((arm_folder / "trials").glob("*/eval.json")):
        run_dir = eval_json.parent
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        values = {key: _dotted(config, key) for key in [f.key for f in bench.factors.values()] + [bench.seed_key]}
        trials.append({"arm": arm, "levels": _trial_levels(values, bench), "seed": values[bench.seed_key],
                       "status": "done", "trial": run_dir.name, "run_dir": str(run_dir),
                       "metrics": trial_metrics(run_dir, bench.metrics)})
    return trials


def _dotted(data: Any, key: str) -> Any:
    """``users.groups.0.share`` in a config's nested dicts and lists (None where it is absent)."""
    for part in key.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _finished_arm_rows(arm_folder: Path) -> list[dict[str, Any]] | None:
    """The results of an arm whose sweep ended (its ``sweep_results.json`` is written once Tune is done), or None."""
    try:
        rows = json.loads((arm_folder / "sweep_results.json").read_text())
    except (OSError, ValueError):  # not written yet, or cut short while being written
        return None
    return rows if isinstance(rows, list) and all(isinstance(r, dict) and "status" in r for r in rows) else None


def benchmark_path_for_report(bench: Benchmark) -> Path:
    """What each arm's best_config.yaml names as its origin."""
    return BENCHMARKS_DIR / f"{bench.name}.yaml"


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def command_line(name: str, scale: str, seeds: int | None, overrides: list[str]) -> str:
    parts = ["attune benchmark", name, f"--scale {scale}"] + ([f"--seeds {seeds}"] if seeds else []) + list(overrides)
    return " ".join(parts)


def main(name: str, overrides: list[str], scale: str, seeds: int | None, address: str | None, resume: bool,
         partial: bool = False) -> None:
    """What ``attune benchmark`` runs (errors are raised; the CLI turns them into one line)."""
    from rich.console import Console

    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds: give a number of seeds >= 1, got {seeds}")
    if partial and (resume or address):
        raise ConfigError("--partial runs nothing: drop --resume and --address (run with --resume to finish the trials)")
    bench = load_benchmark(name)
    for item in overrides:
        parse_override(item)  # a malformed key=value is a config error before anything runs
    run_benchmark(bench, scale=scale, seeds=list(range(seeds)) if seeds else None, address=address, resume=resume,
                  overrides=list(overrides), console=Console(), command=command_line(name, scale, seeds, overrides),
                  partial=partial)


__all__ = ["main", "run_benchmark"]
