"""Offline means offline: `attune run` and `attune sweep` make no network request and bind nothing public.

Every proxy variable points at a recorder on 127.0.0.1 that notes each connection it gets (a CONNECT for
HTTPS, the request line for plain HTTP): libraries that honour proxies (requests, urllib, W&B's service)
would all go through it. gRPC connections inside Ray ignore proxies, so the process tree's sockets are
watched too: nothing may connect to, or listen on, an address other than loopback.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "configs" / "tiny.yaml"
SWEEP = REPO / "experiments" / "configs" / "sweep.yaml"
TINY_RUN = ["trainer.max_steps=1", "evaluation.prompts=2", "evaluation.max_new_tokens=4"]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class RequestRecorder(socketserver.ThreadingTCPServer):
    """A stand-in HTTP proxy on loopback that records the first line of every connection and refuses it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RecordingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            first = self.rfile.readline(2048).decode("latin-1").strip()
        except OSError:
            first = ""
        with self.server.lock:
            self.server.requests.append(first or "<connection without a request line>")
        try:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass


def _non_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as dual-stack sockets show IPv4 loopback
    return not (ip.is_loopback or (mapped is not None and mapped.is_loopback))


class SocketWatcher:
    """Polls the sockets of a process and all its descendants (Ray's GCS, raylet, workers, W&B's service)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.remote: set[str] = set()
        self.listening: set[str] = set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                processes = []
            for process in processes:
                try:
                    connections = process.net_connections(kind="inet")
                    name = process.name()
                except psutil.Error:
                    continue
                for c in connections:
                    if c.status == psutil.CONN_LISTEN and c.laddr and _non_loopback(c.laddr.ip):
                        self.listening.add(f"{name} listens on {c.laddr.ip}")
                    if c.raddr and _non_loopback(c.raddr.ip):
                        self.remote.add(f"{name} connects to {c.raddr.ip}")
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def user_environment(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the offline switches the test session sets for itself."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "RAY_", "HF_", "TRANSFORMERS_")) and k.lower() not in (
               "no_proxy", *[p.lower() for p in PROXY_VARIABLES])}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def run_watched(args: list[str], env: dict[str, str], timeout: float = 300):
    """Run ``args`` with every proxy variable pointing at a recorder; returns (result, requests, sockets)."""
    recorder = RequestRecorder()
    env = {**env, **{name: recorder.url for name in PROXY_VARIABLES}}
    try:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                   env=env, start_new_session=True)
        watcher = SocketWatcher(process.pid)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            watcher.stop()
        time.sleep(0.5)  # a request sent just before exit still reaches the recorder's log
        return (process.returncode, out, err), list(recorder.requests), sorted(watcher.remote | watcher.listening)
    finally:
        recorder.stop()


def assert_stayed_offline(requests: list[str], sockets: list[str]) -> None:
    if requests or sockets:
        pytest.fail("left the machine or loopback:\n" + "\n".join(
            [f"request via proxy: {r}" for r in requests] + [f"socket: {s}" for s in sockets]), pytrace=False)


@pytest.fixture
def restored_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_offline_switches_are_defaults_the_user_can_override(restored_environment):
    from experiments import offline

    for name in [*offline.OFFLINE_ENVIRONMENT, *offline.LOCAL_RAY_ENVIRONMENT, "RAY_ADDRESS"]:
        os.environ.pop(name, None)
    os.environ["HF_HUB_OFFLINE"] = "0"  # a user who deliberately allows hub downloads
    offline.go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["WANDB_ERROR_REPORTING"] == "false" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    offline.allow_ray_cluster()  # before joining a cluster on another machine
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


@pytest.mark.parametrize("address, remote", [
    (None, False), ("auto", False), ("127.0.0.1:6379", False), ("localhost:6379", False), ("[::1]:6379", False),
    ("ray://127.0.0.1:10001", False), ("10.0.0.5:6379", True), ("ray://head.example:10001", True),
])
def test_which_ray_addresses_are_another_machine(address, remote):
    from experiments.offline import is_remote_address

    assert is_remote_address(address) is remote


def test_attune_run_makes_no_network_request(attune_cli, tmp_path):
    (code, out, err), requests, sockets = run_watched(
        [attune_cli, "run", str(TINY), f"tracking.runs_dir={tmp_path}", *TINY_RUN], user_environment())
    assert code == 0, out[-2000:] + err[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "eval.json").is_file() and list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert_stayed_offline(requests, sockets)


def test_attune_sweep_makes_no_network_request_and_stays_on_loopback(attune_cli, tmp_path):
    env = user_environment(RAY_TMPDIR=f"/tmp/ray-offline-{os.getpid()}")
    (code, out, err), requests, sockets = run_watched(
        [attune_cli, "sweep", str(SWEEP), f"tracking.runs_dir={tmp_path}", "sweep.space={}", "sweep.seeds=[0, 1]",
         *TINY_RUN], env)
    assert code == 0, out[-2000:] + err[-3000:]
    trials = list((tmp_path / "sweep-sweep" / "trials").glob("*/eval.json"))
    assert len(trials) == 2
    assert_stayed_offline(requests, sockets)


def _unshare_available() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -n` is not permitted here: {probe.stderr.strip()[:200]}"
    return None


def test_attune_run_completes_without_any_network(attune_cli, tmp_path):
    reason = _unshare_available()
    if reason:
        pytest.skip(f"no network namespace: {reason}")
    # A fresh network namespace has only a loopback device, and it is down: bring it up, as any host has.
    script = 'ip link set lo up 2>/dev/null || true; exec "$@"'
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", attune_cli, "run", str(TINY), f"tracking.runs_dir={tmp_path}",
         *TINY_RUN], capture_output=True, text=True, timeout=300, cwd=REPO, env=user_environment())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "eval.json").is_file()


@pytest.mark.slow
def test_attune_run_of_an_rllib_baseline_makes_no_network_request(attune_cli, tmp_path):
    env = user_environment(RAY_TMPDIR=f"/tmp/ray-offline-{os.getpid()}")
    (code, out, err), requests, sockets = run_watched(
        [attune_cli, "run", str(TINY), f"tracking.runs_dir={tmp_path}", "method=rllib_ppo", "trainer={}",
         "rewards=[{name: user_feedback}]", "env.id=attune/TutorDiscrete-v1", "users.n_users=40",
         "method_settings={iterations: 1, eval_episodes: 10, train_batch_size: 64}"], env)
    assert code == 0, out[-2000:] + err[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    assert "held_out_reward" in (run_dir / "eval.json").read_text()
    assert_stayed_offline(requests, sockets)
