"""`attune sweep --address`: a real `ray start --head` cluster (token auth, as Ray 2.60 starts it), and addresses
where no cluster answers.

The cluster test starts its own head in its own process group and stops exactly that group: never `ray stop`,
which would kill every Ray process on the machine, other tests' clusters included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "experiments" / "configs" / "sweep.yaml"
TINY_SWEEP = ["sweep.space={}", "sweep.seeds=[0, 1]", "trainer.max_steps=1", "evaluation.prompts=2",
              "evaluation.max_new_tokens=4"]


def user_environment(**extra: str) -> dict[str, str]:
    """A user's shell: none of the Ray/W&B switches the test session sets for itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_where_nothing_listens_fails_fast_with_one_line(attune_cli, tmp_path):
    started = time.perf_counter()
    result = subprocess.run([attune_cli, "sweep", str(SWEEP), "--address", "127.0.0.1:1", f"tracking.runs_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=120, cwd=REPO, env=user_environment())
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ray cluster: --address 127.0.0.1:1: no Ray cluster answers there (connection refused)")
    assert "ray start --head --port=1" in lines[0]
    assert seconds < 30
    assert not list(tmp_path.glob("*/trials/*"))


@pytest.mark.slow  # ~20 s of waiting for an answer that never comes
def test_an_address_where_something_else_listens_fails_in_one_line(attune_cli, tmp_path):
    with socket.socket() as listener:  # accepts connections (the kernel does) but never speaks Ray's protocol
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.perf_counter()
        result = subprocess.run([attune_cli, "sweep", str(SWEEP), "--address", address, f"tracking.runs_dir={tmp_path}"],
                                capture_output=True, text=True, timeout=120, cwd=REPO, env=user_environment())
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ray cluster: --address {address}: something listens there"), lines
    assert time.perf_counter() - started < 40


@pytest.fixture
def ray_head(tmp_path):
    """A token-authenticated `ray start --head` on loopback, in a HOME of its own; yields (address, HOME)."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    home = tmp_path / "head-home"
    home.mkdir()
    temp_dir = Path(f"/tmp/ray-head-{os.getpid()}")  # short: Ray's socket paths must stay under the OS limit
    # The loopback switch keeps the head off the network; the token makes `ray start` enable token auth.
    env = user_environment(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    assert (home / ".ray" / "auth_token").is_file()
    port = free_port()
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp_dir}", f"--dashboard-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "Token authentication is enabled" in (tmp_path / "head.log").read_text()
        yield f"127.0.0.1:{port}", home, temp_dir
    finally:
        # Only the head's own process group: SIGTERM lets it stop its children, SIGKILL makes sure.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        head.wait(timeout=60)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_sweep_runs_on_a_token_cluster_and_names_the_setting_when_the_token_is_missing(attune_cli, ray_head, tmp_path):
    address, home, temp_dir = ray_head
    # The user who started the head runs the sweep: the token is where `ray start` left it (~/.ray/auth_token).
    result = subprocess.run([attune_cli, "sweep", str(SWEEP), "--address", address, f"tracking.runs_dir={tmp_path}",
                             *TINY_SWEEP], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=user_environment(HOME=str(home)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"(cluster {address})" in result.stdout
    rows = json.loads((tmp_path / "sweep-sweep" / "sweep_results.json").read_text())
    assert sorted(r["seed"] for r in rows) == [0, 1] and all(r["status"] == "done" for r in rows)
    for row in rows:
        assert (Path(row["run_dir"]) / "eval.json").is_file()
    assert list((temp_dir / "session_latest" / "logs").glob("worker-*"))  # the trials ran on the head's workers

    # Another user (another HOME, no RAY_AUTH_TOKEN): one line naming the setting, not minutes of retries.
    stranger = tmp_path / "stranger-home"
    stranger.mkdir()
    started = time.perf_counter()
    result = subprocess.run([attune_cli, "sweep", str(SWEEP), "--address", address,
                             f"tracking.runs_dir={tmp_path / 'stranger'}", *TINY_SWEEP],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env=user_environment(HOME=str(stranger)))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "wants Ray's auth token" in lines[0] and "RAY_AUTH_TOKEN" in lines[0], result.stderr
    assert time.perf_counter() - started < 60

    # ... and the setting it names is enough.
    token = (home / ".ray" / "auth_token").read_text().strip()
    result = subprocess.run([attune_cli, "sweep", str(SWEEP), "--address", address,
                             f"tracking.runs_dir={tmp_path / 'with-token'}", *TINY_SWEEP, "sweep.seeds=[0]"],
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=user_environment(HOME=str(stranger), RAY_AUTH_TOKEN=token))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
