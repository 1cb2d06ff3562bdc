"""The Ray that sweeps and benchmarks run on: a local one on loopback, or the cluster named by ``--address``.

Connecting to a cluster fails fast and in one line for everything a user can fix (:class:`ClusterError`,
exit code 2): nothing listening there (a socket check, seconds; Ray itself retries for minutes), a port
that answers but is no Ray GCS (a stoppable child process asks it), a missing or refused auth token
(presented the way ``ray start`` clients do: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile

import typer

from experiments import offline

CONNECT_TIMEOUT_S = 5.0
GCS_PROBE_TIMEOUT_S = 20.0
AUTH_HINT = ("the cluster wants Ray's auth token and refused this one (or none); set RAY_AUTH_TOKEN to what "
             "`ray get-auth-token` prints on the head node (or copy the head's ~/.ray/auth_token to this machine)")


class ClusterError(typer.Exit):
    """The Ray cluster named by --address cannot be used; ``message`` says why and what to check. Exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(code=2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _cluster_host_port(address: str) -> tuple[str, int] | None:
    """Host and port of ``host:port`` or ``ray://host:port``; None for what Ray resolves itself (``auto``)."""
    bare = address.removeprefix("ray://").rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _connect_to_cluster(address: str, environment: dict[str, str]) -> None:
    """``ray.init`` on the cluster at ``address``, presenting its auth token the way Ray's CLI does.

    Every failure a user can fix is a :class:`ClusterError` with one line: nothing listening (checked first,
    within seconds: Ray itself would retry for minutes), no token for a cluster that wants one, anything else.
    """
    target = _cluster_host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                "no answer" if isinstance(exc, (TimeoutError, socket.timeout)) else str(exc))
            raise ClusterError(
                f"--address {address}: no Ray cluster answers there ({reason}); check that `ray start --head "
                f"--port={target[1]}` runs on {target[0]} and that this machine can reach that port, or leave out "
                "--address to run on a local Ray") from None
    _present_auth_token()
    if not address.startswith("ray://"):  # Ray Client addresses speak another protocol
        problem = _probe_gcs(address)
        if problem:
            raise ClusterError(f"--address {address}: {problem}")
    import ray

    # While Ray retries (a refused token: ~20 s) its C++ client logs a warning a second to stderr; those lines
    # are kept aside and shown only if the connection works, while a failure is the one line below.
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": environment})
            failure = None
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, AuthenticationError, ValueError...
            failure = exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        log = captured.read().decode(errors="replace")
    if failure is None:
        sys.stderr.write(log)
        return
    if os.environ.get("ATTUNE_DEBUG"):
        sys.stderr.write(log)
        raise failure
    raise ClusterError(_cluster_failure(address, failure, log))


_GCS_PROBE = """
import sys
import ray._raylet
from ray._private.services import canonicalize_bootstrap_address
ray._raylet.GcsClient(address=canonicalize_bootstrap_address(sys.argv[1]))
"""


def _probe_gcs(address: str) -> str | None:
    """Ask the cluster's GCS for its id in a child process that can be stopped: ``ray.init`` retries for minutes
    when the port answers but is no GCS. Returns what is wrong, or None when the cluster answered."""
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], capture_output=True, text=True,
                               timeout=GCS_PROBE_TIMEOUT_S)
        if probe.returncode == 0:
            return None
        log, timed_out = probe.stdout + probe.stderr, False
    except subprocess.TimeoutExpired as exc:
        log = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        timed_out = True
    if "InvalidAuthToken" in log or "Unauthenticated" in log:
        return AUTH_HINT
    if timed_out:
        return (f"something listens there but no Ray cluster answered within {GCS_PROBE_TIMEOUT_S:.0f} s; check that "
                "this is the port given to `ray start --head --port=...` (the GCS port, not the dashboard's)")
    last = next((line for line in reversed(log.strip().splitlines()) if line.strip()), "no output")
    return f"the Ray cluster did not answer ({last.strip()[:300]})"


def _present_auth_token() -> None:
    """Ray 2.60 clusters started with ``ray start`` want a token when one exists on the head (~/.ray/auth_token).

    ``ray start`` and a driver that finds the cluster itself (``address="auto"``) switch token auth on when a
    token is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); a driver given
    an explicit address does not. attune does what ``ray start`` does, unless ``RAY_AUTH_MODE`` is set.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _cluster_failure(address: str, exc: BaseException, log: str) -> str:
    """One line for a failed connection, from Ray's exception (and its cause) and what Ray logged meanwhile."""
    texts = [str(exc), str(exc.__cause__ or ""), log]
    if type(exc).__name__ == "AuthenticationError" or any("InvalidAuthToken" in t or "Unauthenticated" in t for t in texts):
        return f"--address {address}: {AUTH_HINT}"
    reason = " ".join(str(exc.__cause__ or exc).split())[:300]
    return f"--address {address}: cannot use this Ray cluster ({type(exc).__name__}: {reason})"


def start_ray(address: str | None, environment: dict[str, str]) -> bool:
    """Connect to ``address`` (an existing cluster) or start a local Ray; True if this call did either."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        _connect_to_cluster(address, environment)
        return True
    # A throwaway local cluster on loopback needs no auth; Ray writes into HOME unless given a temp dir.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = os.environ.get("RAY_TMPDIR") or f"/tmp/ray-{os.getuid()}"
    offline.start_local_ray(tmp, num_cpus=os.cpu_count() or 1, log_to_driver=False)
    return True
