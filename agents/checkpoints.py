"""Checkpoints that are either complete or absent, whenever the process is killed.

transformers' ``Trainer._save_checkpoint`` writes straight into ``<output_dir>/checkpoint-N``: the weights,
then the optimizer, scheduler and RNG states, and ``trainer_state.json`` last. A run killed half way leaves
a ``checkpoint-N`` folder that resuming picks as the newest and then fails on (``Can't find a valid
checkpoint``), and ``save_total_limit`` rotation, which counts that folder and protects the most recent one,
may already have deleted the last good checkpoint to make room for it.

Design: :func:`atomic_checkpoints` wraps a TRL trainer class so that each checkpoint is *staged* in
``<output_dir>/.saving/checkpoint-N`` (the trainer's own saving code runs unchanged: only the folder it is
told to save into changes), its files are flushed to disk, and the folder is then renamed to
``<output_dir>/checkpoint-N`` in one ``os.replace``. So a ``checkpoint-N`` folder only ever appears
complete, on a SIGKILL as on a power cut. The staging folder is not named ``checkpoint-*``, so neither
transformers nor attune ever mistakes it for a checkpoint; it is thrown away at the next save or when
training starts again. Rotation then runs over complete checkpoints only and always keeps the one just
written. A sentinel file written last inside ``checkpoint-N`` would also mark completeness, but every
reader (transformers' ``get_last_checkpoint``, rotation, users' scripts) would have to know to look
for it; a rename needs no cooperation.

:func:`checkpoint_problem` is the reader's side: why a ``checkpoint-N`` folder cannot be resumed from
(folders from older attune versions, or copied by hand, may still be incomplete).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STAGING_DIR = ".saving"
"""Folder inside the trainer's output_dir where a checkpoint is written before it is published."""

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")

# transformers' names for model weights (plain, sharded, PEFT adapter); one of them is in every checkpoint.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def checkpoint_step(folder: Path) -> int | None:
    """N for a folder named ``checkpoint-N``, else None."""
    match = CHECKPOINT_NAME.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` (a ``checkpoint-N``) cannot be resumed from, in a few words; None if it is complete.

    Complete means: ``trainer_state.json`` (the file transformers writes last) parses and records step N,
    and a non-empty model or adapter weights file is there.
    """
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json cut short"
    if not isinstance(state, dict) or state.get("global_step") != checkpoint_step(folder):
        return "trainer_state.json is for another step"
    weights = [folder / name for name in WEIGHT_FILES]
    weights += [sub / name for sub in folder.iterdir() if sub.is_dir() for name in WEIGHT_FILES[4:]]  # one per adapter
    if not any(path.is_file() and path.stat().st_size > 0 for path in weights):
        return "no model weights"
    return None


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``output_dir``, complete or not, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p))


def rotate_complete_checkpoints(output_dir: Path, keep: int | None, protected: set[Path]) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``keep``, and incomplete ones older than the newest
    complete one (nothing can resume from them). ``protected`` folders are never deleted. Returns the deleted."""
    if not keep or keep <= 0:
        return []
    folders = checkpoint_folders(output_dir)
    complete = [p for p in folders if checkpoint_problem(p) is None]
    if not complete:
        return []  # nothing to fall back to: keep everything
    protected = {p.resolve() for p in protected} | {complete[-1].resolve()}
    surplus = len(complete) - keep
    doomed = []
    for folder in complete:
        if surplus <= 0:
            break
        if folder.resolve() not in protected:
            doomed.append(folder)
            surplus -= 1
    newest = checkpoint_step(complete[-1])
    doomed += [p for p in folders if p not in complete and checkpoint_step(p) < newest and p.resolve() not in protected]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


def _flush_to_disk(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (so the rename never publishes data still in memory)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the file data is flushed already
    finally:
        os.close(fd)


def publish_checkpoint(staged: Path, target: Path) -> None:
    """Move a fully written checkpoint folder ``staged`` to ``target`` in one rename.

    A ``target`` already there (a cut-short folder from an older attune, or one left by a run that went back
    to an earlier checkpoint) is renamed aside first and deleted after: a complete checkpoint is never
    deleted before its replacement is in place.
    """
    _flush_to_disk(staged)
    replaced = None
    if target.exists():
        replaced = staged.parent / f"replaced-{target.name}"
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(target, replaced)
    os.replace(staged, target)
    _fsync_dir(target.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


class AtomicCheckpoints:
    """Mixin for a transformers ``Trainer`` subclass: checkpoints are staged, then published by a rename.

    Put it first in the bases (:func:`atomic_checkpoints` does) so that it wraps the TRL trainer's own
    ``_save_checkpoint`` (GRPO's adaptive-entropy state and every other file land in the staged folder).
    """

    _staging_parent: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # Trainer._save_checkpoint saves into join(_get_output_dir(trial), "checkpoint-N"): redirecting it is
        # enough to stage the whole checkpoint, whatever the trainer subclass writes into it.
        if self._staging_parent is not None:
            return self._staging_parent
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        if self.args.should_save:  # a save cut short by a kill: nothing can use it
            shutil.rmtree(Path(self.args.output_dir) / STAGING_DIR, ignore_errors=True)
        return super().train(*args, **kwargs)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        output_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        staging = output_dir / STAGING_DIR
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_parent = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_parent = None
        self.accelerator.wait_for_everyone()  # every process has written its part
        if not self.args.should_save:
            return
        target = output_dir / name
        best = self.state.best_model_checkpoint
        if best is not None and Path(best) == staging / name:  # recorded while staged: point at the published folder
            self.state.best_model_checkpoint = str(target)
            self.state.save_to_json(str(staging / name / "trainer_state.json"))
        publish_checkpoint(staging / name, target)
        shutil.rmtree(staging, ignore_errors=True)
        protected = {Path(self.state.best_model_checkpoint)} if self.state.best_model_checkpoint else set()
        rotate_complete_checkpoints(output_dir, self.args.save_total_limit, protected | {target})


@functools.cache
def atomic_checkpoints(trainer_class: type) -> type:
    """``trainer_class`` with :class:`AtomicCheckpoints` mixed in (same name, so logs and model cards read the same)."""
    return type(trainer_class.__name__, (AtomicCheckpoints, trainer_class), {"__module__": __name__})
