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


def test_registry_is_not_empty():
    assert "attune/WritingAssistant-v0" in envs.ENV_IDS


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize("max_turns", [1, 3])
def test_check_env_passes_without_warnings(env_id, max_turns):
    env = gym.make(env_id, max_turns=max_turns).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=False)


def rollout(env, seed, replies):
    trace = []
    obs, info = env.reset(seed=seed)
    trace.append((obs, info["user_id"], info["task_id"]))
    for reply in replies:
        obs, reward, terminated, truncated, info = env.step(reply)
        trace.append((obs, reward, terminated, truncated, info["utility"], info["feedback"]["message"]))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((obs, info["user_id"], info["task_id"]))
    return trace


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize("feedback", ["rating", "utility"])
def test_same_seed_same_rollout(env_id, feedback):
    kwargs = dict(max_turns=3, feedback=feedback, noise=0.3)
    a = rollout(gym.make(env_id, **kwargs).unwrapped, 11, REPLIES * 3)
    b = rollout(gym.make(env_id, **kwargs).unwrapped, 11, REPLIES * 3)
    c = rollout(gym.make(env_id, **kwargs).unwrapped, 12, REPLIES * 3)
    assert a == b
    assert a != c


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_step_reports_terms_user_and_feedback(env_id):
    env = gym.make(env_id, max_turns=1).unwrapped
    obs, info = env.reset(seed=0)
    assert obs.startswith("User: ") and info["messages"][0]["role"] == "user"
    obs, reward, terminated, truncated, info = env.step(REPLIES[0])
    assert terminated and not truncated  # single-turn: one reply ends the episode
    assert set(info["terms"]) == set(envs.STYLE_DIMENSIONS) | {"relevance"}
    assert info["expected_utility"] == pytest.approx(sum(info["terms"].values()))
    assert reward == (info["rating"] - 3) / 2
    assert info["user_id"].startswith("u") and info["group"]


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
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


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_satisfied_user_ends_the_episode(env_id):
    env = gym.make(env_id, max_turns=5, satisfaction_utility=-99.0).unwrapped
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step("anything")
    assert terminated and not truncated and info["satisfied"]
    assert info["feedback"]["message"] == SATISFIED_MESSAGE


def test_reset_options_pick_user_and_task_and_reject_other_splits():
    env = gym.make("attune/WritingAssistant-v0", split="held_out").unwrapped
    user = env.population.held_out_users[0]
    _, info = env.reset(seed=0, options={"user_id": user.user_id, "task_id": "write-005"})
    assert info["user_id"] == user.user_id and info["task_id"] == "write-005"
    with pytest.raises(ValueError, match="not in the 'held_out' split"):
        env.reset(options={"user_id": env.population.train_users[0].user_id})


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="feedback must be one of"):
        gym.make("attune/WritingAssistant-v0", feedback="stars")
    env = gym.make("attune/WritingAssistant-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step("hi")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="reply text"):
        env.step(3)


def test_non_charset_characters_are_replaced_in_observations_not_in_messages():
    env = gym.make("attune/WritingAssistant-v0", max_turns=2, satisfaction_utility=99.0).unwrapped
    env.reset(seed=0)
    obs, reward, *_, info = env.step("Ünïcode 🙂 \x00")
    assert np.isfinite(reward)
    assert env.observation_space.contains(obs)
    assert "\ufffd" in obs and "🙂" in info["messages"][1]["content"]


def test_envs_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['trl'] = None\n"
        "import gymnasium as gym, envs\n"
        "env = gym.make('attune/WritingAssistant-v0'); env.reset(seed=0); env.step('hello')\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
