"""Run folders, metrics files and W&B: every run is tracked the same way, whatever the method.

A run folder ``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON
object per logged step), ``eval.json``, ``checkpoints/`` and ``wandb/`` (an offline W&B run unless the
user opted into online). W&B never touches the network in offline mode; ``wandb sync runs/<name>/wandb``
uploads later.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

from experiments import redact
from experiments.config import ExperimentConfig
from experiments.config_files import dump_config


@dataclasses.dataclass
class RunResult:
    """What a finished run hands back: its folder and its evaluation summary (``eval.json``)."""

    run_dir: Path
    eval: dict[str, Any]
    reward_functions: list[Any] = dataclasses.field(default_factory=list)
    """The reward functions the run trained on (built once; reused by compare-rewards)."""
    variants: list[RunResult] = dataclasses.field(default_factory=list)


def wandb_settings() -> Any:
    """W&B settings for every attune run: no console capture, no system stats, no git probing, and a short
    finish timeout so that Ctrl-C or an unreachable server never hangs a run (or a sweep's driver) on exit."""
    import wandb

    from experiments.offline import go_offline

    go_offline()  # W&B's analytics post to its cloud API even for offline runs unless switched off
    return wandb.Settings(console="off", x_disable_stats=True, disable_git=True, init_timeout=120, finish_timeout=30)


def run_name(config: ExperimentConfig, now: _dt.datetime | None = None) -> str:
    """``<experiment>__<Env-vN>__s<seed>__<YYYYmmdd-HHMMSS>`` unless the config names the run."""
    if config.tracking.name:
        return config.tracking.name
    now = now or _dt.datetime.now()
    env_short = config.env.id.split("/")[-1]
    return f"{config.experiment}__{env_short}__s{config.seed}__{now:%Y%m%d-%H%M%S}"


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """A new, empty run folder. An existing folder is never reused: ``-2``, ``-3``... are appended."""
    if not re.fullmatch(r"[A-Za-z0-9._=+-]+", name):
        raise ValueError(f"tracking.name {name!r}: use letters, digits and . _ = + - only")
    runs_dir.mkdir(parents=True, exist_ok=True)
    candidate, k = runs_dir / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1
            candidate = runs_dir / f"{name}-{k}"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunTracker:
    """Writes a run's files and mirrors every metric to W&B; every text goes through :func:`experiments.redact.redact`
    first (the config is settings, no users' texts, and is written as it is)."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, resume_step: int | None = None) -> None:
        """Start tracking ``run_dir``; with ``resume_step``, continue it from that training step.

        Resuming drops the metrics logged after the checkpoint (those steps run again), so the history
        has neither gaps nor duplicates, and continues the same W&B run.
        """
        self.config = config
        self.run_dir = run_dir
        self.last_step = 0
        metrics_path = run_dir / "metrics.jsonl"
        if resume_step is None or not (run_dir / "config.yaml").exists():
            (run_dir / "config.yaml").write_text(dump_config(config))
        if resume_step is not None and metrics_path.exists():
            kept = []
            for line in metrics_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the kill
                if record.get("phase") == "eval" or record.get("step", 0) <= resume_step:
                    kept.append(line)
            metrics_path.write_text("".join(line + "\n" for line in kept))
            self.last_step = resume_step
        self._metrics = metrics_path.open("a", buffering=1)
        self.wandb_run = None
        if config.tracking.wandb != "disabled":
            self.wandb_run = self._start_wandb(resume=resume_step is not None)

    def _start_wandb(self, resume: bool = False) -> Any:
        import wandb

        id_file = self.run_dir / "wandb" / "run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else secrets.token_hex(4)
        id_file.parent.mkdir(exist_ok=True)
        id_file.write_text(run_id)
        # mode="offline" is enough: no WANDB_MODE variable, which would make transformers print a banner.
        mode = self.config.tracking.wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        options = dict(project=self.config.tracking.project, name=self.run_dir.name, group=self.config.experiment,
                       dir=str(self.run_dir), config=self.config.model_dump(mode="json"), mode=mode, id=run_id,
                       resume="allow", settings=wandb_settings())
        try:
            return wandb.init(**options)
        except Exception as exc:
            # A process that inherited WANDB_SERVICE shares its parent's W&B service; a run killed there keeps its
            # stream open in that service, so resuming it answers "run ID ... is in use". A service of this
            # process's own has no such stream: drop the inherited one and start again.
            if "is in use" not in str(exc) or not os.environ.pop("WANDB_SERVICE", None):
                raise
            wandb.teardown()
            return wandb.init(**options)

    def log(self, metrics: dict[str, Any], step: int, phase: str = "train") -> None:
        self.last_step = max(self.last_step, step)
        record = {"step": step, "phase": phase, **{k: redact.redact_data(_jsonable(v)) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            numeric = {f"{phase}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
            self.wandb_run.log(numeric, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            for key, value in values.items():
                self.wandb_run.summary[key] = redact.redact_data(value)

    def log_images(self, paths: list[Path]) -> None:
        if self.wandb_run is not None and paths:
            import wandb

            self.wandb_run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in paths})

    def write_json(self, filename: str, data: Any) -> Path:
        path = self.run_dir / filename
        path.write_text(json.dumps(redact.redact_data(data), indent=2, default=_jsonable) + "\n")
        return path

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None


class TermsRecorder:
    """Collects the utility terms that reward functions report, until the next logging step."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def __call__(self, reward_name: str, terms: dict[str, float]) -> None:
        for term, value in terms.items():
            key = f"rewards/{reward_name}/{term}"
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def drain(self) -> dict[str, float]:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return means


def tracking_callback(tracker: RunTracker, terms: TermsRecorder) -> Any:
    """A transformers ``TrainerCallback`` that sends the trainer's logs (and reward terms) to the run."""
    from transformers import TrainerCallback

    class _TrackingCallback(TrainerCallback):
        # Methods that train in rounds (iterative DPO, SFT per group) run several trainers, each counting
        # from step 0; the offset keeps the run's step axis increasing.
        def __init__(self) -> None:
            self.offset = 0

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if not logs:
                return
            tracker.log({**logs, **terms.drain()}, step=self.offset + state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.offset += state.global_step

    return _TrackingCallback()


def learning_curve_callback(every: int, score: Any, tracker: RunTracker) -> Any:
    """A ``TrainerCallback`` that scores the policy on held-out users every ``every`` optimizer steps.

    ``score(model)`` returns a held-out mean utility. Steps are counted across the trainers of methods
    that train in rounds. Scoring pauses the clock: ``points`` hold the training seconds before each
    score, ``paused`` the seconds spent scoring. The last step of a trainer is left to the final
    evaluation. Sampling runs on its own RNG stream, so training is the same with or without a curve.
    """
    import time

    from transformers import TrainerCallback

    class _LearningCurve(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.paused = 0.0
            self.steps = 0
            self.points: list[dict[str, float]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.steps += 1
            if self.steps % every or state.global_step >= state.max_steps or model is None:
                return
            clock = time.perf_counter()
            seconds = clock - self.started - self.paused
            # PPO trains a policy-and-value wrapper; its policy is what replies.
            utility = score(getattr(model, "policy", model))
            self.paused += time.perf_counter() - clock
            self.points.append({"step": self.steps, "seconds": seconds, "mean_utility": utility})
            tracker.log({"mean_utility": utility, "train_seconds": seconds}, step=self.steps, phase="curve")

    return _LearningCurve()


def progress_callback(console: Any = None) -> Any:
    """A transformers ``TrainerCallback`` drawing one rich progress bar with the latest reward and loss."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class _ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.progress = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
            )
            self.progress.start()
            self.task = self.progress.add_task("training", total=state.max_steps, status="", completed=state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if self.progress is None or not logs:
                return
            parts = []
            reward = logs.get("reward", logs.get("objective/scores"))  # PPO logs its reward as objective/scores
            if reward is not None:
                parts.append(f"reward {reward:+.3f}")
            if "loss" in logs:
                parts.append(f"loss {logs['loss']:.4f}")
            if parts:
                self.progress.update(self.task, status=" ".join(parts))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
                self.progress = None

    return _ProgressCallback()


def replace_default_progress(trainer: Any) -> None:
    """Drop transformers' own progress bar and log printer: attune draws its own and logs to the run."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
