"""The elicitation env, its belief-shaping bonus, its metrics and its demonstrations."""

import doctest
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
import envs.elicitation
from envs.elicitation import (
    ElicitationEnv,
    answer_question,
    group_posterior,
    is_question,
    preference_level,
)
from envs import elicitation_policies as policies
from envs.population import UserPopulation
from envs.scenarios import UserGroup
from experiments.elicitation_metrics import normalised_return, pass_hat_k, reference_returns, summarize_elicitation
from rewards import RewardLookupError, build_reward

ENV_ID = "attune/Elicitation-v1"
ANSWER = "Dear reader,\nThe email comes first, so I put the main point at the top. Then I cover the colleague."


def make(**kwargs):
    return gym.make(ENV_ID, **kwargs).unwrapped


# --- the env's contract ---------------------------------------------------------------------------------


def test_registered_as_a_conversation_env_of_its_own_scenario():
    assert ENV_ID in envs.ELICITATION_ENV_IDS and ENV_ID in envs.registered_env_ids("text")
    assert envs.env_kind(ENV_ID) == "text" and envs.scenario_of(ENV_ID) == "elicitation"
    assert ENV_ID not in envs.TEXT_ENV_IDS  # the scenario envs' contract (critiques, satisfaction) differs


@pytest.mark.parametrize("max_turns", [1, 4])
def test_check_env_passes_without_warnings(max_turns):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(max_turns=max_turns), skip_render_check=False)


def test_docstring_example_runs():
    assert doctest.testmod(envs.elicitation, raise_on_error=False).failed == 0


QUESTIONS_THEN_ANSWER = ["Do you prefer short replies?", "Formal or casual tone?", ANSWER] * 2


def test_same_seed_same_rollout(env_trace):
    def trace(seed):
        env = make(max_turns=3, noise=0.3, drift=0.2, inconsistent=0.2)
        return env_trace(env, seed, QUESTIONS_THEN_ANSWER, utility_key="expected_utility")

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


def test_opening_is_the_bare_request_and_an_invitation():
    env = make()
    _, info = env.reset(seed=0)
    task = env.population.task(info["task_id"])
    assert info["messages"][0]["content"] == task.instruction[0].upper() + task.instruction[1:] + "." + envs.elicitation.INVITATION
    styled = make(styled_request=True, invite_questions=False)
    _, styled_info = styled.reset(seed=0)
    assert styled_info["messages"][0]["content"] != info["messages"][0]["content"]


def test_leave_utility_and_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="leave_utility"):
        make(leave_utility=-1.0)
    with pytest.raises(ValueError, match="question_cost"):
        make(question_cost=-0.1)
    with pytest.raises(ValueError, match="shaping_gamma"):
        make(shaping_gamma=1.5)


# --- questions and truthful answers ---------------------------------------------------------------------


@pytest.mark.parametrize("reply, expected", [
    ("Do you prefer short replies?", True),
    ("  Should the tone be formal or casual?\n", True),
    ("Here is the note. It is short.", False),
    ("", False),
    ("?", True),
    ("word " * 30 + "ok?", False),  # 31 words: a draft that ends with a question is the answer
])
def test_what_counts_as_a_question(reply, expected):
    assert is_question(reply) is expected


def test_answers_say_the_sign_and_strength_of_the_weights_asked_about():
    weights = {"brevity": 0.8, "formality": -0.45, "technical_depth": 0.05, "warmth": -0.2, "structure": 0.0,
               "examples": 0.65}
    assert answer_question("Should it be short?", weights) == ("I really want short replies.", {"brevity": 3})
    assert answer_question("Formal or casual tone?", weights) == ("I'd prefer a casual tone.", {"formality": -2})
    assert answer_question("How technical should it be?", weights)[1] == {"technical_depth": 0}
    text, revealed = answer_question("Any warmth, and an example?", weights)
    assert revealed == {"warmth": -1, "examples": 3}
    assert text == ("If anything I'd lean towards no pleasantries, but only slightly. I really want concrete examples.")
    text, revealed = answer_question("What would you like?", weights)
    assert revealed == {} and "length" in text and "examples" in text


