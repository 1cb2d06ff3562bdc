"""`attune sweep` on a local Ray (one session-wide cluster), W&B offline, tiny model."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from experiments.config import load_config

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "experiments" / "configs" / "sweep.yaml"


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    # A short temp path: Ray's socket paths must stay under the OS limit.
    tmp = Path("/tmp") / f"ray-test-{os.getpid()}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp),
             runtime_env={"env_vars": {"ATTUNE_CACHE_DIR": os.environ["ATTUNE_CACHE_DIR"], "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()  # never `ray stop`: it would kill every Ray process on the machine


def test_two_trial_sweep_writes_table_best_config_and_wandb_runs(local_ray, tmp_path):
    from experiments.sweep import run_sweep

    config = load_config(SWEEP, [f"tracking.runs_dir={tmp_path}", "sweep.space={}", "sweep.seeds=[0, 1]"])
    folder, rows = run_sweep(config, SWEEP)
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    values = [r["mean_utility"] for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    table = json.loads((folder / "sweep_results.json").read_text())
    assert [r["seed"] for r in table] == [r["seed"] for r in rows]
    assert "| mean_utility |" in (folder / "sweep_results.md").read_text()
    best = load_config(folder / "best_config.yaml")
    assert best.sweep is None and best.seed == rows[0]["seed"]
    assert (folder / "best_config.yaml").read_text().startswith("# attune run ")
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert (run_dir / "eval.json").is_file()
        assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        assert load_config(run_dir / "config.yaml").experiment == folder.name  # W&B group = the sweep
    assert list(folder.glob("wandb/offline-run-*"))  # the summary table's run


def test_a_failing_trial_is_reported_and_the_others_finish(local_ray, tmp_path):
    from experiments.sweep import run_sweep

    config = load_config(SWEEP, [f"tracking.runs_dir={tmp_path}", "sweep.seeds=null",
                                 "sweep.space={rewards.0.params.channel: {grid: [utility, bogus]}}"])
    folder, rows = run_sweep(config, SWEEP)
    by_channel = {r["rewards.0.params.channel"]: r for r in rows}
    assert by_channel["utility"]["status"] == "done"
    assert by_channel["bogus"]["status"] == "error" and "channel must be one of" in by_channel["bogus"]["error"]
    assert rows[0]["status"] == "done"  # finished trials sort first
    assert "error: " in (folder / "sweep_results.md").read_text()


def test_sweep_config_errors_name_the_field(tmp_path):
    from experiments.config import ConfigError
    from experiments.sweep import _tune_space

    with pytest.raises(ConfigError, match="sweep.space.trainer.learning_rate: give one of grid, choice"):
        _tune_space({"trainer.learning_rate": {"between": [1, 2]}}, None)
    with pytest.raises(ConfigError, match="loguniform: need 0 < low < high"):
        _tune_space({"trainer.learning_rate": {"loguniform": [0, 1]}}, None)
    with pytest.raises(ConfigError, match="not both"):
        _tune_space({"seed": {"grid": [1]}}, [0, 1])


def test_attune_run_refuses_a_sweep_config(attune_cli, tmp_path):
    result = subprocess.run([attune_cli, "run", str(SWEEP), f"tracking.runs_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "run it with `attune sweep`" in result.stderr


@pytest.mark.slow
def test_killed_sweep_resumes_keeping_finished_trials(attune_cli, tmp_path):
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/ray-resume-{os.getpid()}"}
    args = [attune_cli, "sweep", str(SWEEP), f"tracking.runs_dir={tmp_path}", "sweep.space={}",
            "sweep.seeds=[0, 1, 2, 3]", "sweep.max_concurrent=1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env,
                               start_new_session=True)
    trials = tmp_path / "sweep-sweep" / "trials"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and not list(trials.glob("*/eval.json")):
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {p.parent.name: p.stat().st_mtime for p in trials.glob("*/eval.json")}
    assert 1 <= len(finished) < 4
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "sweep-sweep" / "sweep_results.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    for name, mtime in finished.items():
        assert (trials / name / "eval.json").stat().st_mtime == mtime  # finished trials were kept, not rerun


def test_classic_baselines_run_through_the_same_sweep_and_beat_random(local_ray, tmp_path):
    from experiments.sweep import run_sweep

    config_path = REPO / "experiments" / "configs" / "baselines.yaml"
    config = load_config(config_path, [
        f"tracking.runs_dir={tmp_path}", "env.id=attune/TutorDiscrete-v0",
        "sweep.space={method: {grid: [linucb, rllib_ppo]}}", "users.n_users=40",
    ])
    folder, rows = run_sweep(config, config_path)
    assert {r["method"] for r in rows} == {"linucb", "rllib_ppo"} and all(r["status"] == "done" for r in rows)
    for row in rows:
        report = json.loads((Path(row["run_dir"]) / "eval.json").read_text())
        assert report["held_out_reward"] > report["random_reward"] + 0.1, report
        assert report["held_out_regret"] < report["random_regret"], report
        assert list(Path(row["run_dir"]).glob("wandb/offline-run-*"))
    assert rows[0]["held_out_regret"] <= rows[1]["held_out_regret"]  # sorted by regret, lowest first


def test_a_baseline_runs_through_attune_run(attune_cli, tmp_path):
    result = subprocess.run(
        [attune_cli, "run", str(REPO / "experiments" / "configs" / "baselines.yaml"), f"tracking.runs_dir={tmp_path}",
         "sweep=null", "method_settings.episodes=300"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "train"] == list(range(15, 301, 15))
    assert "uniformly random" in result.stdout
