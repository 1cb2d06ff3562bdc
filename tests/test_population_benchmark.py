"""The population suite's pieces: Dirichlet users, past choices, k-shot / retrieval / fit-and-rerank, its metrics."""

import json
from pathlib import Path

import numpy as np
import pytest

from envs.choices import K_CANDIDATES, candidate_replies, choice_history
from envs.population import UserPopulation

REPO = Path(__file__).resolve().parents[1]


def _population(alpha, n_users=60, seed=0):
    return UserPopulation("writing", n_users=n_users, seed=seed, dirichlet_alpha=alpha, held_out_fraction=0.3)


def test_dirichlet_users_are_archetype_mixtures_and_small_alpha_makes_them_extreme():
    sharp, flat = _population(0.05), _population(1.0)
    for population in (sharp, flat):
        weights = np.array([u.weight_vector() for u in population.users])
        # w_d = p(d+) - p(d-) for a mixture p over the 2D archetypes: |w|_1 <= 1
        assert np.all(np.abs(weights).sum(axis=1) <= 1.0 + 1e-3)
        assert {u.group for u in population.users} == {"dirichlet"}
    strongest = {a: np.mean([np.abs(u.weight_vector()).max() for u in p.users]) for a, p in ((0.05, sharp), (1.0, flat))}
    assert strongest[0.05] > 0.6 > 0.3 > strongest[1.0]  # one archetype dominates at small alpha; all blend at 1
    again = _population(0.05)
    assert [u.preference_weights for u in again.users] == [u.preference_weights for u in sharp.users]
    with pytest.raises(ValueError, match="users.groups or users.dirichlet_alpha, not both"):
        UserPopulation("writing", n_users=10, dirichlet_alpha=0.3, groups=sharp.groups)


def test_a_bad_dirichlet_alpha_is_one_config_line():
    from experiments.config import ConfigError
    from experiments.config_files import load_config

    with pytest.raises(ConfigError, match="users.dirichlet_alpha"):
        load_config(REPO / "experiments" / "configs" / "tiny.yaml", ["users.dirichlet_alpha=0"])


def test_choice_histories_are_deterministic_prefixes_and_follow_the_users_utility():
    population = _population(0.05)
    user_id = population.held_out_users[0].user_id
    long = choice_history(population, user_id, 8)
    assert choice_history(population, user_id, 3) == long[:3]
    assert len({p.task_id for p in long}) == 8 and all(len(p.candidates) == K_CANDIDATES for p in long)
    winners, losers = [], []
    for profile in population.users[:20]:
        user = population.simulated_user(profile.user_id)
        for past in choice_history(population, profile.user_id, 5):
            task = population.task(past.task_id)
            assert past.request == user.ask(task) and past.candidates == candidate_replies(task)
            winner, loser = user.utility([past.winner, past.loser], [task, task])
            winners.append(winner)
            losers.append(loser)
    # Plackett-Luce at the users' temperature: the chosen reply is better than the last-ranked one
    assert np.mean(np.array(winners) > np.array(losers)) > 0.9


def test_bradley_terry_fit_recovers_known_weights():
    from agents.rerank import fit_preference_weights

    rng = np.random.default_rng(0)
    true = np.array([0.8, -0.5, 0.3, 0.0, -0.2, 0.6])
    design = rng.uniform(-1, 1, size=(3000, 8, 6))
    offsets = rng.uniform(-0.5, 0.5, size=(3000, 8))
    temperature = 0.25
    logits = (design @ true + offsets) / temperature
    chosen = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)  # K-way Bradley-Terry choices
    fitted = fit_preference_weights(design, offsets, chosen, temperature, l2=0.1)
    assert np.max(np.abs(fitted - true)) < 0.05, fitted


def test_fit_and_rerank_picks_the_users_best_candidate_more_often_than_chance():
    from agents.rerank import Reranker, Settings

    population = _population(0.05)
    reranker = Reranker(population, Settings(k=5))
    task = population.tasks[7]
    best, regret = 0, []
    for profile in population.held_out_users:
        user = population.simulated_user(profile.user_id)
        candidates = list(candidate_replies(task))
        utilities = user.utility(candidates, [task] * len(candidates))
        chosen = reranker.choose(profile.user_id, [{"role": "user", "content": user.ask(task)}], candidates)
        best += int(chosen == int(np.argmax(utilities)))
        regret.append(utilities.max() - utilities[chosen])
    # 8 candidates: chance picks the best 1 time in 8; five past choices fitted pick it for about half the users
    assert best / len(population.held_out_users) > 0.4
    assert np.mean(regret) < 0.15


def test_reranking_policy_samples_k_replies_per_conversation_in_one_batch_and_sends_the_chosen_one():
    from agents import TrainedPolicy

    calls = []

    def generate(conversations):
        calls.append(len(conversations))
        return [f"reply {i}" for i in range(len(conversations))]

    policy = TrainedPolicy(None, candidates=3, choose_reply=lambda user_id, messages, options: 2 if user_id == "a" else 0)
    conversations = [[{"role": "user", "content": "x"}], [{"role": "user", "content": "y"}]]
    assert policy.replies(generate, ["a", "b"], conversations) == ["reply 2", "reply 3"]
    assert calls == [6]
    assert TrainedPolicy(None).replies(generate, ["a", "b"], conversations) == ["reply 0", "reply 1"]