def test_every_user_answers_truthfully_in_the_env():
    env = make(max_turns=8)
    questions = {d: policies.question_about(d) for d in env.population.scenario.dimensions}
    for seed in range(12):
        _, info = env.reset(seed=seed)
        weights = env.population.user(info["user_id"]).preference_weights
        for dimension, question in list(questions.items())[:7]:
            _, _, terminated, _, info = env.step(question)
            assert not terminated and info["question"]
            assert info["revealed"][dimension] == preference_level(weights[dimension])
            level = preference_level(weights[dimension])
            phrase = envs.users._PHRASES[dimension][0 if level > 0 else 1]
            assert (phrase in info["answer"]) == (level != 0)


# --- rewards: question costs, the answer, leaving, truncation ------------------------------------------


def play_two_questions(cost, reward_mode):
    env = make(max_turns=4, noise=0.0, question_cost=cost, reward_mode=reward_mode)
    _, info = env.reset(seed=3)
    rewards = []
    for reply in ["Should it be short?", "Formal or casual tone?", ANSWER]:
        _, reward, terminated, truncated, info = env.step(reply)
        rewards.append(reward)
    user, task = env.current_user, env.population.task(info["task_id"])
    return rewards, terminated, truncated, info, float(user.utility([ANSWER], [task])[0])


def test_each_question_costs_question_cost_and_the_answer_pays_its_utility():
    sparse, terminated, truncated, info, utility = play_two_questions(0.25, "episode_end")
    assert terminated and not truncated and info["questions_asked"] == 2
    assert sparse[:2] == [0.0, 0.0]
    assert sparse[2] == pytest.approx(utility - 2 * 0.25)
    dense, *_ = play_two_questions(0.25, "per_turn")
    assert dense == pytest.approx([-0.25, -0.25, utility])
    free, *_ = play_two_questions(0.0, "episode_end")
    assert free[2] - sparse[2] == pytest.approx(0.5)


def test_terms_sum_to_the_noise_free_return():
    env = make(max_turns=4, noise=0.0, question_cost=0.2)
    env.reset(seed=1)
    total, terms_total = 0.0, 0.0
    for reply in ["Should it be short?", ANSWER]:
        _, reward, terminated, _, info = env.step(reply)
        total += reward
        terms_total += sum(info["terms"].values())
    assert terminated and terms_total == pytest.approx(total)


def test_a_question_on_the_last_turn_is_scored_as_the_answer():
    env = make(max_turns=2, noise=0.0)
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step("Should it be short?")
    assert not terminated
    _, reward, terminated, truncated, info = env.step("Formal or casual tone?")
    assert truncated and not terminated and not info["question"]
    single = make(max_turns=1)
    single.reset(seed=0)
    assert single.step("Should it be short?")[2]  # one turn: every reply is the answer


def test_an_impatient_user_leaves_with_nothing_after_patience_questions():
    env = make(max_turns=5, noise=0.0, patience=1, question_cost=0.1)
    env.reset(seed=2)
    env.step("Should it be short?")
    _, reward, terminated, _, info = env.step("Formal or casual tone?")
    assert terminated and info["left"] and info["questions_asked"] == 2
    worst = -float(np.abs(env.current_user.weights).sum()) - 1.0  # every term at its minimum, relevance 0
    assert reward == pytest.approx(worst - 0.2)
    assert reward == pytest.approx(policies.worst_return(env))  # the min of the normalised return is attained


# --- the belief-shaping bonus, by hand on two groups ---------------------------------------------------

# Weights of group A are Normal(0.45, s) with s chosen so that 95 % of them lie in [0.3, 0.6), the interval
# of a clear preference (level 2); group B's, Normal(0.75, s), lie there with probability
# Phi(-1.96) - Phi(-5.88) = 0.025. Equal shares, so after a user states a clear preference for short
# replies P(A) = 0.5 * 0.95 / (0.5 * 0.95 + 0.5 * 0.025) = 0.95 / 0.975.
SPREAD = 0.15 / 1.959964
TOY_GROUPS = (UserGroup("A", 0.5, {"brevity": 0.45}, spread=SPREAD), UserGroup("B", 0.5, {"brevity": 0.75}, spread=SPREAD))
P_A = 0.95 / 0.975


def test_posterior_by_hand_on_two_groups():
    assert group_posterior(TOY_GROUPS, {}) == {"A": 0.5, "B": 0.5}
    posterior = group_posterior(TOY_GROUPS, {"brevity": 2})
    assert posterior["A"] == pytest.approx(P_A, abs=1e-6)
    # A strong preference (>= 0.6): A 0.025, B Phi(1.96) = 0.975.
    assert group_posterior(TOY_GROUPS, {"brevity": 3})["B"] == pytest.approx(0.975 / 1.0, abs=1e-6)
    # Spread 0: the answer is certain; 3:1 prior, impossible answer for B.
    certain = (UserGroup("A", 3, {"brevity": 0.8}, spread=0.0), UserGroup("B", 1, {"brevity": 0.0}, spread=0.0))
    assert group_posterior(certain, {"brevity": 3}) == {"A": 1.0, "B": 0.0}


