"""Classic baselines on the discrete variants: LinUCB (agents.bandit) and RLlib PPO/DQN (agents.rllib)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

import envs
from agents.bandit import LinUCB, run_linucb
from agents.discrete_eval import make_discrete_env, play, score_played
from experiments import stats


@pytest.mark.parametrize("env_id", envs.DISCRETE_ENV_IDS)
def test_linucb_beats_random_on_training_and_held_out_users(env_id):
    result = run_linucb(env_id, episodes=400, alpha=1.0, seed=0, eval_episodes=200)
    linucb, random = result["linucb"], result["random"]
    assert len(linucb["regrets"]) == len(random["regrets"]) == 400
    # Regret is >= 0 by definition (oracle expected utility minus the chosen action's).
    assert min(linucb["regrets"]) >= -1e-9 and min(random["regrets"]) >= -1e-9
    assert linucb["final_mean_regret"] < 0.5 * random["final_mean_regret"], (linucb["final_mean_regret"], random["final_mean_regret"])
    # Learning shows: the last 20 % is better than the whole run, which includes the exploring start.
    assert linucb["final_mean_regret"] < linucb["mean_regret"]
    held_out = result["held_out"]
    assert len(held_out["linucb"]["rewards"]) == 200
    assert held_out["linucb"]["mean_reward"] > held_out["random"]["mean_reward"] + 0.2, held_out
    assert held_out["linucb"]["mean_regret"] < held_out["random"]["mean_regret"]


def test_run_linucb_is_reproducible_and_random_plays_the_same_episodes():
    first = run_linucb("tutor", episodes=50, alpha=1.0, seed=3, eval_episodes=20)
    second = run_linucb("tutor", episodes=50, alpha=1.0, seed=3, eval_episodes=20)
    assert first["linucb"]["regrets"] == second["linucb"]["regrets"]
    assert first["held_out"]["random"]["rewards"] == second["held_out"]["random"]["rewards"]
    # Same seeds, same users and tasks: the random policy's regret is a fair comparison.
    assert first["random"]["regrets"] == second["random"]["regrets"]


def test_linucb_finds_the_best_arm_of_a_synthetic_linear_problem():
    """Rewards are linear in the context with known weights: regret must go to ~0."""
    rng = np.random.default_rng(0)
    true_theta = np.array([
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.4, 0.4, 0.4],
    ])
    model = LinUCB(n_arms=4, n_features=3, alpha=0.5, fit_intercept=False, seed=0)
    regrets = []
    for _ in range(2000):
        context = rng.uniform(0, 1, size=3)
        expected = true_theta @ context
        arm = model.select(context)
        model.update(context, arm, expected[arm] + rng.normal(0, 0.1))
        regrets.append(expected.max() - expected[arm])
    assert np.mean(regrets[:200]) > 3 * np.mean(regrets[-400:])
    assert np.mean(regrets[-400:]) < 0.02
    np.testing.assert_allclose(model.theta, true_theta, atol=0.1)
    test_contexts = rng.uniform(0, 1, size=(500, 3))
    greedy_is_best = [model.greedy(x) == int(np.argmax(true_theta @ x)) for x in test_contexts]
    assert np.mean(greedy_is_best) > 0.95


def test_linucb_confidence_bonus_shrinks_with_data_and_ties_break_at_random():
    model = LinUCB(n_arms=3, n_features=2, alpha=1.0, seed=0)
    context = np.array([0.5, 0.5])
    assert {model.select(context) for _ in range(50)} == {0, 1, 2}  # not always arm 0 before any data
    before = model.upper_confidence_bounds(context)
    for _ in range(20):
        model.update(context, 1, 0.0)
    after = model.upper_confidence_bounds(context)
    assert after[1] < before[1] and after[0] == before[0]
    assert model.counts.tolist() == [0, 20, 0]


def test_linucb_and_make_discrete_env_name_bad_arguments():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        LinUCB(n_arms=2, n_features=2, alpha=-1)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        LinUCB(n_arms=2, n_features=2, ridge=0)
    model = LinUCB(n_arms=2, n_features=2)
    with pytest.raises(ValueError, match="n_features=2"):
        model.select([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"arm must be in \[0, 2\)"):
        model.update([0.1, 0.2], 5, 1.0)
    with pytest.raises(ValueError, match="not a discrete-action environment"):
        make_discrete_env("attune/WritingAssistant-v1")
    with pytest.raises(ValueError, match="remove 'split'"):
        make_discrete_env({"scenario": "writing", "split": "all"})
    with pytest.raises(ValueError, match="final_fraction"):
        run_linucb("writing", episodes=10, final_fraction=0)
    assert make_discrete_env({"scenario": "health", "n_users": 40}, split="held_out").split == "held_out"


def test_train_rllib_names_bad_arguments():
    from agents.rllib import train_rllib

    with pytest.raises(ValueError, match="algorithm must be one of ppo, dqn"):
        train_rllib("sac", "writing", iterations=1)
    with pytest.raises(ValueError, match="remove 'split' from env_config"):
        train_rllib("ppo", "writing", iterations=1, env_config={"split": "held_out"})
    with pytest.raises(ValueError, match="not a discrete-action environment"):
        train_rllib("ppo", "attune/Tutor-v1", iterations=1)
    with pytest.raises(ValueError, match="num_env_runners must be 0 or 1"):
        train_rllib("ppo", "writing", iterations=1, num_env_runners=4)


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for this module's RLlib runs, with its session folder under /tmp (short path).

    Started here, train_rllib reuses it instead of starting its own (saving Ray's start-up once per run).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("RAY_AUTH_MODE", "disabled")
        # Ray's socket paths must fit in 107 bytes: pytest's tmp_path can be too long.
        ray_tmpdir = tempfile.mkdtemp(prefix="attune-ray-", dir="/tmp")
        patch.setenv("RAY_TMPDIR", ray_tmpdir)
        import ray

        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_tmpdir)
        try:
            yield ray_tmpdir
        finally:
            ray.shutdown()  # never `ray stop`: it would kill every Ray process on the machine
            shutil.rmtree(ray_tmpdir, ignore_errors=True)


def _check_rllib_result(result, iterations):
    assert [it["iteration"] for it in result["per_iteration"]] == list(range(1, iterations + 1))
    assert all(np.isfinite(it["mean_reward"]) and np.isfinite(it["mean_regret"]) for it in result["per_iteration"])
    assert all(it["episodes"] > 0 for it in result["per_iteration"])
    held_out = result["held_out"]
    assert len(held_out["policy"]["rewards"]) == len(held_out["random"]["rewards"]) == 200
    assert held_out["policy"]["mean_reward"] > held_out["random"]["mean_reward"] + 0.2, held_out
    assert held_out["policy"]["mean_regret"] < held_out["random"]["mean_regret"]


@pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0")  # RLlib re-registers its own env per build
def test_rllib_ppo_beats_random_on_held_out_users(local_ray, tmp_path):
    from agents.rllib import train_rllib

    result = train_rllib("ppo", "writing", iterations=4, seed=0, eval_episodes=200, results_dir=str(tmp_path / "results"))
    _check_rllib_result(result, iterations=4)
    first, last = result["per_iteration"][0], result["per_iteration"][-1]
    assert last["mean_regret"] < first["mean_regret"], result["per_iteration"]
    assert os.environ.get("RAY_TMPDIR") == local_ray


@pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0")  # RLlib re-registers its own env per build
def test_rllib_dqn_beats_random_on_held_out_users(local_ray, tmp_path):
    from agents.rllib import train_rllib

    result = train_rllib("dqn", "writing", iterations=6, seed=0, eval_episodes=200, results_dir=str(tmp_path / "results"))
    _check_rllib_result(result, iterations=6)


def test_linucb_through_the_runner_is_run_linucb_with_the_config_seed(tmp_path):
    from experiments.config_files import load_config
    from experiments.runner import run

    config = load_config(None, ["method=linucb", "env.id=attune/TutorDiscrete-v1", "users.n_users=30", "seed=3",
                                "method_settings={episodes: 60, eval_episodes: 20}", "tracking.wandb=disabled",
                                f"tracking.runs_dir={tmp_path}"])
    report = run(config).eval
    direct = run_linucb({"scenario": "tutor", "n_users": 30, "population_seed": config.users.seed, "noise": 0.1,
                         "feedback": "rating"}, episodes=60, alpha=1.0, seed=3, eval_episodes=20)
    assert report["held_out_reward"] == direct["held_out"]["linucb"]["mean_reward"]
    assert report["random_regret"] == direct["held_out"]["random"]["mean_regret"]
    (run_dir,) = tmp_path.iterdir()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["phase"] == "train"]
    assert steps == list(range(3, 61, 3))  # 20 chunks of 3 episodes
    # report.md and the console show the same table: n episodes, the interval kind, both policies.
    markdown = (run_dir / "report.md").read_text()
    assert "n = 20 held-out episodes, 1 seed; ± is the half-width of the 95% Student-t CI." in markdown
    linucb = stats.mean_interval(direct["held_out"]["linucb"]["rewards"])
    assert f"| linucb | {stats.format_mean(linucb.value, linucb.half_width)} |" in markdown
    assert "| uniformly random |" in markdown


def test_a_baseline_of_your_own_runs_from_the_same_registry(tmp_path, monkeypatch):
    import agents
    from experiments.config_files import load_config
    from experiments.runner import run

    def train(job):  # always the first response style
        env = make_discrete_env(job.env_config, split="held_out")
        first = score_played(play(env, lambda _: 0, list(range(10))))
        job.log({"reward": first["mean_reward"]}, 1)
        return {"policy": first, "random": first}

    monkeypatch.setattr(agents.registry, "METHODS", dict(agents.METHODS))  # the registration ends with the test
    agents.register_method(agents.MethodSpec(name="first_style", kind="baseline", description="always style 0",
                                             train=train))
    result = run(load_config(None, ["method=first_style", "env.id=attune/TutorDiscrete-v1", "users.n_users=30",
                                    "tracking.wandb=disabled", f"tracking.runs_dir={tmp_path}"]))
    assert result.eval["method"] == "first_style"
    assert result.eval["held_out_reward"] == result.eval["random_reward"]
    assert set(result.eval["held_out"]["policy"]) == {"mean_reward", "mean_regret", "oracle_action_rate", "rewards"}
    with pytest.raises(Exception, match="env.id: method first_style picks response styles"):
        load_config(None, ["method=first_style"])