def test_kshot_shows_own_winners_or_losers_and_retrieval_shows_similar_users_winners():
    from agents.kshot import ExampleFinder, Settings, system_prompt

    population = _population(0.05)
    user_id = population.held_out_users[0].user_id
    past = choice_history(population, user_id, 4)
    winning = ExampleFinder(population, Settings(k=3)).examples(user_id, "a new request")
    assert winning == [(p.request, p.winner) for p in past[:3]]
    # the current request is never its own example: the next past choice takes its place
    assert ExampleFinder(population, Settings(k=3)).examples(user_id, past[0].request) == [
        (p.request, p.winner) for p in past[1:4]]
    losing = ExampleFinder(population, Settings(k=3, examples="losing")).examples(user_id, "a new request")
    assert losing == [(p.request, p.loser) for p in past[:3]]
    assert "avoid answering like them" in system_prompt(losing, winning=False)
    assert f"Request: {past[0].request}\nReply: {past[0].winner}" in system_prompt(winning, winning=True)

    finder = ExampleFinder(population, Settings(k=3, source="similar"))
    train_ids = {u.user_id for u in population.train_users}
    near, far = [], []
    for profile in population.held_out_users:
        neighbours = finder.neighbours(profile.user_id)
        assert profile.user_id not in neighbours and set(neighbours) <= train_ids
        user = population.simulated_user(profile.user_id)
        task = population.tasks[7]
        utilities = user.utility(list(candidate_replies(task)), [task] * K_CANDIDATES)
        # how good, for this user, the style its nearest / farthest neighbours chose is
        near.append(np.mean([utilities[choice_history(population, n, 10)[0].chosen] for n in neighbours[:3]]))
        far.append(np.mean([utilities[choice_history(population, n, 10)[0].chosen] for n in neighbours[-3:]]))
    assert np.mean(near) > np.mean(far) + 0.2
    examples = finder.examples(user_id, "a new request")
    assert len(examples) == 3 and all(reply in candidate_replies(population.task(
        next(p.task_id for p in choice_history(population, n, 10) if p.request == request)))
        for (request, reply), n in zip(examples, finder.neighbours(user_id)))


class _Trial:
    """What the population metrics read from a trial: its population and first replies."""

    def __init__(self, population, replies):
        self.population = population
        self.replies = replies

    def first_replies(self, which="after"):
        return [(self.population.simulated_user(u), self.population.task(t), reply, {}) for u, t, reply in self.replies]


def test_win_rate_vs_the_best_of_k_is_one_half_for_the_best_candidate_itself():
    from experiments import benchmark_metrics

    population = _population(0.05)
    task = population.tasks[3]
    rows = []
    for profile in population.held_out_users[:6]:
        user = population.simulated_user(profile.user_id)
        candidates = list(candidate_replies(task))
        rows.append((profile.user_id, task.task_id, candidates[int(np.argmax(user.utility(candidates, [task] * 8)))]))
    assert benchmark_metrics.win_rate_vs_best_of_k(_Trial(population, rows)) == pytest.approx(0.5)
    # the same replies against everyone's favourite candidate: the users' own best wins at least half the time
    assert benchmark_metrics.win_rate_vs_top_candidate(_Trial(population, rows)) >= 0.5
    worst = [(u, t, "ok") for u, t, _ in rows]  # a reply that answers nothing loses to every candidate
    assert benchmark_metrics.win_rate_vs_best_of_k(_Trial(population, worst)) < 0.05


@pytest.mark.slow
def test_population_smoke_through_the_cli(benchmark_smoke):
    folder, data = benchmark_smoke("population")
    assert len(data["trials"]) == 4 * 2 and all(t["status"] == "done" for t in data["trials"])
    assert {t["seed"] for t in data["trials"]} == {0}  # users.seed 0
    # zero-shot is every trial's base policy: the same conversations and seeds, so one value per alpha
    base = {(t["levels"]["alpha"], t["metrics"]["base_win_rate_vs_top_candidate"]) for t in data["trials"]}
    assert {alpha for alpha, _ in base} == {"0.05", "1"} and len(base) == 2
    assert {c["id"] for c in data["claims"]} == {"zero_shot_far_below_kshot", "winning_beats_losing", "retrieval_beats_own",
                                                  "gain_grows_as_alpha_shrinks", "fit_rerank_beats_kshot",
                                                  "fit_rerank_beats_retrieval"}
    for claim in data["claims"]:
        assert claim["status"] in ("held", "not held"), claim
    rerank = next(t for t in data["trials"] if t["arm"] == "fit_rerank")
    fitted = json.loads((Path(rerank["run_dir"]) / "checkpoints" / "final" / "fit_rerank.json").read_text())
    assert fitted["candidates"] == 8 and set(fitted["fitted_weights"]) == set(fitted["true_weights"])
    text = (folder / "benchmark.md").read_text()
    assert "### win_rate_vs_best_of_k" in text and "8.0 % vs GPT-4o" in text
    assert (folder / "plots" / "benchmark.png").stat().st_size > 0