@pytest.fixture(scope="module")
def toy():
    population = UserPopulation("elicitation", n_users=40, seed=0, groups=TOY_GROUPS)
    user = next(u for u in population.users if u.group == "A" and preference_level(u.preference_weights["brevity"]) == 2)
    return population, user


def test_shaping_bonus_in_the_env_and_as_a_reward_match_the_hand_computation(toy):
    population, user = toy
    env = ElicitationEnv(population=population, split="all", max_turns=3, noise=0.0, shaping_weight=2.0)
    _, info = env.reset(seed=0, options={"user_id": user.user_id})
    assert info["true_group_probability"] == pytest.approx(0.5)
    _, reward, _, _, info = env.step("Should it be short?")
    assert info["belief_bonus"] == pytest.approx(P_A - 0.5, abs=1e-6)
    assert reward == pytest.approx(2 * (P_A - 0.5), abs=1e-6)  # episode_end: a question's reward is its bonus
    _, _, _, _, info = env.step("Is it short enough, really?")  # the same dimension again: nothing new
    assert info["belief_bonus"] == pytest.approx(0.0)

    bonus = build_reward("belief_bonus", population=population)
    replies = [["Should it be short?", ANSWER], [ANSWER], ["What do you like?", ANSWER], ["Should it be short?"]]
    values = bonus([[]] * 4, [""] * 4, user_id=[user.user_id] * 4, assistant_replies=replies)
    # answered then answer; no question; a question naming no dimension; a question never answered
    assert values == pytest.approx([P_A - 0.5, 0.0, 0.0, 0.0], abs=1e-6)
    log_bonus = build_reward("belief_bonus", {"log_probability": True, "gamma": 0.9}, population=population)
    value = log_bonus([[]], [""], user_id=[user.user_id], assistant_replies=replies[:1])[0]
    assert value == pytest.approx(0.9 * math.log(P_A) - math.log(0.5), abs=1e-6)
    assert bonus([], [], user_id=[]) == []


def test_belief_bonus_settings_are_checked():
    with pytest.raises(RewardLookupError, match="gamma"):
        build_reward("belief_bonus", {"gamma": 2.0})
    with pytest.raises(RewardLookupError, match="unknown parameter"):
        build_reward("belief_bonus", {"assistant_replies": []})


# --- metrics ----------------------------------------------------------------------------------------------


def test_normalised_return_endpoints_and_pieces():
    assert normalised_return(-4.0, -4.0, 1.0, 3.0) == 0.0
    assert normalised_return(1.0, -4.0, 1.0, 3.0) == 50.0
    assert normalised_return(3.0, -4.0, 1.0, 3.0) == 100.0
    assert normalised_return(-1.5, -4.0, 1.0, 3.0) == 25.0  # halfway from min to average
    assert normalised_return(2.0, -4.0, 1.0, 3.0) == 75.0  # halfway from average to max
    with pytest.raises(ValueError, match="minimum < average < maximum"):
        normalised_return(0.0, 1.0, 0.0, 3.0)


def test_pass_hat_k_by_hand():
    successes = [[True, True, False, True], [True, False, False, False]]
    # task 1: c=3 of n=4 -> 3/4, C(3,2)/C(4,2)=1/2, 1/4, 0; task 2: c=1 -> 1/4, 0, 0, 0
    assert [pass_hat_k(successes, k) for k in (1, 2, 3, 4)] == pytest.approx([0.5, 0.25, 0.125, 0.0])
    with pytest.raises(ValueError, match="at least 5 trials"):
        pass_hat_k(successes, 5)


