from types import SimpleNamespace

import pytest
import torch

from agents.policy import load_policy
from agents.rollouts import build_prompt_dataset, episode_return, make_env, make_multi_turn_rollout



def fake_trainer(model, tokenizer, max_completion_length, step=0):
    """What a rollout function reads from TRL's GRPOTrainer."""
    return SimpleNamespace(
        args=SimpleNamespace(max_completion_length=max_completion_length, temperature=1.0, top_p=1.0),
        processing_class=tokenizer, model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        state=SimpleNamespace(global_step=step),
    )

@pytest.fixture(scope="module")
def tiny():
    model, tokenizer, _ = load_policy("tiny-random")
    return model, tokenizer


def test_prompt_dataset_rows_are_distinct_and_carry_user_columns():
    env = make_env("attune/WritingAssistant-v1")
    rows = build_prompt_dataset(env, 20, seed=0)
    assert len({str(r["prompt"]) for r in rows}) == 20
    train_ids = {u.user_id for u in env.population.train_users}
    for row in rows:
        assert row["user_id"] in train_ids
        assert row["prompt"][0]["role"] == "user" and row["task_id"].startswith("write-")
    assert rows == build_prompt_dataset(make_env("attune/WritingAssistant-v1"), 20, seed=0)


def test_multi_turn_rollout_masks_the_users_tokens(tiny):
    model, tokenizer = tiny
    env_kwargs = dict(max_turns=3, satisfaction_utility=99.0)  # never satisfied: always three turns
    rows = build_prompt_dataset(make_env("attune/WritingAssistant-v1", **env_kwargs), 3, seed=0)
    rollout = make_multi_turn_rollout(lambda: make_env("attune/WritingAssistant-v1", **env_kwargs), rows, max_turns=3, seed=0)
    trainer = fake_trainer(model, tokenizer, max_completion_length=5)
    out = rollout([r["prompt"] for r in rows], trainer)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 3
    for prompt_ids, ids, mask, replies in zip(out["prompt_ids"], out["completion_ids"], out["env_mask"], out["assistant_replies"]):
        assert len(ids) == len(mask)
        assert len(replies) == 3
        # Split the completion into runs of equal mask: policy, user, policy, user, policy.
        runs = []
        for token, keep in zip(ids, mask):
            if runs and runs[-1][0] == keep:
                runs[-1][1].append(token)
            else:
                runs.append((keep, [token]))
        assert [keep for keep, _ in runs] == [1, 0, 1, 0, 1]
        policy_turns = [tokens for keep, tokens in runs if keep == 1]
        user_turns = [tokens for keep, tokens in runs if keep == 0]
        for tokens, reply in zip(policy_turns, replies):
            assert 1 <= len(tokens) <= 5  # max_completion_length is per reply
            assert tokenizer.decode(tokens, skip_special_tokens=True).strip() == reply
        for tokens in user_turns:
            text = tokenizer.decode(tokens)
            assert "<|im_start|>user\n" in text and text.endswith("<|im_start|>assistant\n")
            assert "<|im_start|>system" not in text
        assert tokenizer.decode(prompt_ids).startswith("<|im_start|>system")
    assert all(isinstance(r, float) for r in out["env_reward"])
    assert out["logprobs"] is None


def test_multi_turn_rollout_rewards_replay_in_fresh_envs(tiny):
    """The rewards GRPO trains on are the environment's own: replaying the policy's replies in freshly made
    envs, reset with the same seed, user and task, gives the same per-episode reward and terms."""
    model, tokenizer = tiny
    env_kwargs = dict(max_turns=3, feedback="rating", noise=0.5, drift=0.2, inconsistent=0.3)

    resets = []

    def recording_factory():
        env = make_env("attune/WritingAssistant-v1", **env_kwargs)
        reset = env.reset

        def recorded_reset(*, seed=None, options=None):
            resets.append({"seed": seed, "options": dict(options or {})})
            return reset(seed=seed, options=options)

        env.reset = recorded_reset
        return env

    rows = build_prompt_dataset(make_env("attune/WritingAssistant-v1", **env_kwargs), 4, seed=0)
    rollout = make_multi_turn_rollout(recording_factory, rows, max_turns=3, seed=5)
    trainer = fake_trainer(model, tokenizer, max_completion_length=6)
    torch.manual_seed(0)
    out = rollout([r["prompt"] for r in rows], trainer)
    assert len(resets) == len(rows)
    assert [r["options"]["user_id"] for r in resets] == [row["user_id"] for row in rows]

    replayed_rewards, replayed_terms, turns = [], [], []
    for reset, replies in zip(resets, out["assistant_replies"]):
        env = make_env("attune/WritingAssistant-v1", **env_kwargs)
        env.reset(seed=reset["seed"], options=reset["options"])
        rewards, terms = [], []
        for reply in replies:
            _, reward, terminated, truncated, info = env.step(reply)
            rewards.append(reward)
            terms.append(info["terms"])
        assert terminated or truncated  # the rollout stopped where the episode ended
        replayed_rewards.append(sum(rewards))  # the episode's return
        replayed_terms.append({k: sum(t[k] for t in terms) / len(terms) for k in terms[0]})
        turns.append(len(replies))
    assert out["env_reward"] == replayed_rewards
    assert out["env_terms"] == replayed_terms
    assert set(turns) == {3}  # at the default satisfaction threshold random replies never satisfy: full episodes
    assert len(set(out["env_reward"])) > 1  # not a constant: a replay against other users or seeds would differ


def test_episode_end_training_reward_is_the_episode_return_not_its_per_turn_mean(tiny):
    # Two-turn conversations (never satisfied, never leaving) with the reward paid once at the end: the
    # training reward must be that end reward, not half of it.
    model, tokenizer = tiny
    env_kwargs = dict(max_turns=2, satisfaction_utility=99.0, reward_mode="episode_end", feedback="utility")
    paid: list[list[float]] = []

    def env_factory():
        env = make_env("attune/WritingAssistant-v1", **env_kwargs)
        rewards: list[float] = []
        paid.append(rewards)
        step = env.step

        def recording_step(action):
            out = step(action)
            rewards.append(out[1])
            return out

        env.step = recording_step
        return env

    rows = build_prompt_dataset(make_env("attune/WritingAssistant-v1", **env_kwargs), 3, seed=0)
    rollout = make_multi_turn_rollout(env_factory, rows, max_turns=2, seed=0)
    trainer = fake_trainer(model, tokenizer, max_completion_length=5)
    out = rollout([r["prompt"] for r in rows], trainer)
    assert [len(r) for r in paid] == [2, 2, 2]
    for rewards, training_reward in zip(paid, out["env_reward"]):
        first, end = rewards
        assert first == 0.0 and end != 0.0
        assert training_reward == pytest.approx(end)


def test_episode_return_sums_per_turn_rewards():
    assert episode_return([0.0, 0.0, 0.9]) == pytest.approx(0.9)
    assert episode_return([0.5, -0.25, 1.0]) == pytest.approx(1.25)
