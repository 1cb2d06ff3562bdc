"""Contract tests over the registry: every attune/* id, as Gymnasium's own tests/envs/test_envs.py does."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.users import SATISFIED_MESSAGE

REPLIES = [
    "Dear colleague, the project deadline moves to Friday. Kind regards.",
    "hey!! cool stuff lol 🙂",
    "- project\n- deadline\n- delay",
    "",
]


SCENARIOS = ["WritingAssistant", "CustomerSupport", "Tutor", "HealthCoach"]


def test_registry_has_every_scenario_and_its_discrete_variant():
    assert set(envs.TEXT_ENV_IDS) == {f"attune/{s}-v1" for s in SCENARIOS}
    assert set(envs.DISCRETE_ENV_IDS) == {f"attune/{s}Discrete-v1" for s in SCENARIOS}
    assert set(envs.ENV_IDS) == set(envs.TEXT_ENV_IDS) | set(envs.DISCRETE_ENV_IDS)


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
@pytest.mark.parametrize("max_turns", [1, 3])
def test_check_env_passes_without_warnings(env_id, max_turns):
    env = gym.make(env_id, max_turns=max_turns).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=False)


@pytest.mark.parametrize("env_id", envs.DISCRETE_ENV_IDS)
def test_check_env_passes_for_discrete_variants(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
def test_each_scenario_has_its_own_tasks_users_and_domain_dimension(env_id):
    env = gym.make(env_id).unwrapped
    scenario = env.population.scenario
    assert len({t.instruction for t in scenario.tasks}) >= 50
    if env_id != "attune/WritingAssistant-v1":
        assert set(scenario.dimensions) - set(envs.STYLE_DIMENSIONS), "a domain-specific dimension"
        assert scenario.traits and scenario.trait_effects
    groups = {u.group for u in env.population.users}
    assert len(groups) >= 2


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
@pytest.mark.parametrize("feedback", ["rating", "utility", "pairwise", "critique", "implicit"])
def test_same_seed_same_rollout(env_id, feedback, env_trace):
    kwargs = dict(max_turns=3, feedback=feedback, noise=0.3, drift=0.2, inconsistent=0.2, adversarial=0.2, patience=2)
    a = env_trace(gym.make(env_id, **kwargs).unwrapped, 11, REPLIES * 3)
    b = env_trace(gym.make(env_id, **kwargs).unwrapped, 11, REPLIES * 3)
    c = env_trace(gym.make(env_id, **kwargs).unwrapped, 12, REPLIES * 3)
    assert a == b
    assert a != c


@pytest.mark.parametrize("env_id", envs.DISCRETE_ENV_IDS)
def test_discrete_same_seed_same_rollout(env_id):
    def trace(seed):
        env = gym.make(env_id).unwrapped
        out = []
        for episode in range(5):
            obs, info = env.reset(seed=seed if episode == 0 else None)
            obs2, reward, terminated, truncated, info = env.step(episode % env.action_space.n)
            out.append((obs.tolist(), reward, info["regret"], info["oracle_action"]))
        return out

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
def test_step_reports_terms_user_and_feedback(env_id):
    env = gym.make(env_id, max_turns=1).unwrapped
    obs, info = env.reset(seed=0)
    assert obs.startswith("User: ") and info["messages"][0]["role"] == "user"
    obs, reward, terminated, truncated, info = env.step(REPLIES[0])
    assert terminated and not truncated  # single-turn: one reply ends the episode
    assert set(info["terms"]) >= set(envs.STYLE_DIMENSIONS) | {"relevance"}
    assert set(info["terms"]) - {"relevance", "safety"} == set(env.population.scenario.dimensions)
    assert info["expected_utility"] == pytest.approx(sum(info["terms"].values()))
    assert reward == (info["rating"] - 3) / 2
    assert info["user_id"].startswith("u") and info["group"]


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
def test_multi_turn_user_reacts_then_truncates(env_id):
    env = gym.make(env_id, max_turns=2, satisfaction_utility=99.0).unwrapped
    env.reset(seed=3)
    obs, _, terminated, truncated, info = env.step("unrelated words " * 40)
    assert not terminated and not truncated
    assert info["messages"][-1]["role"] == "user"
    assert info["messages"][-1]["content"] == info["feedback"]["message"]
    assert obs.endswith(info["feedback"]["message"])
    _, _, terminated, truncated, _ = env.step("still unrelated")
    assert truncated and not terminated


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
def test_satisfied_user_ends_the_episode(env_id):
    env = gym.make(env_id, max_turns=5, satisfaction_utility=-99.0).unwrapped
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step("anything")
    assert terminated and not truncated and info["satisfied"]
    assert info["feedback"]["message"] == SATISFIED_MESSAGE


def test_reset_options_pick_user_and_task_and_reject_other_splits():
    env = gym.make("attune/WritingAssistant-v1", split="held_out").unwrapped
    user = env.population.held_out_users[0]
    _, info = env.reset(seed=0, options={"user_id": user.user_id, "task_id": "write-005"})
    assert info["user_id"] == user.user_id and info["task_id"] == "write-005"
    with pytest.raises(ValueError, match="not in the 'held_out' split"):
        env.reset(options={"user_id": env.population.train_users[0].user_id})


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="feedback must be one of"):
        gym.make("attune/WritingAssistant-v1", feedback="stars")
    env = gym.make("attune/WritingAssistant-v1").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step("hi")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="reply text"):
        env.step(3)


def test_non_charset_characters_are_replaced_in_observations_not_in_messages():
    env = gym.make("attune/WritingAssistant-v1", max_turns=2, satisfaction_utility=99.0).unwrapped
    env.reset(seed=0)
    obs, reward, *_, info = env.step("Ünïcode 🙂 \x00")
    assert np.isfinite(reward)
    assert env.observation_space.contains(obs)
    assert "\ufffd" in obs and "🙂" in info["messages"][1]["content"]


def test_envs_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['trl'] = None\n"
        "import gymnasium as gym, envs\n"
        "env = gym.make('attune/WritingAssistant-v1'); env.reset(seed=0); env.step('hello')\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


FUZZ_ACTIONS = {
    "empty": "",
    "100kB": "word " * 20_000,
    "non-ascii": "Ça coûte 20 € — naïve façade, 日本語のテキスト, русский текст",
    "control": "\x00\x01\x02\x1b[31m\r\n\t\x7f",
    "emoji": "🙂🚀🔥 " * 50,
    "only newlines": "\n" * 1000,
    "markdown": "# Title\n- a\n- b\n```python\nprint('x')\n```",
}


@pytest.mark.parametrize("env_id", envs.TEXT_ENV_IDS)
@pytest.mark.parametrize("feedback", ["rating", "utility", "pairwise", "critique", "implicit"])
def test_fuzzed_replies_give_finite_rewards(env_id, feedback):
    env = gym.make(env_id, max_turns=len(FUZZ_ACTIONS), feedback=feedback, satisfaction_utility=99.0).unwrapped
    obs, _ = env.reset(seed=0)
    for name, action in FUZZ_ACTIONS.items():
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(reward), name
        assert all(np.isfinite(v) for v in info["terms"].values()), name
        assert env.observation_space.contains(obs), name
        if terminated or truncated:
            obs, _ = env.reset()


def test_feedback_channels_follow_the_user():
    """Each channel answers a good and a bad reply differently, in the documented ranges."""
    # A real, short, structured email (not the request's keywords restated as one-word bullets, which the
    # users no longer reward).
    good = ("Dear colleague, the project deadline moves to 14 March because the supplier delivered the parts late.\n"
            "- Testing starts on Monday\n- The release follows on Thursday\n- Please tell your team about the delay")
    bad = "lol whatever!!! " * 30
    for feedback in ["rating", "pairwise", "critique", "implicit"]:
        env = gym.make("attune/WritingAssistant-v1", max_turns=1, feedback=feedback, noise=0.0).unwrapped
        user = next(u for u in env.population.train_users if u.group == "concise_professional")
        values = {}
        for name, reply in (("good", good), ("bad", bad)):
            env.reset(seed=0, options={"user_id": user.user_id, "task_id": "write-000"})
            task = env.population.task("write-000")
            _, reward, *_ , info = env.step(reply)
            assert info["feedback"]["channel"] == feedback
            # each channel's value, from the user's own judgement of this reply (noise 0: utility = expected)
            expected = {
                "rating": (np.clip(np.rint(3 + info["expected_utility"]), 1, 5) - 3) / 2,
                "critique": 0.0 if info["satisfied"] else -env.current_user.top_complaint(reply, task)[1],
                "implicit": {"satisfied": 1.0, "continues": 0.5, "rephrases": 0.0}[
                    "satisfied" if info["satisfied"] else "continues" if info["expected_utility"] >= 0 else "rephrases"],
            }
            if feedback in expected:
                assert reward == pytest.approx(expected[feedback]), (feedback, name)
            values[name] = reward
        assert values["good"] > values["bad"], feedback
        if feedback == "pairwise":
            assert (values["good"], values["bad"]) == (1.0, -1.0)


def test_patience_and_leave_end_the_episode_with_implicit_signal():
    env = gym.make("attune/CustomerSupport-v1", max_turns=5, patience=2, feedback="implicit",
                   satisfaction_utility=99.0).unwrapped
    env.reset(seed=0)
    _, r1, terminated, _, info = env.step("no")
    assert not terminated and info["feedback"]["signal"] in ("continues", "rephrases")
    _, r2, terminated, truncated, info = env.step("no")
    assert terminated and not truncated and info["left"] and r2 == -1.0
    env = gym.make("attune/CustomerSupport-v1", max_turns=5, leave_utility=50.0).unwrapped
    env.reset(seed=0)
    _, _, terminated, _, info = env.step("anything")
    assert terminated and info["left"]


def test_episode_end_reward_mode_pays_once():
    env = gym.make("attune/Tutor-v1", max_turns=3, reward_mode="episode_end", feedback="utility",
                   satisfaction_utility=99.0).unwrapped
    env.reset(seed=0)
    rewards, values = [], []
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step("explain the equation simply")
        rewards.append(reward)
        values.append(info["feedback"]["value"])
    assert rewards[:2] == [0.0, 0.0] and truncated
    assert rewards[2] == pytest.approx(np.mean(values))


def test_adversarial_users_invert_and_inconsistent_users_randomize():
    reply = "Dear colleague, the project deadline moves. Kind regards."
    honest = gym.make("attune/WritingAssistant-v1", feedback="rating").unwrapped
    liar = gym.make("attune/WritingAssistant-v1", feedback="rating", adversarial=1.0).unwrapped
    honest.reset(seed=1)
    liar.reset(seed=1)
    _, r_honest, *_ = honest.step(reply)
    _, r_liar, *_, info = liar.step(reply)
    assert r_liar == -r_honest and info["feedback"]["corrupted"] == "adversarial"
    noisy = gym.make("attune/WritingAssistant-v1", feedback="rating", inconsistent=1.0).unwrapped
    seen = set()
    for seed in range(30):
        noisy.reset(seed=seed, options={"user_id": "u0000", "task_id": "write-000"})
        seen.add(noisy.step(reply)[1])
    assert len(seen) >= 4  # random Likert answers to the same reply


def test_preference_drift_moves_weights_between_episodes_reproducibly():
    def weights(seed):
        env = gym.make("attune/WritingAssistant-v1", drift=0.3, split="all").unwrapped
        out = []
        for episode in range(4):
            env.reset(seed=seed if episode == 0 else None, options={"user_id": "u0000"})
            out.append(env.current_user.weights)
        return out

    a, b = weights(0), weights(0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[3])


def test_health_coach_penalizes_unsafe_advice_for_everyone():
    env = gym.make("attune/HealthCoach-v1", split="all").unwrapped
    for user in env.population.users[:10]:
        env.reset(seed=0, options={"user_id": user.user_id, "task_id": "health-000"})
        _, _, _, _, unsafe = env.step("Just stop taking your medication and sleep better.")
        env.reset(seed=0, options={"user_id": user.user_id, "task_id": "health-000"})
        _, _, _, _, safe = env.step("Just keep taking your medication and sleep better.")
        assert unsafe["terms"]["safety"] == -2.0 and safe["terms"]["safety"] == 0.0
        assert unsafe["feedback"]["critique"] == "safety"


def test_discrete_oracle_and_regret():
    env = gym.make("attune/TutorDiscrete-v1").unwrapped
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        expected = np.array(info["expected_utilities"])
        for action in range(env.action_space.n):
            env.reset(seed=seed)
            _, _, terminated, _, step_info = env.step(action)
            assert terminated
            assert step_info["regret"] == pytest.approx(expected.max() - expected[action])
        assert expected[info["oracle_action"]] == expected.max()


@pytest.mark.parametrize("env_id", envs.DISCRETE_ENV_IDS)
def test_rllib_builds_and_samples_discrete_variants(env_id, monkeypatch):
    """RLlib's own env runner builds the env from a config dict (as on remote workers) and samples it.

    RLlib 2.60 dropped its single-agent env checker in favour of Gymnasium's (run above); this is the
    contract RLlib still relies on.
    """
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.tune.registry import register_env

    from envs.discrete import DiscreteStyleEnv

    register_env("attune-discrete-test", lambda cfg: DiscreteStyleEnv(config=dict(cfg)))
    scenario = gym.spec(env_id).kwargs["scenario"]
    config = PPOConfig().environment("attune-discrete-test", env_config={"scenario": scenario}).env_runners(
        num_env_runners=0, num_envs_per_env_runner=1
    )
    runner = SingleAgentEnvRunner(config=config)
    episodes = runner.sample(num_timesteps=10, random_actions=True)
    assert sum(len(e) for e in episodes) >= 10
    assert all(np.isfinite(r) for e in episodes for r in e.get_rewards())
    runner.stop()
