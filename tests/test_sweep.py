"""`attune sweep` on a local Ray (one session-wide cluster), W&B offline, tiny model."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from experiments.config_files import load_config

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


def test_a_failing_trial_is_reported_the_others_finish_and_the_sweep_exits_non_zero(local_ray, tmp_path):
    from typer.testing import CliRunner

    from experiments.cli import app

    result = CliRunner().invoke(app, ["sweep", str(SWEEP), f"tracking.runs_dir={tmp_path}", "sweep.seeds=null",
                                      "sweep.space={rewards.0.params.feedback: {grid: [utility, bogus]}}"])
    assert result.exit_code == 1, result.output
    rows = json.loads((tmp_path / "sweep-sweep" / "sweep_results.json").read_text())
    by_channel = {r["rewards.0.params.feedback"]: r for r in rows}
    assert by_channel["utility"]["status"] == "done"
    assert by_channel["bogus"]["status"] == "error" and "feedback must be one of" in by_channel["bogus"]["error"]
    assert rows[0]["status"] == "done"  # finished trials sort first
    assert "error: " in (tmp_path / "sweep-sweep" / "sweep_results.md").read_text()
    summary = " ".join(result.output.split())
    assert f"1 of 2 trials failed: {by_channel['bogus']['trial']}" in summary
    assert by_channel["utility"]["trial"] not in summary.split("trials failed:")[1]


def test_an_unknown_metric_is_refused_before_any_trial(attune_cli, tmp_path):
    result = subprocess.run([attune_cli, "sweep", str(SWEEP), f"tracking.runs_dir={tmp_path}", "sweep.metric=accuracy"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: sweep.metric: 'accuracy'")
    assert "mean_utility, improvement, win_rate" in lines[0]
    assert not (tmp_path / "sweep-sweep").exists()  # nothing started, nothing written


def test_allowed_metrics_follow_the_swept_methods():
    from experiments.config import ConfigError
    from experiments.sweep import allowed_metrics, check_metric

    baselines = load_config(REPO / "experiments" / "configs" / "baselines.yaml")
    assert "held_out_regret" in allowed_metrics(baselines) and "mean_utility" not in allowed_metrics(baselines)
    text = load_config(SWEEP)
    assert allowed_metrics(text)[:3] == ("mean_utility", "improvement", "win_rate")
    unevaluated = load_config(SWEEP, ["evaluation.enabled=false", "sweep.metric=mean_utility"])
    with pytest.raises(ConfigError, match="use one of train_seconds, total_seconds"):
        check_metric(unevaluated)


def test_a_restarted_trial_never_reruns_a_finished_run_and_keeps_one_folder(tmp_path):
    from experiments.sweep import prepare_trial_folder, trial_config

    base = load_config(SWEEP).model_dump(mode="json")
    trials, interrupted = tmp_path / "trials", tmp_path / "interrupted"

    finished = trial_config(base, {"seed": 0}, str(trials), "t_00000")
    (trials / "t_00000").mkdir(parents=True)
    (trials / "t_00000" / "eval.json").write_text(json.dumps({
        "after": {"mean_utility": 0.25}, "comparison": {"improvement": 0.5, "win_rate": 0.75}, "train_seconds": 3.0}))
    config, metrics = prepare_trial_folder(finished, interrupted)
    assert metrics == {"done": 1.0, "run_dir": str(trials / "t_00000"), "mean_utility": 0.25, "improvement": 0.5,
                       "win_rate": 0.75, "train_seconds": 3.0}

    cut_short = trial_config(base, {"seed": 1}, str(trials), "t_00001")
    (trials / "t_00001").mkdir()
    (trials / "t_00001" / "metrics.jsonl").write_text('{"step": 1, "phase": "train"}\n')
    config, metrics = prepare_trial_folder(cut_short, interrupted)
    assert metrics is None and not config.resume
    assert not (trials / "t_00001").exists()  # the trial starts over under its own name...
    assert (interrupted / "t_00001-1" / "metrics.jsonl").is_file()  # ...and what it had written is kept

    checkpointed = trial_config(base, {"seed": 2}, str(trials), "t_00002")
    (trials / "t_00002" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    config, metrics = prepare_trial_folder(checkpointed, interrupted)
    assert metrics is None and config.resume and config.tracking.name == "t_00002"  # GRPO continues in place


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
def test_killed_sweep_resumes_running_every_trial_exactly_once(attune_cli, tmp_path):
    env = {**os.environ, "RAY_TMPDIR": f"/tmp/ray-resume-{os.getpid()}"}
    args = [attune_cli, "sweep", str(SWEEP), f"tracking.runs_dir={tmp_path}", "sweep.space={}",
            "sweep.seeds=[0, 1, 2]", "sweep.max_concurrent=1", "evaluation.prompts=2"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env,
                               start_new_session=True)
    trials = tmp_path / "sweep-sweep" / "trials"
    deadline = time.time() + 600
    try:
        # Killed the moment the first trial has written its results: before Tune has saved that it finished.
        while time.time() < deadline and not list(trials.glob("*/eval.json")) and process.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/eval.json")}
    assert len(finished) == 1, "the first trial should have just finished when the sweep was killed"
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = json.loads((tmp_path / "sweep-sweep" / "sweep_results.json").read_text())
    assert sorted(r["seed"] for r in rows) == [0, 1, 2] and all(r["status"] == "done" for r in rows)
    folders = sorted(p.name for p in trials.iterdir())
    assert folders == sorted(Path(r["run_dir"]).name for r in rows)  # one folder per trial, no `-2` reruns
    for name, mtime in finished.items():
        assert (trials / name / "eval.json").stat().st_mtime_ns == mtime  # the finished trial did not run again
    max_steps = load_config(SWEEP).trainer["max_steps"]
    for name in folders:
        records = [json.loads(line) for line in (trials / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["phase"] == "train" and "loss" in r] == list(range(1, max_steps + 1))
        assert [r["phase"] for r in records].count("eval") == 2
        assert len(list((trials / name / "wandb").glob("offline-run-*"))) == 1


def test_classic_baselines_run_through_the_same_sweep_and_beat_random(local_ray, tmp_path):
    from experiments.sweep import run_sweep

    config_path = REPO / "experiments" / "configs" / "baselines.yaml"
    config = load_config(config_path, [
        f"tracking.runs_dir={tmp_path}", "env.id=attune/TutorDiscrete-v1",
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
