import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Tests never write into the user's cache or home, and W&B never leaves the machine."""
    cache = os.environ.get("ATTUNE_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("attune-cache"))
    os.environ["ATTUNE_CACHE_DIR"] = cache
    # runs choose W&B offline themselves (tracking.wandb: offline); no WANDB_MODE here, or transformers
    # prints a banner on import that would garble the one-line error checks.
    os.environ.pop("WANDB_MODE", None)
    os.environ["WANDB_SILENT"] = "true"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield


@pytest.fixture(scope="session")
def env_trace():
    """``trace(env, seed, replies, utility_key="utility")``: everything an env returns over scripted replies.

    Reset with ``seed``, one step per reply, resetting (without a seed) when an episode ends; two envs are
    deterministic under a seed when their traces are equal.
    """

    def trace(env, seed, replies, utility_key="utility"):
        out = []
        obs, info = env.reset(seed=seed)
        out.append((obs, info["user_id"], info["task_id"]))
        for reply in replies:
            obs, reward, terminated, truncated, info = env.step(reply)
            out.append((obs, reward, terminated, truncated, info[utility_key], info["feedback"]["message"]))
            if terminated or truncated:
                obs, info = env.reset()
                out.append((obs, info["user_id"], info["task_id"]))
        return out

    return trace


@pytest.fixture(scope="session")
def attune_cli():
    """The installed console script, as a user would run it."""
    script = Path(sys.executable).with_name("attune")
    if not script.exists():
        pytest.fail(f"console script {script} missing: install the project with `pip install -e .` (make test does)")
    return str(script)


@pytest.fixture
def benchmark_smoke(attune_cli, tmp_path):
    """Run ``attune benchmark NAME --scale smoke`` through the real CLI; returns the folder and benchmark.json."""
    import json
    import subprocess

    def run(name: str, cwd: Path = REPO, bench_name: str | None = None) -> tuple[Path, dict]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
               "RAY_TMPDIR": f"/tmp/ray-{name[:8]}-{os.getpid()}"}
        result = subprocess.run([attune_cli, "benchmark", name, "--scale", "smoke", f"tracking.runs_dir={tmp_path / 'runs'}"],
                                capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        folder = tmp_path / "runs" / f"benchmark-{bench_name or name}-smoke"  # named by the suite's name
        return folder, json.loads((folder / "benchmark.json").read_text())

    return run
