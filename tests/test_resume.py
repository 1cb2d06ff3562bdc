"""Resuming a killed run: checkpoints are published atomically, and resume takes the newest complete one."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agents.checkpoints import STAGING_DIR, checkpoint_problem, publish_checkpoint, rotate_complete_checkpoints
from experiments.checkpoints import find_run_to_resume, newest_complete_checkpoint
from experiments.config import ConfigError
from experiments.config_files import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")


def make_checkpoint(folder: Path, step: int, *, state: str | None = "ok", weights: str = "model.safetensors") -> Path:
    """A fabricated ``checkpoint-<step>`` in ``folder``; ``state``: "ok", "cut" (truncated JSON) or None (absent)."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    if weights:
        (checkpoint / weights).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / weights).write_bytes(b"\0" * 64)
    if state == "ok":
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    elif state == "cut":
        (checkpoint / "trainer_state.json").write_text('{"global_step": %d, "log_hist' % step)
    return checkpoint


# --- which checkpoint resume picks -------------------------------------------------------------------------


def test_checkpoint_problem_names_what_is_missing(tmp_path):
    assert checkpoint_problem(make_checkpoint(tmp_path, 5)) is None
    assert checkpoint_problem(make_checkpoint(tmp_path, 6, weights="adapter_model.safetensors")) is None
    assert checkpoint_problem(make_checkpoint(tmp_path, 7, weights="default/adapter_model.safetensors")) is None
    assert checkpoint_problem(make_checkpoint(tmp_path, 8, state=None)) == "no trainer_state.json"
    assert checkpoint_problem(make_checkpoint(tmp_path, 9, state="cut")) == "trainer_state.json cut short"
    assert checkpoint_problem(make_checkpoint(tmp_path, 10, weights="")) == "no model weights"
    empty_weights = make_checkpoint(tmp_path, 11)
    (empty_weights / "model.safetensors").write_bytes(b"")
    assert checkpoint_problem(empty_weights) == "no model weights"
    renamed = make_checkpoint(tmp_path, 12)
    renamed.rename(tmp_path / "checkpoint-13")
    assert checkpoint_problem(tmp_path / "checkpoint-13") == "trainer_state.json is for another step"


def test_newest_complete_checkpoint_skips_incomplete_and_staged_ones(tmp_path):
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 15, state=None)  # killed after the weights, before trainer_state.json
    make_checkpoint(tmp_path, 20, state="cut")  # killed while writing trainer_state.json
    make_checkpoint(tmp_path / STAGING_DIR, 25, state=None)  # a save cut short while staged
    make_checkpoint(tmp_path / STAGING_DIR, 5, state=None)  # staged and older than the choice: not worth a word
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    (tmp_path / "final").mkdir()

    newest, skipped = newest_complete_checkpoint(tmp_path)

    assert newest == tmp_path / "checkpoint-10"
    assert [(p.relative_to(tmp_path).as_posix(), why) for p, why in skipped] == [
        (f"{STAGING_DIR}/checkpoint-25", "its save was cut short"),
        ("checkpoint-20", "trainer_state.json cut short"),
        ("checkpoint-15", "no trainer_state.json"),
    ]


def test_newest_complete_checkpoint_with_all_complete_skips_nothing(tmp_path):
    for step in (2, 4, 10):  # sorted by step, not by name ("10" < "4")
        make_checkpoint(tmp_path, step)
    assert newest_complete_checkpoint(tmp_path) == (tmp_path / "checkpoint-10", [])
    assert newest_complete_checkpoint(tmp_path / "missing") == (None, [])


def _config(runs: Path, name: str = "killed"):
    return load_config(TINY, [f"tracking.runs_dir={runs}", f"tracking.name={name}", "resume=true"])


def test_find_run_to_resume_falls_back_with_one_line(tmp_path):
    checkpoints = tmp_path / "killed" / "checkpoints"
    make_checkpoint(checkpoints, 10)
    make_checkpoint(checkpoints, 20, state=None)
    lines: list[str] = []

    run_dir, checkpoint = find_run_to_resume(_config(tmp_path), report=lines.append)

    assert (run_dir, checkpoint) == (tmp_path / "killed", checkpoints / "checkpoint-10")
    assert lines == ["resume: skipping incomplete checkpoint-20 (no trainer_state.json); continuing from checkpoint-10"]


def test_find_run_to_resume_is_silent_when_the_newest_is_complete(tmp_path):
    make_checkpoint(tmp_path / "killed" / "checkpoints", 10)
    lines: list[str] = []
    assert find_run_to_resume(_config(tmp_path), report=lines.append)[1].name == "checkpoint-10"
    assert lines == []


def test_find_run_to_resume_without_a_complete_checkpoint_says_what_to_do(tmp_path):
    make_checkpoint(tmp_path / "killed" / "checkpoints", 5, state=None)
    with pytest.raises(ConfigError) as error:
        find_run_to_resume(_config(tmp_path), report=pytest.fail)
    assert str(error.value) == (
        f"resume=true: {tmp_path / 'killed'} has no complete checkpoint yet (incomplete: checkpoint-5 "
        "(no trainer_state.json)); start it again without resume"
    )


# --- publishing and rotation ---------------------------------------------------------------------------------


