"""Offline means offline: no attune command talks to the network unless the user opts in.

The opt-ins are explicit: ``tracking.wandb=online`` (W&B syncs the run) and ``attune sweep --address`` (a Ray
cluster). Everything else is switched off here, in one place that every command calls first
(:func:`go_offline`, from the CLI's entry point; the sweep and W&B code call it again for library use):

- W&B: runs are ``mode="offline"`` (see :mod:`experiments.tracking`), but W&B's own analytics still post to
  its cloud API (``api.forge.coreweave.com``) even for offline runs; ``WANDB_ERROR_REPORTING=false`` is its
  switch for that.
- Hugging Face: no hub lookups (attune never downloads a model) and no telemetry.
- Ray: no usage-stats report. A local Ray started by attune binds loopback only (Ray refuses 127.0.0.1 as a
  node address on Linux unless its multi-node mode is off) and its dashboard process skips the cloud-provider
  probes (Azure/GCP/AWS metadata servers, ``169.254.169.254`` and ``metadata.google.internal``); Ray 2.60
  has no switch for those, see :func:`start_local_ray`.

Variables are set with ``setdefault``: a value the user exported deliberately wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

OFFLINE_ENVIRONMENT: dict[str, str] = {
    "WANDB_ERROR_REPORTING": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
}
"""Set for every command, whatever the config: none of these is needed for anything attune does."""

LOCAL_RAY_ENVIRONMENT: dict[str, str] = {
    # Ray's switch for single-node (Windows/macOS style) clusters: node address 127.0.0.1, every Ray process
    # listening on loopback only. Read when ray is first imported, so it is set before that.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
"""Set unless a Ray cluster on another machine is in play (``RAY_ADDRESS``, or ``attune sweep --address``)."""

_defaulted: set[str] = set()  # the variables this module set (not the user): only these are ever taken back


def _setdefault(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        _defaulted.add(name)


def go_offline() -> None:
    """Switch every library attune uses to offline; call before importing W&B, Ray or Hugging Face code."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        _setdefault(name, value)
    if not is_remote_address(os.environ.get("RAY_ADDRESS")):
        for name, value in LOCAL_RAY_ENVIRONMENT.items():
            _setdefault(name, value)


def is_remote_address(address: str | None) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port``) names another machine than this one."""
    if not address or address in ("auto", "local"):
        return False
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]") or address
    return host not in ("localhost", "::1") and not host.startswith("127.")


def allow_ray_cluster() -> None:
    """Undo the local-only Ray setting before connecting to a cluster on another machine.

    Only what attune set is undone. A cluster on this machine (``127.0.0.1:6379``) keeps it: Ray would
    otherwise replace 127.0.0.1 by the machine's network address, which a loopback-only head does not serve.
    Call before Ray is imported.
    """
    for name in LOCAL_RAY_ENVIRONMENT:
        if name in _defaulted:
            os.environ.pop(name, None)
            _defaulted.discard(name)


def offline_environment() -> dict[str, str]:
    """The offline variables as they are now: for processes started elsewhere (trials on a cluster's nodes)."""
    return {name: os.environ[name] for name in OFFLINE_ENVIRONMENT if name in os.environ}


BOOTSTRAP_CONFIG = """\
# Written by attune for a local, single-node Ray. Ray's dashboard looks for this file (the autoscaler's
# bootstrap config) in HOME and, when it is missing, asks the cloud metadata servers (169.254.169.254,
# metadata.google.internal) which cloud it runs on; with it, it asks nothing.
provider: {type: local}
"""


def start_local_ray(temp_dir: str, env_vars: dict[str, str] | None = None, **init_kwargs: Any) -> None:
    """``ray.init`` a local Ray that stays on this machine: loopback, no usage report, no cloud probes.

    Ray's dashboard process (started even with ``include_dashboard=False``, for usage stats) probes the cloud
    metadata servers unless ``~/ray_bootstrap_config.yaml`` exists, and Ray 2.60 has no setting to stop it.
    So Ray's own processes (GCS, raylet, dashboard) start with HOME set to a folder under Ray's temp dir
    holding that file, and every worker gets the real HOME back through the runtime environment (with
    ``env_vars``).
    """
    go_offline()
    ray_home = Path(temp_dir) / "attune-home"
    ray_home.mkdir(parents=True, exist_ok=True)
    (ray_home / "ray_bootstrap_config.yaml").write_text(BOOTSTRAP_CONFIG)
    real_home = os.environ.get("HOME") or str(Path.home())
    import ray

    os.environ["HOME"] = str(ray_home)
    try:
        ray.init(include_dashboard=False, _temp_dir=temp_dir,
                 runtime_env={"env_vars": {"HOME": real_home, **(env_vars or {})}}, **init_kwargs)
    finally:
        os.environ["HOME"] = real_home
