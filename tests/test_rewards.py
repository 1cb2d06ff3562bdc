import sys
import textwrap

import pytest

from envs.features import STYLE_DIMENSIONS
from envs.population import UserPopulation
from envs.scenarios import UserGroup
from rewards import REWARDS, RewardLookupError, build_reward, get_reward
from rewards.text import completion_texts, length_target
from rewards.user_feedback import user_feedback


@pytest.fixture(scope="module")
def population():
    # spread 0: every user's weights are exactly the group centre, so utilities are literal numbers.
    groups = [UserGroup("brief", 1.0, {"brevity": 1.0}, spread=0.0)]
    return UserPopulation("writing", n_users=4, seed=0, groups=groups)


def test_length_target_literal_values():
    completions = [" ".join(["w"] * 20), " ".join(["w"] * 40), "", " ".join(["w"] * 100)]
    assert length_target(None, completions, target_words=40) == [-0.5, 0.0, -1.0, -1.5]


def test_rewards_read_conversational_completions_and_multi_turn_replies():
    conversational = [[{"role": "assistant", "content": "one two"}]]
    assert completion_texts(conversational) == ["one two"]
    assert length_target(None, conversational, target_words=2) == [0.0]
    # a multi-turn rollout passes the policy's own turns; the user's messages in between are not scored
    assert length_target(None, ["ignored"], target_words=2, assistant_replies=[["one", "two"]]) == [0.0]


# Replies to write-000 ("write an email to a colleague about a delayed project deadline") that answer it in
# their own sentences (3 of its keywords, some content of their own): relevance 1. The users do not reward a
# bare list of the task's keywords ("email colleague project"), which these tests used before.
REPLY_30_WORDS = ("Hi Sam, the project deadline moves to Friday because of a supplier delay. Testing starts on "
                  "Monday and the release follows next week, so please plan your time around it.")
REPLY_14_WORDS = "The project deadline moves to Friday: a supplier delay held back the new parts."


def test_user_feedback_expected_utility_literal(population):
    user = population.users[0]
    task = population.tasks[0]  # "write an email to a colleague about a delayed project deadline"
    out = user_feedback(None, [REPLY_30_WORDS], user_id=[user.user_id], task_id=[task.task_id],
                        population=population, feedback="expected_utility")
    # 30 words: brevity 0.5 -> term 0, other weights 0, relevance 1 -> +1
    assert out == [pytest.approx(1.0)]
    short = user_feedback(None, [REPLY_14_WORDS], user_id=[user.user_id], task_id=[task.task_id],
                          population=population, feedback="expected_utility")
    assert short == [pytest.approx(1.0 + (2 / (1 + 14 / 30) - 1))]


def test_user_feedback_noise_is_a_pure_function_and_rating_is_likert(population):
    kwargs = dict(user_id=["u0000", "u0000"], task_id=["write-000"] * 2, population=population)
    a = user_feedback(None, ["a reply", "a reply"], noise=0.5, **kwargs)
    b = user_feedback(None, ["a reply", "a reply"], noise=0.5, **kwargs)
    assert a == b and a[0] == a[1]  # same user, same reply, same perception
    good = ("Dear colleague, the project deadline moves to 14 March because the supplier delivered the parts late. "
            "Please tell your team about the delay.")
    ratings = user_feedback(None, ["a reply", good], feedback="rating", noise=0.0, **kwargs)
    # The rating is the user's own Likert answer to the noise-free utility, mapped to (rating - 3) / 2.
    user, task = population.simulated_user("u0000", noise=0.0), population.task("write-000")
    likert = user.rating(user.utility(["a reply", good], [task, task]))
    assert ratings == [(int(r) - 3) / 2 for r in likert]
    assert ratings[0] == -1.0 and ratings[1] > 0  # a non-answer is the worst rating; an answer is above the middle


def test_user_feedback_uses_env_reward_from_multi_turn_rollouts(population):
    out = user_feedback(None, ["x", "y"], user_id=["u0000"] * 2, task_id=["write-000"] * 2, population=population,
                        env_reward=[0.25, -1.0])
    assert out == [0.25, -1.0]


def test_user_feedback_reports_terms(population):
    seen = {}
    user_feedback(None, ["email"], user_id=["u0000"], task_id=["write-000"], population=population,
                  report=lambda name, terms: seen.update({name: terms}))
    assert set(seen["user_feedback"]) == set(STYLE_DIMENSIONS) | {"relevance"}


def test_registry_and_dotted_path(tmp_path, monkeypatch):
    assert get_reward("length_target") is length_target
    assert set(REWARDS) >= {"user_feedback", "length_target"}
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def shouting(prompts, completions, bonus=1.0, **kwargs):
            return [bonus if c.isupper() else 0.0 for c in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward("my_rewards:shouting", {"bonus": 2.0})
    assert reward.__name__ == "shouting"
    assert reward(None, ["HEY", "hey"]) == [2.0, 0.0]
    sys.modules.pop("my_rewards", None)


def test_lookup_errors_name_the_fix():
    with pytest.raises(RewardLookupError, match="built-in rewards: belief_bonus, embedding_similarity, keyword_coverage, learned_reward_model, length_target"):
        get_reward("lenght_target")
    with pytest.raises(RewardLookupError, match="cannot import module"):
        get_reward("no_such_module_xyz:f")
    with pytest.raises(RewardLookupError, match="unknown parameter"):
        build_reward("length_target", {"target": 3})


def test_built_reward_binds_population(population):
    reward = build_reward("user_feedback", {"feedback": "expected_utility"}, population=population)
    assert reward.__name__ == "user_feedback"
    assert reward(None, [REPLY_30_WORDS], user_id=["u0001"], task_id=["write-000"]) == [
        pytest.approx(1.0)
    ]


def test_user_feedback_env_channel_follows_the_environments_feedback(population):
    import gymnasium as gym

    import envs  # noqa: F401

    def factory(feedback):
        return lambda: gym.make("attune/WritingAssistant-v1", population=population, split="all", feedback=feedback,
                                noise=0.0).unwrapped

    replies = [REPLY_30_WORDS, "lol!!! " * 20]
    kwargs = dict(user_id=["u0000", "u0000"], task_id=["write-000"] * 2, population=population, feedback="env")
    implicit = user_feedback(None, replies, env_factory=factory("implicit"), **kwargs)
    # utility 1.0 (>= 0, below the satisfaction threshold 1.5): "continues"; the 20-word off-topic reply has
    # utility 2/(1+20/30)-1-1 = -0.8 < 0: "rephrases"
    assert implicit == [0.5, 0.0]
    pairwise = user_feedback(None, replies, env_factory=factory("pairwise"), **kwargs)
    # against the task's reference reply (utility ~1.22) the off-topic one wins with probability ~3e-4
    assert pairwise[0] in (1.0, -1.0) and pairwise[1] == -1.0
    assert pairwise == user_feedback(None, replies, env_factory=factory("pairwise"), **kwargs)  # pure function
    with pytest.raises(ValueError, match="needs env_factory"):
        user_feedback(None, replies, **kwargs)
