"""Which run and which checkpoint ``attune run ... resume=true`` continues from.

Checkpoints are published atomically while training (see :mod:`agents.checkpoints`), so a killed run's newest
``checkpoint-N`` is normally complete. A folder that is not (written by an older attune, or damaged) is
skipped with one line saying so, and the run continues from the newest complete checkpoint before it; a save
cut short in the staging folder is simply not a checkpoint. The metrics logged after the chosen checkpoint
are dropped by :class:`~experiments.tracking.RunTracker`, so those steps run again and are logged once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from agents.checkpoints import STAGING_DIR, checkpoint_folders, checkpoint_problem, checkpoint_step
from experiments.config import ConfigError, ExperimentConfig
from experiments.tracking import run_name


def newest_complete_checkpoint(checkpoints_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete ``checkpoint-N`` in ``checkpoints_dir`` (None if there is none), and the newer
    folders passed over, each with the reason: incomplete checkpoints and a save cut short while staged."""
    skipped: list[tuple[Path, str]] = []
    newest = None
    for folder in reversed(checkpoint_folders(checkpoints_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            newest = folder
            break
        skipped.append((folder, problem))
    staging = checkpoints_dir / STAGING_DIR
    for folder in checkpoint_folders(staging):
        if newest is None or checkpoint_step(folder) > checkpoint_step(newest):
            skipped.append((folder, "its save was cut short"))
    skipped.sort(key=lambda item: -(checkpoint_step(item[0]) or 0))
    return newest, skipped


def find_run_to_resume(config: ExperimentConfig, report: Callable[[str], None] = print) -> tuple[Path, Path]:
    """The unfinished run folder to continue and its newest complete checkpoint. Raises :class:`ConfigError`.

    Incomplete checkpoints newer than the one chosen are passed over with one line through ``report``.
    """
    runs_dir = Path(config.tracking.runs_dir)
    if config.tracking.name:
        candidates = [runs_dir / config.tracking.name]
    else:
        prefix = run_name(config).rsplit("__", 1)[0] + "__"
        candidates = sorted((p for p in runs_dir.glob(prefix + "*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    unfinished = [p for p in candidates if p.is_dir() and not (p / "eval.json").exists()]
    if not unfinished:
        raise ConfigError(
            f"resume=true: no unfinished run of experiment {config.experiment!r} in {runs_dir}/; "
            "start one without resume (set checkpoint_every to save checkpoints), or name it with tracking.name"
        )
    run_dir = unfinished[-1]
    checkpoint, skipped = newest_complete_checkpoint(run_dir / "checkpoints")
    passed_over = ", ".join(f"{folder.name} ({problem})" for folder, problem in skipped)
    if checkpoint is None:
        raise ConfigError(f"resume=true: {run_dir} has no complete checkpoint yet"
                          + (f" (incomplete: {passed_over})" if skipped else "") + "; start it again without resume")
    if skipped:
        report(f"resume: skipping incomplete {passed_over}; continuing from {checkpoint.name}")
    return run_dir, checkpoint


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return checkpoint_step(checkpoint) if checkpoint is not None else None
