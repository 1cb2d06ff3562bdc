"""The elicit suite (LMRL-Gym's BC / filtered BC / RL comparison, CURIO's belief bonus): its arms, its metrics computed
from a trial's episodes (returns after question costs, questions, pass^k over seeds, the normalised return against
the behaviour data), claims that read the published shape the right way round, and the smoke through the CLI."""

import json
import math
from pathlib import Path

import pytest
import yaml

from experiments.benchmark_spec import arm_config_data, load_benchmark, scale_arms

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("elicit")


def test_the_arms_are_the_five_set_ups_the_issue_names(bench):
    from experiments.config import ExperimentConfig

    configs = {a.name: ExperimentConfig.model_validate(arm_config_data(bench, a, "paper")) for a in bench.arms}
    assert {n: c.method for n, c in configs.items()} == {
        "prompting": "prompting", "bc": "bc", "filtered_bc": "bc", "grpo_sparse": "grpo", "grpo_belief": "grpo"}
    assert configs["filtered_bc"].method_settings["filtered"] and not configs["bc"].method_settings.get("filtered")
    # BC and filtered BC clone the same conversations: only the filter differs
    assert {k: v for k, v in configs["filtered_bc"].method_settings.items() if k not in ("filtered", "keep")} == \
        configs["bc"].method_settings
    rewards = {n: [(r.name, r.weight) for r in c.rewards] for n, c in configs.items()}
    assert rewards["grpo_sparse"] == [("user_feedback", 1.0)]
    assert rewards["grpo_belief"] == [("user_feedback", 1.0), ("belief_bonus", 0.5)]
    assert all(c.env.id == "attune/Elicitation-v1" for c in configs.values())


def test_the_smoke_runs_the_arms_the_claims_name_with_enough_seeds_for_pass_2(bench):
    named = {term.arm for claim in bench.claims for term in claim.terms()}
    assert {arm.name for arm in scale_arms(bench, "smoke")} == named
    assert len(bench.scales["smoke"].seeds) >= 2


def _claims(bench, metrics_by_arm):
    from experiments.benchmark_report import aggregate, evaluate_claim

    trials = [{"arm": arm, "levels": {}, "seed": 0, "status": "done", "metrics": metrics}
              for arm, metrics in metrics_by_arm.items()]
    cells = aggregate(bench, trials, {})
    return {claim.id: evaluate_claim(claim, cells, {})["status"] for claim in bench.claims}


def _shape(published: bool) -> dict:
    """filtered BC > BC, GRPO > BC, the belief bonus lifting the minority (published=True), or each reversed."""
    s = 1 if published else -1
    normalised = {"prompting": 30.0, "bc": 50.0, "filtered_bc": 50.0 + 10 * s, "grpo_sparse": 50.0 + 15 * s,
                  "grpo_belief": 70.0}
    minority = {"grpo_sparse": -0.5, "grpo_belief": -0.5 + 0.3 * s}
    return {arm: {"normalised_return": value, "episode_return": 0.0, "turns": 2.0, "questions": 1.0,
                  "pass_hat_1": 0.5, "pass_hat_2": 0.3, "return:brief_formal": 0.5,
                  "return:detailed_warm": minority.get(arm, 0.0)} for arm, value in normalised.items()}


def test_the_claims_hold_on_the_published_shape_and_fail_on_its_opposite(bench):
    assert set(_claims(bench, _shape(published=True)).values()) == {"held"}
    assert set(_claims(bench, _shape(published=False)).values()) == {"not held"}


# --- the metrics, on hand-made trials ----------------------------------------------------------------------------

CONFIG = {"experiment": "elicit", "seed": 0, "env": {"id": "attune/Elicitation-v1", "max_turns": 3, "question_cost": 0.1},
          "users": {"n_users": 30, "seed": 0}, "policy": {"model": "tiny-random"}, "method": "grpo",
          "evaluation": {"prompts": 2, "seed": 7}}


def _episode(user, task, utilities, satisfied, group="brief_formal", left=False):
    terms = [{"questions": -0.1}] * (len(utilities) - 1) + [{"questions": -0.1 if left else 0.0}]
    return {"user_id": user, "task_id": task, "group": group, "replies": ["r"] * len(utilities),
            "expected_utilities": utilities, "satisfied": satisfied, "terms": terms}


def _trial(folder: Path, seed: int, after: list, method: str = "grpo") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "seed": seed, "method": method}))
    (folder / "episodes.json").write_text(json.dumps({"before": after, "after": after}))
    (folder / "eval.json").write_text(json.dumps({"before": {}, "after": {}, "comparison": {}}))
    return folder