def test_rotation_counts_complete_checkpoints_only_and_keeps_the_newest_complete(tmp_path):
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 15, state=None)
    make_checkpoint(tmp_path, 20)
    make_checkpoint(tmp_path, 25, state=None)  # newer than every complete one (left by an older attune)

    deleted = rotate_complete_checkpoints(tmp_path, keep=1, protected=set())

    # transformers' own rotation would keep checkpoint-25 as "the most recent" and could delete checkpoint-20
    assert sorted(p.name for p in deleted) == ["checkpoint-10", "checkpoint-15", "checkpoint-5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-25"]


def test_rotation_keeps_protected_checkpoints_and_does_nothing_without_a_limit(tmp_path):
    for step in (5, 10, 15):
        make_checkpoint(tmp_path, step)
    assert rotate_complete_checkpoints(tmp_path, keep=None, protected=set()) == []
    assert rotate_complete_checkpoints(tmp_path, keep=2, protected={tmp_path / "checkpoint-5"}) == [tmp_path / "checkpoint-10"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-15", "checkpoint-5"]


def test_publish_replaces_a_leftover_folder_of_the_same_step(tmp_path):
    make_checkpoint(tmp_path, 20, state=None)  # a cut-short folder from before, in the way
    staged = make_checkpoint(tmp_path / STAGING_DIR, 20)
    publish_checkpoint(staged, tmp_path / "checkpoint-20")
    assert checkpoint_problem(tmp_path / "checkpoint-20") is None
    assert not staged.exists() and sorted(p.name for p in (tmp_path / STAGING_DIR).iterdir()) == []


# --- real runs, killed -----------------------------------------------------------------------------------------


def _train_steps(metrics: Path) -> list[int]:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["step"] for r in records if r["phase"] == "train" and "loss" in r]


def _kill_when(args: list[str], ready, timeout: float = 300) -> None:
    """Start ``attune run`` and SIGKILL its whole process group as soon as ``ready()`` is true."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                               start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed")
            if time.time() > deadline:
                pytest.fail("the run never reached the point where it is killed")
            time.sleep(0.002)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _steps_in(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:  # not created yet, or the staging folder just removed
        return []
    return [int(n.split("-")[1]) for n in names if n.startswith("checkpoint-") and n.split("-")[1].isdigit()]


def test_run_killed_while_saving_a_checkpoint_resumes_from_the_one_before(attune_cli, tmp_path):
    """A real race: the run is SIGKILLed the moment its second checkpoint save begins (checkpoint_every=2:
    the save at step 4), so checkpoint-2 is the last complete one. If the save finished before the kill
    landed, the race was lost: try again with a new run. The resumed run continues the same folder, reuses
    the base policy's evaluation, and logs every training step exactly once."""
    max_steps = 8
    for attempt in range(4):
        runs = tmp_path / f"attempt{attempt}"
        checkpoints = runs / "killed" / "checkpoints"
        args = [attune_cli, "run", TINY, f"tracking.runs_dir={runs}", "tracking.name=killed", "policy.model=tiny-random",
                f"trainer.max_steps={max_steps}", "checkpoint_every=2", "evaluation.prompts=2"]

        def saving_step_4() -> bool:
            # staged (this version) or a checkpoint-4 folder appearing (a version writing in place)
            return max(_steps_in(checkpoints / STAGING_DIR) + _steps_in(checkpoints), default=0) >= 4

        _kill_when(args, saving_step_4)
        newest, skipped = newest_complete_checkpoint(checkpoints)
        if newest is not None and newest.name == "checkpoint-2" and skipped:
            break  # killed during the save of step 4
    else:
        pytest.fail("four runs were never killed during a checkpoint save")
    assert not (checkpoints / "checkpoint-4").exists()  # never published half-written
    assert (runs / "killed" / "metrics.jsonl").is_file() and max(_train_steps(runs / "killed" / "metrics.jsonl")) >= 4

    base_evaluated = (runs / "killed" / "eval_before.json").stat().st_mtime_ns

    result = subprocess.run(args + ["resume=true"], capture_output=True, text=True, timeout=600, cwd=REPO)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = " ".join(result.stdout.split())  # rich wraps long lines
    assert "resume: skipping incomplete checkpoint-4 (its save was cut short); continuing from checkpoint-2" in printed
    assert "(resuming from checkpoint-2)" in printed
    assert _train_steps(runs / "killed" / "metrics.jsonl") == list(range(1, max_steps + 1))  # each step once
    assert (runs / "killed" / "eval_before.json").stat().st_mtime_ns == base_evaluated  # reused, not redone
    assert json.loads((runs / "killed" / "eval.json").read_text())["after"]
    assert sorted(p.name for p in runs.iterdir()) == ["killed"]  # continued in place, nothing new
    assert not (checkpoints / STAGING_DIR).exists()
    assert all(checkpoint_problem(checkpoints / f"checkpoint-{s}") is None for s in _steps_in(checkpoints))
    assert sorted(_steps_in(checkpoints)) == [6, 8]  # save_total_limit 2, complete ones only


def test_resume_without_a_run_says_what_to_do(attune_cli, tmp_path):
    result = subprocess.run([attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path}", "resume=true"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert "resume=true: no unfinished run of experiment 'tiny'" in result.stderr