def test_reference_returns_are_attained_by_the_worst_and_oracle_episodes():
    env = make(max_turns=3, noise=0.0, question_cost=0.1, split="held_out")
    rows = [{"user_id": u.user_id, "task_id": t.task_id} for u, t in zip(env.users[:3], env.population.tasks[:3])]
    reference = reference_returns(env, rows, seed=0, trials=2)
    assert reference.minimum < reference.average < reference.maximum
    assert reference.average_source == "behaviour"
    worst, best = [], []
    for row in rows:
        options = {"user_id": row["user_id"], "task_id": row["task_id"]}
        env.reset(seed=0, options=options)
        oracle = policies.oracle_reply(env)
        best.append(env.step(oracle)[1])
        env.reset(seed=0, options=options)
        env.step("Should it be short?")
        env.step("Formal or casual tone?")
        worst.append(env.step("")[1])  # the last turn: an empty answer
    assert reference.minimum == pytest.approx(np.mean(worst))
    assert reference.maximum == pytest.approx(np.mean(best))
    assert reference_returns(env, rows, seed=0, average=0.5).average == 0.5


def test_summary_reports_turns_pass_k_and_the_normalised_return():
    env = make(max_turns=3, split="held_out")
    expert = policies.expert_policy()
    rows = [(u.user_id, t.task_id) for u, t in zip(env.users[:4], env.population.tasks[:4])]
    episodes = [[policies.play(env, expert, seed, {"user_id": u, "task_id": t}) for seed in range(3)] for u, t in rows]
    reference = reference_returns(env, [{"user_id": u, "task_id": t} for u, t in rows], seed=0, trials=2)
    summary = summarize_elicitation([[e.expected_return for e in row] for row in episodes],
                                    [[e.turns for e in row] for row in episodes],
                                    [[e.questions for e in row] for row in episodes],
                                    [[e.satisfied for e in row] for row in episodes], reference)
    assert summary["mean_turns"] == pytest.approx(summary["mean_questions"] + 1)
    assert summary["pass^1"] == pytest.approx(summary["success_rate"])
    assert summary["pass^1"] >= summary["pass^2"] >= summary["pass^3"]
    assert summary["normalised_return"] == pytest.approx(reference.normalise(summary["mean_return"]))


# --- scripted policies and demonstrations ---------------------------------------------------------------


def test_the_expert_asks_what_tells_the_groups_apart_and_beats_not_asking():
    env = make(max_turns=4, split="held_out")
    assert policies.telling_dimensions(env.population)[:2] == ["brevity", "formality"]
    expert = [policies.play(env, policies.expert_policy(), seed) for seed in range(15)]
    silent = [policies.play(env, policies.expert_policy(max_questions=0), seed) for seed in range(15)]
    assert all(e.questions <= 3 for e in expert) and all(e.questions == 0 for e in silent)
    assert np.mean([e.expected_return for e in expert]) > np.mean([e.expected_return for e in silent]) + 0.5


def test_filtered_demonstrations_keep_the_top_returns_and_become_sft_rows():
    env = make(max_turns=3)
    everything = policies.demonstrations(env, 20, seed=1, policy=policies.behaviour_policy())
    kept = policies.filtered_demonstrations(env, 20, seed=1, keep=0.2)
    returns = sorted((e.episode_return for e in everything), reverse=True)
    assert [e.episode_return for e in kept] == pytest.approx(returns[:4])
    rows = policies.sft_rows(kept)
    assert len(rows) == sum(e.turns for e in kept)
    for row in rows:
        assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
    expert_rows = policies.sft_rows(policies.demonstrations(env, 2, seed=1))
    assert any(is_question(r["completion"][0]["content"]) for r in expert_rows)


# --- config -------------------------------------------------------------------------------------------------


def test_config_passes_question_cost_only_to_elicitation_envs():
    from experiments.config import ConfigError
    from experiments.config_files import load_config

    config = load_config(None, [f"env.id={ENV_ID}", "env.question_cost=0.2", "env.max_turns=3", "method=grpo"])
    assert config.env.env_kwargs()["question_cost"] == 0.2
    make(**config.env.env_kwargs())  # every setting the config passes is one the env takes
    assert "question_cost" not in load_config(None, []).env.env_kwargs()
    with pytest.raises(ConfigError, match="env.question_cost"):
        load_config(None, ["env.question_cost=0.2"])


def test_elicits_from_another_scenarios_users():
    env = ElicitationEnv(scenario="writing", max_turns=3, noise=0.0)
    assert env.population.scenario_name == "writing"
    _, info = env.reset(seed=0)
    _, _, terminated, _, info = env.step("Should it be short?")
    weights = env.population.user(info["user_id"]).preference_weights
    assert not terminated and info["revealed"] == {"brevity": preference_level(weights["brevity"])}
    assert set(info["belief"]) == {"concise_professional", "warm_detailed"}