def test_returns_turns_and_questions_count_each_questions_cost(tmp_path):
    from experiments.benchmark_metrics import trial_metrics

    run = _trial(tmp_path / "arm" / "s0", 0, [
        _episode("u1", "t1", [-0.1, -0.1, 1.0], True),                     # two questions, then the answer
        _episode("u2", "t2", [0.4], False, group="detailed_warm"),          # answered at once
        _episode("u3", "t3", [-0.1, -2.0], False, group="detailed_warm", left=True),  # asked, asked again: left
    ])
    metrics = trial_metrics(run, ["episode_return", "turns", "questions", "return:detailed_warm", "return:brief_formal"])
    assert metrics["episode_return"] == pytest.approx((0.8 + 0.4 - 2.1) / 3)
    assert metrics["turns"] == pytest.approx(2.0)
    assert metrics["questions"] == pytest.approx((2 + 0 + 2) / 3)
    assert metrics["return:detailed_warm"] == pytest.approx((0.4 - 2.1) / 2)
    assert metrics["return:brief_formal"] == pytest.approx(0.8)


def test_pass_hat_k_pools_the_seeds_of_the_same_arm_only(tmp_path):
    from experiments.benchmark_metrics import trial_metrics

    # conversation a: satisfied under 2 of 3 seeds; b: under all 3. Another arm beside them is not a seed of this one.
    outcomes = {0: (True, True), 1: (True, True), 2: (False, True)}
    runs = [_trial(tmp_path / "arm" / f"s{seed}", seed, [_episode("a", "t", [1.0], sa), _episode("b", "t", [1.0], sb)])
            for seed, (sa, sb) in outcomes.items()]
    _trial(tmp_path / "arm" / "other", 0, [_episode("a", "t", [1.0], False), _episode("b", "t", [1.0], False)],
           method="bc")
    expected = {"pass_hat_1": (2 / 3 + 1) / 2, "pass_hat_2": (1 / 3 + 1) / 2, "pass_hat_3": (0 + 1) / 2}
    for run in runs:  # every seed's trial reports the pooled value
        assert trial_metrics(run, list(expected)) == pytest.approx(expected)
    alone = _trial(tmp_path / "solo" / "s0", 0, [_episode("a", "t", [1.0], True)])
    assert trial_metrics(alone, ["pass_hat_1"]) == {"pass_hat_1": 1.0}
    assert math.isnan(trial_metrics(alone, ["pass_hat_2"])["pass_hat_2"])  # fewer seeds than k


def test_normalised_return_is_0_at_the_worst_50_at_the_behaviour_data_and_100_at_the_oracle(tmp_path):
    from agents.rollouts import make_env
    from envs.elicitation_policies import oracle_return, worst_return
    from experiments.benchmark_metrics import Trial, elicitation_reference, trial_metrics
    from experiments.elicitation_metrics import reference_returns

    probe = _trial(tmp_path / "probe" / "s0", 0, [_episode("x", "y", [0.0], False)])
    population = Trial(probe).population
    user = population.held_out_users[0]
    task = population.scenario.tasks[0]
    rows = [{"user_id": user.user_id, "task_id": task.task_id}]
    env = make_env("attune/Elicitation-v1", population=population, split="held_out", max_turns=3, question_cost=0.1)
    env.reset(seed=0, options=rows[0])
    worst, best = worst_return(env), oracle_return(env)
    average = reference_returns(env, rows, seed=7).average
    for name, value, expected in (("worst", worst, 0.0), ("average", average, 50.0), ("best", best, 100.0)):
        run = _trial(tmp_path / name / "s0", 0, [_episode(user.user_id, task.task_id, [value], False)])
        assert elicitation_reference(Trial(run)).average_source == "behaviour"
        assert trial_metrics(run, ["normalised_return"])["normalised_return"] == pytest.approx(expected, abs=1e-6), name


@pytest.mark.slow
def test_elicit_smoke_through_the_cli(benchmark_smoke, bench):
    folder, data = benchmark_smoke("elicit")
    smoke_arms = [arm.name for arm in scale_arms(bench, "smoke")]
    seeds = bench.scales["smoke"].seeds
    assert [t["arm"] for t in data["trials"]] == [a for a in smoke_arms for _ in seeds]
    assert all(t["status"] == "done" for t in data["trials"])
    for trial in data["trials"]:
        episodes = json.loads((Path(trial["run_dir"]) / "episodes.json").read_text())["after"]
        returns = [sum(e["expected_utilities"]) for e in episodes]
        assert trial["metrics"]["episode_return"] == pytest.approx(sum(returns) / len(returns))
        assert 1 <= trial["metrics"]["turns"] <= 4
        pooled = [t["metrics"]["pass_hat_2"] for t in data["trials"] if t["arm"] == trial["arm"]]
        assert not math.isnan(pooled[0]) and len(set(pooled)) == 1  # pass^2 pools the arm's two seeds
    assert {c["id"] for c in data["claims"]} == {c.id for c in bench.claims}
    for claim in data["claims"]:
        assert claim["status"] in ("held", "not held"), claim
    text = (folder / "benchmark.md").read_text()
    assert "### normalised_return" in text and "filtered BC" in text
    assert (folder / "plots" / "benchmark.png").stat().st_size > 0
