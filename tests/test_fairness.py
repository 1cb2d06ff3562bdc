"""The fairness report and the explanations: literal numbers on hand-built evaluations, the fairness: options,
and `attune explain` on a tiny-model run through the real CLI."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from experiments import evaluate, explain, fairness, metrics, stats
from experiments.cli import app
from experiments.evaluate import EpisodeResult

from standins import FixedProbabilityUsers

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "configs" / "tiny.yaml"


class StandInUsers(FixedProbabilityUsers):
    """Users who prefer the trained reply with the probability written in it, with a ``level`` trait."""

    levels = {"u1": "novice", "u2": "novice", "u3": "expert", "u4": "novice"}

    def user(self, user_id):
        return SimpleNamespace(traits={"level": self.levels[user_id]})


# (user, group, utility before, utility after, win probability of the trained reply)
CONVERSATIONS = [("u1", "a", 0.0, 0.4, "1"), ("u2", "a", 0.2, 0.1, "0.5"), ("u2", "a", 0.4, 0.3, "0"),
                 ("u3", "b", 1.0, 0.5, "0.2"), ("u4", "b", 0.8, 1.1, "0.6")]


def _episodes():
    before = [EpisodeResult(u, g, "t", ["0"], [0.0], [b], False) for u, g, b, _, _ in CONVERSATIONS]
    after = [EpisodeResult(u, g, "t", [p], [0.0], [a], False) for u, g, _, a, p in CONVERSATIONS]
    return before, after


def test_group_extremes_are_the_lowest_group_mean_and_the_spread_with_bootstrap_intervals():
    worst, gap = stats.group_extremes({"a": [0.1, 0.3, 0.2], "b": [0.5, 0.7]})
    assert (worst.value, gap.value, worst.n) == (pytest.approx(0.2), pytest.approx(0.4), 2)
    # Resampled means of a lie in [0.1, 0.3] and of b in [0.5, 0.7]: the intervals cannot leave those ranges.
    assert 0.1 <= worst.low <= 0.2 <= worst.high <= 0.3
    assert 0.2 <= gap.low <= 0.4 <= gap.high <= 0.6
    assert worst.interval == "95% stratified bootstrap CI (groups resampled separately)"
    small_worst, _ = stats.group_extremes({"a": [0.1, 0.3], "b": [0.5]})  # a group of one: no interval
    assert small_worst.value == pytest.approx(0.2) and small_worst.low != small_worst.low


def test_fairness_numbers_on_a_hand_built_evaluation():
    before, after = _episodes()
    report = {"before": evaluate.summarize(before), "after": evaluate.summarize(after),
              "comparison": evaluate.compare(before, after, StandInUsers(), seed=0, noise=0.0)}
    # Group means after: a (0.4 + 0.1 + 0.3) / 3, b (0.5 + 1.1) / 2; before: a 0.2, b 0.9.
    assert report["after"]["worst_group_utility"] == pytest.approx(0.8 / 3)
    assert report["after"]["group_gap"] == pytest.approx(0.8 - 0.8 / 3)
    assert report["before"]["worst_group_utility"] == pytest.approx(0.2)
    assert report["before"]["group_gap"] == pytest.approx(0.7)
    section = report["comparison"]["fairness"]
    assert section["after"]["worst_group"] == "a" and section["before"]["worst_group"] == "a"
    assert section["after"]["group_gap"] == pytest.approx(report["after"]["group_gap"])
    # Users: u1 +0.4, u2 (0.1 + 0.3 - 0.2 - 0.4) / 2 = -0.1, u3 -0.5, u4 +0.3: two of four worse off (Wilson).
    comparison = report["comparison"]
    assert comparison["worse_off_users"] == 2 and comparison["worse_off_share_n"] == 4
    assert comparison["worse_off_share"] == 0.5
    assert comparison["worse_off_share_ci_low"] == pytest.approx(0.1500, abs=1e-4)
    assert comparison["worse_off_share_ci_high"] == pytest.approx(0.8500, abs=1e-4)
    assert comparison["worse_off_share_interval"] == "95% Wilson score CI"
    assert section["by_user"]["u2"]["change"] == pytest.approx(-0.1) and section["by_user"]["u2"]["conversations"] == 2
    # Per group: utility, paired improvement, win rate (mean of the users' probabilities, clipped t interval).
    a, b = section["groups"]["a"], section["groups"]["b"]
    assert (a["n"], a["users"], b["n"], b["users"]) == (3, 2, 2, 2)
    assert a["before"] == pytest.approx(0.2) and a["after"] == pytest.approx(0.8 / 3)
    assert a["improvement"] == pytest.approx(0.2 / 3) and b["improvement"] == pytest.approx(-0.1)
    assert a["win_rate"] == pytest.approx(0.5) and b["win_rate"] == pytest.approx(0.4)
    assert (b["win_rate_ci_low"], b["win_rate_ci_high"]) == (0.0, 1.0)  # 0.4 ± 12.706 · 0.2: clipped
    # Per trait: level=novice is conversations 1, 2, 3 and 5.
    novice = section["traits"]["level=novice"]
    assert novice["n"] == 4 and novice["after"] == pytest.approx(1.9 / 4)
    assert novice["improvement"] == pytest.approx(0.125)
    assert set(section["traits"]) == {"level=novice", "level=expert"}

    table = metrics.evaluation_table(report).to_markdown()
    assert "| users made worse off by training | | 2/4 = 0.50 [0.15, 0.85] |" in table
    assert "worst-group utility and max-min gap: 95% stratified bootstrap CI" in table
    text = "\n".join(fairness.fairness_markdown(report))
    assert "Worst group after training: **a**, utility 0.267" in text
    assert "Users made worse off by training: 2 of 4 held-out users, 0.50 [0.15, 0.85]" in text
    assert "| group b | 2 | 2 | +0.900 ± " in text and "| level=novice | 4 | 3 |" in text


def test_one_group_reports_no_worst_group_or_gap_but_still_the_users_worse_off():
    before, after = _episodes()
    before, after = before[:3], after[:3]
    summary = evaluate.summarize(after)
    assert "worst_group_utility" not in summary and "group_gap" not in summary
    comparison = evaluate.compare(before, after, StandInUsers(), seed=0, noise=0.0)
    assert "after" not in comparison["fairness"] and comparison["worse_off_users"] == 1
    assert fairness.fairness_line({"comparison": comparison}) == "fairness: 1/2 users worse off (one user group)"


def test_the_variants_table_shows_worst_group_gap_and_users_worse_off(tmp_path):
    from experiments.comparison import write_comparison

    before, after = _episodes()
    report = {"before": evaluate.summarize(before), "after": evaluate.summarize(after),
              "comparison": evaluate.compare(before, after, StandInUsers(), seed=0, noise=0.0), "train_seconds": 1.0}
    table = write_comparison(tmp_path, [{"variant": "grpo", "method": "grpo", **report}])
    assert table[0]["worst_group_utility"] == pytest.approx(0.8 / 3) and table[0]["worse_off_users"] == 2
    markdown = (tmp_path / "comparison.md").read_text()
    assert "worst-group utility after | max-min group gap after | users worse off |" in markdown
    assert "| 2/4 = 0.50 [0.15, 0.85] |" in markdown

    # Two training seeds: each run's own value, mean over the seeds with a t interval.
    from experiments.comparison import comparison_table

    seeds = []
    for seed, shift in ((0, 0.0), (1, 0.2)):
        shifted = [EpisodeResult(e.user_id, e.group, "t", e.replies, [0.0], [e.score + (shift if e.group == "a" else 0.0)],
                                 False) for e in after]
        seeds.append({"variant": "grpo", "method": "grpo", "seed": seed, "train_seconds": 1.0,
                      "before": report["before"], "after": evaluate.summarize(shifted),
                      "comparison": evaluate.compare(before, shifted, StandInUsers(), seed=0, noise=0.0),
                      "after_scores": [e.score for e in shifted], "base_scores": [[e.score for e in before]]})
    (entry,) = comparison_table(seeds)
    assert entry["worst_group_utility"] == pytest.approx((0.8 / 3 + 1.4 / 3) / 2)  # group a, then a + 0.2
    assert entry["worst_group_utility_interval"] == "95% Student-t CI over training seeds"
    assert entry["worse_off_share"] == pytest.approx((0.5 + 0.25) / 2)  # u2 is no longer worse off with +0.2


def _record(user, group, score, terms, reply):
    return {"user_id": user, "group": group, "task_id": "t", "replies": [reply], "score": score, "terms": [terms]}


def test_an_explanation_names_the_dimension_that_moved_and_its_sign():
    before = [_record("u1", "a", 0.8, {"brevity": 0.1, "warmth": 0.2, "relevance": 0.5}, "a long reply"),
              _record("u2", "b", 0.0, {"brevity": -0.2, "warmth": 0.1, "relevance": 0.1}, "hello")]
    after = [_record("u1", "a", 1.05, {"brevity": 0.4, "warmth": 0.15, "relevance": 0.5}, "short"),
             _record("u2", "b", 0.0, {"brevity": -0.2, "warmth": 0.1, "relevance": 0.1}, "hello")]
    weights = {"u1": {"brevity": 0.8, "warmth": 0.3}, "u2": {"brevity": -0.5, "warmth": 0.1}}
    explanation = explain.explain(before, after, weights)
    assert list(explanation["terms"])[0] == "brevity"
    assert explanation["terms"]["brevity"]["change"] == pytest.approx(0.15)  # +0.3 and 0 over two conversations
    assert explanation["by_group"]["a"]["brevity"] == pytest.approx(0.3)
    assert explanation["by_group"]["a"]["warmth"] == pytest.approx(-0.05)
    assert explanation["served"]["brevity"] == {"served": 1, "against": 0, "users": 2}
    assert explanation["served"]["warmth"] == {"served": 0, "against": 1, "users": 2}
    assert "relevance" not in explanation["served"]  # no preference weight behind it
    assert explanation["most_changed"]["user_id"] == "u1"
    assert explanation["most_changed"]["after_reply"] == "short"

    lines = explain.explanation_lines(explanation, "u1")
    assert "  what changed: brevity +0.30, warmth -0.05, relevance +0.00" in lines
    assert ("  why: served this user's weights on brevity (+0.30; weight +0.80: wants more brevity); went against "
            "warmth (-0.05; weight +0.30: wants more warmth)") in lines
    run_lines = explain.explanation_lines(explanation)
    assert "  group a: brevity +0.30, warmth -0.05, relevance +0.00" in run_lines
    assert "  u1 (a, 1 conv.): +0.80 -> +1.05 (+0.25); brevity +0.30, warmth -0.05, relevance +0.00" in run_lines
    with pytest.raises(explain.ExplainError, match="--user u9: not among this run's evaluated held-out users"):
        explain.explanation_lines(explanation, "u9")


def test_fairness_options_parse_swap_the_reward_and_balance_the_training_prompts():
    from collections import Counter

    from agents.rollouts import build_prompt_dataset, make_env
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup
    from experiments.config import ExperimentConfig

    config = ExperimentConfig.model_validate({
        "rewards": [{"name": "user_feedback", "weight": 0.5, "params": {"noise": 0.2, "feedback": "rating"}},
                    {"name": "length_target"}],
        "fairness": {"maxmin": True, "balanced_sampling": True}})
    swapped = fairness.training_rewards(config)
    assert [(s.name, s.weight, s.params) for s in swapped] == [("maxmin", 0.5, {"noise": 0.2}), ("length_target", 1.0, {})]
    assert [s.name for s in fairness.training_rewards(ExperimentConfig())] == ["user_feedback"]

    groups = [UserGroup("majority", 10.0, {"brevity": 1.0}, spread=0.0), UserGroup("minority", 1.0, {"brevity": -1.0}, spread=0.0)]
    env = make_env("attune/WritingAssistant-v1", population=UserPopulation("writing", n_users=110, seed=0, groups=groups))
    balanced = Counter(r["group"] for r in build_prompt_dataset(env, 20, seed=0, balance_groups=True))
    pooled = Counter(r["group"] for r in build_prompt_dataset(env, 20, seed=0))
    assert balanced == {"majority": 10, "minority": 10}
    assert pooled["majority"] > 15


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["fairness.maxmin=maybe"], "config error: fairness.maxmin: Input should be a valid boolean"),
        (["fairness.balance=true"], "config error: fairness.balance"),
        (["fairness.balanced_sampling=true", "users.dirichlet_alpha=0.5"],
         "config error: fairness.balanced_sampling: needs at least 2 user groups, and users.dirichlet_alpha draws "
         "everyone into one group gives 1"),
        (["fairness.maxmin=true", "rewards=[{name: length_target}]"],
         "config error: fairness.maxmin: swaps the user_feedback reward for MaxMin, but rewards has none"),
        (["fairness.balanced_sampling=true", "method=prompting", "trainer={}"],
         "config error: fairness.balanced_sampling: method prompting draws no training prompts"),
    ],
)
def test_bad_fairness_options_are_one_line_errors(overrides, expected, tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(TINY), f"tracking.runs_dir={runs}", *overrides])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_explain_errors_are_one_line(tmp_path):
    (tmp_path / "not-evaluated").mkdir()
    for folder, expected in ((tmp_path / "missing", "no such run folder"),
                             (tmp_path / "not-evaluated", "has no episodes.json: the run was not evaluated")):
        result = CliRunner().invoke(app, ["explain", str(folder)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], result.output


def test_a_tiny_run_has_fairness_and_explanations_and_attune_explain_prints_them(attune_cli, tmp_path):
    """One run through the real CLI with both mitigations on, then `attune explain` on its folder."""

    def cli(*args):
        result = subprocess.run([attune_cli, *args], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    printed = cli("run", str(TINY), f"tracking.runs_dir={tmp_path}", "fairness.maxmin=true",
                  "fairness.balanced_sampling=true", "evaluation.balance_groups=true", "evaluation.text_metrics=false",
                  "trainer.max_steps=1")
    (run_dir,) = tmp_path.iterdir()
    assert "fairness: worst group" in printed
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(any(k.startswith("rewards/maxmin/") for k in r) for r in records if r["phase"] == "train")
    report = json.loads((run_dir / "eval.json").read_text())
    section = report["comparison"]["fairness"]
    assert len(section["groups"]) == 2 and section["after"]["worst_group"] in section["groups"]
    assert report["after"]["worst_group_utility"] == min(g["after"] for g in section["groups"].values())
    text = (run_dir / "report.md").read_text()
    assert "## Fairness" in text and "Worst group after training" in text and "## Explanations" in text
    for plot in ("fairness.png", "explain.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    episodes = json.loads((run_dir / "episodes.json").read_text())
    users = sorted({e["user_id"] for e in episodes["after"]})
    explained = cli("explain", str(run_dir))
    assert "what changed over 4 held-out conversations" in explained
    for user in users:
        assert f"\n  {user} (" in explained
    one = cli("explain", str(run_dir), "--user", users[0]).splitlines()
    assert one[0].startswith(f"user {users[0]} (group ") and one[3].startswith("  why: ")
    assert one[4].startswith("  preference weights: ") and "reply pair that changed most" in one[5]
