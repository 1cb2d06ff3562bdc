"""A sweep's results: the trials best first (``sweep_results.md``/``.json``, console, W&B) and ``best_config.yaml``.

:func:`results_table` turns Ray Tune's result grid into rows; :func:`sweep_table` renders them through the
one table renderer; :func:`write_results` writes the files (the best configuration as a YAML that is
loaded back before it is written, so it runs as written); :func:`console_progress` prints a line per
finished or failed trial while the sweep runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.config import ExperimentConfig
from experiments.config_files import apply_override, load_config
from experiments.tables import Column, Table, log_tables_to_wandb


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


def sweep_table(rows: list[dict[str, Any]], metric: str, mode: str = "max") -> Table:
    """The trials, best first: each swept key, the metric, the status (with the error of a failed trial)."""
    keys = [k for k in rows[0] if k not in ("trial", "status", metric, "run_dir", "error")] if rows else []
    return Table(
        [Column("trial", align="left"), *[Column(k, align="left") for k in keys],
         Column(metric, format="{:+.4f}", missing="-"),
         Column("status", align="left", format=lambda r: r["status"] + (f": {r['error']}" if r.get("error") else ""),
                console_width=70)],
        rows,
        title=f"sweep results, best first ({metric}, {mode})",
    )


def write_results(folder: Path, rows: list[dict[str, Any]], config: ExperimentConfig, config_path: Path,
                  metric: str, seconds: float) -> None:
    table = sweep_table(rows, metric, config.sweep.mode)
    (folder / "sweep_results.json").write_text(table.to_json())
    keys = [k for k in rows[0] if k not in ("trial", "status", metric, "run_dir", "error")] if rows else []
    (folder / "sweep_results.md").write_text(
        f"# Sweep {folder.name}\n\nSorted by {metric} ({config.sweep.mode}); {len(rows)} trials in {seconds:.0f} s.\n\n"
        + table.to_markdown(title=False))
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
    log_tables_to_wandb(config.tracking, folder, f"{folder.name}-summary", folder.name, {"sweep_results": table})


def print_results(console: Any, rows: list[dict[str, Any]], folder: Path, metric: str, mode: str = "max") -> None:
    console.print(sweep_table(rows, metric, mode).to_rich())
    if (folder / "best_config.yaml").exists():
        console.print(f"best config: [cyan]{folder / 'best_config.yaml'}[/]")


def console_progress(metric: str) -> Any:
    """A Tune callback printing one line per finished or failed trial (Tune itself runs with verbose=0)."""
    from ray import tune

    class _ConsoleProgress(tune.Callback):
        def __init__(self, metric: str) -> None:
            self.metric = metric

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            value = (trial.last_result or {}).get(self.metric)
            shown = f"{value:+.4f}" if isinstance(value, (int, float)) else "-"
            print(f"trial {trial.trial_id} done: {self.metric} {shown}", flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"trial {trial.trial_id} failed (the other trials go on)", flush=True)

    return _ConsoleProgress(metric)
