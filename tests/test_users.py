import numpy as np
import pytest

from envs.features import STYLE_DIMENSIONS
from envs.population import UserPopulation
from envs.scenarios import Task, UserGroup
from envs.users import SATISFIED_MESSAGE, SimulatedUser, UserProfile


def profile(**weights):
    return UserProfile("u9999", "test", {d: weights.get(d, 0.0) for d in STYLE_DIMENSIONS}, {}, ())


TASK = Task("t", "write a note about a project", ("project", "note"))


# 30 words, on topic in its own sentences, one warm word ("hope"), no other style marker.
ON_TOPIC_30_WORDS = ("I hope the project note helps. It lists what we did this week and what we plan to do "
                     "next, so that you can see where things stand right now.")
SHORT_ON_TOPIC = "The project note is ready: it covers the budget, the schedule and the next review."
LONG_ON_TOPIC = "The project note is ready. " + " ".join(f"Step {i} is done." for i in range(50))


def test_utility_is_the_weighted_sum_of_centred_features_plus_relevance():
    user = SimulatedUser(profile(brevity=1.0, warmth=0.5), noise=0.0)
    # 30 words -> brevity 0.5 -> term 0; "hope" -> warmth 1/3 -> 0.5 * (2/3 - 1); both keywords -> relevance +1
    terms = user.utility_terms([ON_TOPIC_30_WORDS], [TASK])
    assert terms["brevity"][0] == pytest.approx(0.0)
    assert terms["warmth"][0] == pytest.approx(0.5 * (2 / 3 - 1))
    assert terms["relevance"][0] == pytest.approx(1.0)
    assert user.utility([ON_TOPIC_30_WORDS], [TASK])[0] == pytest.approx(1.0 + 0.5 * (2 / 3 - 1))


def test_a_reply_that_does_not_answer_meets_no_preference():
    """Relevance 0: every style term is -|w|, however well the reply matches the style (here: short, warm)."""
    user = SimulatedUser(profile(brevity=1.0, warmth=0.5, formality=-0.3), noise=0.0)
    terms = user.utility_terms(["Thanks, glad to help!"], [TASK])
    assert terms["relevance"][0] == pytest.approx(-1.0)
    assert [terms[d][0] for d in ("brevity", "warmth", "formality", "examples")] == pytest.approx([-1.0, -0.5, -0.3, 0.0])
    # Half relevant (1 of the 2 keywords): halfway between face value and -|w|.
    half = user.utility_terms(["I hope the note helps you plan the next steps before Friday's meeting."], [TASK])
    face = 0.5 * (2 * (1 / 3) - 1)
    assert half["relevance"][0] == pytest.approx(0.0)
    assert half["warmth"][0] == pytest.approx(0.5 * face - 0.5 * 0.5)


def test_echoing_the_users_own_request_is_not_relevant():
    user = SimulatedUser(profile(formality=0.8, brevity=0.6), noise=0.0)
    request = user.ask(TASK)
    assert "write a note about a project" in request
    for echo in (request, "Sure, here is a note about a project.", "Sure! I can write a note about your project."):
        assert user.utility_terms([echo], [TASK])["relevance"][0] == pytest.approx(-1.0), echo
        assert user.critique(echo, TASK)[0] == "relevance"


def test_noise_is_seeded_and_absent_without_rng():
    user = SimulatedUser(profile(brevity=1.0), noise=0.5)
    clean = user.utility(["a project note"], [TASK])
    noisy_a = user.utility(["a project note"], [TASK], rng=np.random.default_rng(3))
    noisy_b = user.utility(["a project note"], [TASK], rng=np.random.default_rng(3))
    assert noisy_a == pytest.approx(noisy_b)
    assert noisy_a != pytest.approx(clean)


def test_rating_and_pairwise_choice():
    user = SimulatedUser(profile(), rating_scale=1.0, choice_temperature=0.5)
    assert user.rating(np.array([-9.0, -1.0, 0.0, 0.6, 9.0])).tolist() == [1, 2, 3, 4, 5]
    assert user.choice_probability(1.0, 1.0) == pytest.approx(0.5)
    assert user.choice_probability(1.5, 1.0) == pytest.approx(1 / (1 + np.exp(-1.0)))
    strict = SimulatedUser(profile(brevity=1.0), choice_temperature=0.0)
    choices = strict.choose([SHORT_ON_TOPIC], [LONG_ON_TOPIC], [TASK], np.random.default_rng(0))
    assert choices.tolist() == [1]


def test_critique_names_the_dimension_with_most_headroom():
    user = SimulatedUser(profile(brevity=1.0, warmth=0.2))
    dimension, message = user.critique(LONG_ON_TOPIC, TASK)
    assert dimension == "brevity" and "shorter" in message
    assert user.critique("something else entirely", TASK)[0] == "relevance"
    assert SATISFIED_MESSAGE


def test_population_is_seeded_grouped_and_split():
    a = UserPopulation("writing", n_users=50, seed=7)
    b = UserPopulation("writing", n_users=50, seed=7)
    c = UserPopulation("writing", n_users=50, seed=8)
    assert [u.preference_weights for u in a.users] == [u.preference_weights for u in b.users]
    assert [u.preference_weights for u in a.users] != [u.preference_weights for u in c.users]
    assert {u.user_id for u in a.held_out_users}.isdisjoint(u.user_id for u in a.train_users)
    assert len(a.held_out_users) == 10
    # every group, minority included, is in both splits
    assert {u.group for u in a.held_out_users} == {u.group for u in a.train_users} == {g.name for g in a.groups}
    for user in a.users:
        assert len(user.history) >= 3 and all(isinstance(t, str) and t for t in user.history)


def test_groups_have_different_preferences():
    population = UserPopulation("writing", n_users=200, seed=0)
    means = {
        g.name: np.mean([u.weight_vector() for u in population.users if u.group == g.name], axis=0)
        for g in population.groups
    }
    majority, minority = means.values()
    brevity = STYLE_DIMENSIONS.index("brevity")
    assert majority[brevity] > 0.5 and minority[brevity] < -0.3


def test_population_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown scenario 'cooking'"):
        UserPopulation("cooking")
    with pytest.raises(ValueError, match="unknown preference dimension"):
        UserGroup("g", 1.0, {"humour": 1.0})
    with pytest.raises(KeyError, match="unknown user_id"):
        UserPopulation("writing", n_users=10).user("nobody")


@pytest.mark.parametrize("scenario", ["writing", "support", "tutor", "health"])
def test_writing_samples_are_in_the_users_own_style(scenario):
    """A user's own writing samples please that user more than they please users of the other groups."""
    population = UserPopulation(scenario, n_users=60, seed=1)
    task = Task("t", "anything", ())
    own, others = [], []
    for author in population.users:
        samples = [sample for _, sample in author.request_sample_pairs()]
        for reader in population.users[::6]:
            score = SimulatedUser(reader, noise=0.0).utility(samples, [task] * 3).mean()
            (own if reader.user_id == author.user_id else others).append((author.group == reader.group, score))
    own_scores = [s for _, s in own]
    other_group_scores = [s for same, s in others if not same]
    assert np.mean(own_scores) > np.mean(other_group_scores) + 0.3
