"""Checks of what a run needs from this machine, made before anything is loaded or written: a runs folder
it can write into, W&B credentials when tracking online, and enough distinct prompts from the users and
tasks configured. Each raises :class:`~experiments.config.ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import configparser
import netrc
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from experiments.config import ConfigError, ExperimentConfig


def check_runs_dir(runs_dir: str | Path) -> None:
    """``tracking.runs_dir`` must be a folder (or creatable as one) that this user can write into."""
    path = Path(runs_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"tracking.runs_dir: {str(path)!r} is a file, not a folder; point it at a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"tracking.runs_dir: {str(path)!r} cannot be created: {str(existing)!r} is a file")
    # Try it: permission bits say nothing to root, nor about read-only mounts and kernel filesystems.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".attune-write-check-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"tracking.runs_dir: {str(existing)!r} is not writable ({exc.strerror}); "
                          "choose a folder you can write to") from None


def wandb_credentials_found() -> bool:
    """Whether ``wandb`` could log in without asking: an API key in the environment, ~/.netrc or its settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else [os.path.expanduser("~/.netrc"),
                                                                       os.path.expanduser("~/_netrc")]
    for candidate in candidates:
        try:
            entry = netrc.netrc(candidate).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if entry and entry[2]:
            return True
    settings = configparser.ConfigParser()
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.expanduser("~/.config/wandb")
    try:
        settings.read(os.path.join(config_dir, "settings"))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False
    return bool(settings.get("default", "api_key", fallback=""))


def distinct_openings(population: Any, users: Any, at_least: int) -> int:
    """How many distinct opening messages ``users`` give over the population's tasks (as ``env.reset`` draws
    them), counting only until ``at_least`` are found: fast when there are enough, exact when there are not."""
    seen: set[tuple[str, str]] = set()
    for profile in users:
        user = population.simulated_user(profile.user_id)
        for task in population.tasks:
            seen.add((task.task_id, user.ask(task)))
        if len(seen) >= at_least:
            break
    return len(seen)


def check_prompt_supply(config: ExperimentConfig, population: Any, training_prompts: bool = True) -> None:
    """``prompts`` and ``evaluation.prompts`` must not ask for more distinct conversations than the users and
    tasks give: prompts are drawn by resetting the env until that many distinct ones are found."""
    wanted = [("prompts", config.prompts, population.train_users, "training")] if training_prompts else []
    if config.evaluation.enabled:
        wanted.append(("evaluation.prompts", config.evaluation.prompts, population.held_out_users, "held-out"))
    for field, n, users, which in wanted:
        available = distinct_openings(population, users, n)
        if n > available:
            raise ConfigError(
                f"{field}: {n} asked for, but the {len(users)} {which} users and {len(population.tasks)} tasks give "
                f"only {available} distinct opening prompts; use {field}<={available} or more users (users.n_users)"
            )


def check_tracking(config: ExperimentConfig) -> None:
    """What the run folder and W&B need from this machine, checked before anything is loaded or written."""
    check_runs_dir(config.tracking.runs_dir)
    if config.tracking.wandb == "online" and not wandb_credentials_found():
        raise ConfigError("tracking.wandb=online: no W&B API key found (WANDB_API_KEY or ~/.netrc); run `wandb login` "
                          "first, or use tracking.wandb=offline (upload later with `wandb sync`)")
