"""experiments.evaluate's numbers, from literal episodes, and the tables that print them."""

import io
import json
import math

import pytest
from rich.console import Console

from experiments import evaluate, metrics
from experiments.evaluate import EpisodeResult

from standins import FixedProbabilityUsers

T_975 = {1: 12.706, 3: 3.182, 31: 2.040}  # two-sided 95 % critical values of Student's t, from tables


def episode(user: str, group: str, utilities: list[float], rewards: list[float], reply: str = "r") -> EpisodeResult:
    return EpisodeResult(user, group, "task", [reply] * len(utilities), rewards, utilities, False)




def test_mean_ci_is_the_student_t_half_width():
    mean, half = evaluate.mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0 and half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)


def test_summarize_with_literal_scores():
    results = [
        episode("u1", "a", [0.1], [0.5]),
        episode("u2", "a", [0.3], [0.5]),
        episode("u3", "b", [0.5], [1.0]),
        episode("u4", "b", [0.7], [1.0]),
    ]
    summary = evaluate.summarize(results)
    # Scores 0.1, 0.3, 0.5, 0.7: mean 0.4, s = sqrt(0.2 / 3), t(0.975, 3) = 3.182.
    half = T_975[3] * math.sqrt(0.2 / 3) / 2
    assert summary["n"] == 4 and summary["mean_utility"] == pytest.approx(0.4)
    assert summary["ci95"] == pytest.approx(half, abs=1e-3)
    assert (summary["ci_low"], summary["ci_high"]) == (pytest.approx(0.4 - half, abs=1e-3), pytest.approx(0.4 + half, abs=1e-3))
    assert summary["interval"] == "95% Student-t CI"
    # Group a: 0.1, 0.3 -> mean 0.2, s / sqrt(2) = 0.1, t(0.975, 1) = 12.706.
    assert summary["by_group"]["a"]["mean"] == pytest.approx(0.2)
    assert summary["by_group"]["a"]["ci95"] == pytest.approx(T_975[1] * 0.1, abs=1e-3)
    assert summary["by_group"]["a"]["n"] == 2
    assert summary["mean_feedback_return"] == pytest.approx(0.75)


def test_feedback_return_of_episode_end_rewards_is_the_end_reward():
    # reward_mode: episode_end pays 0, ..., 0, R: the episode's feedback return is R, whatever its length.
    results = [episode("u1", "a", [0.2, 0.4], [0.0, 0.8]), episode("u2", "a", [0.2, 0.4, 0.6], [0.0, 0.0, 0.6])]
    assert [r.feedback_return for r in results] == [0.8, 0.6]
    summary = evaluate.summarize(results)
    assert summary["mean_feedback_return"] == pytest.approx(0.7)
    assert summary["feedback_return_interval"] == "95% Student-t CI"


def test_compare_reports_the_expected_win_probability_and_the_sampled_wins():
    # 31 conversations where the user surely prefers the trained reply and one where they surely do not.
    before = [episode(f"u{i}", "a", [0.0], [0.0], reply="0") for i in range(32)]
    after = [episode(f"u{i}", "a", [0.1 if i < 31 else -0.1], [0.0], reply="1" if i < 31 else "0") for i in range(32)]
    comparison = evaluate.compare(before, after, FixedProbabilityUsers(), seed=0, noise=0.0)
    assert comparison["n"] == 32
    # Expected win probability: 31/32; t interval half-width t(0.975, 31) / 32, clipped at 1.
    assert comparison["win_rate"] == comparison["expected_win_probability"] == pytest.approx(0.96875)
    assert comparison["win_rate_ci95"] == pytest.approx(T_975[31] / 32, abs=1e-3)
    assert comparison["win_rate_ci_low"] == pytest.approx(0.96875 - T_975[31] / 32, abs=1e-3)
    assert comparison["win_rate_ci_high"] == 1.0
    assert comparison["win_rate_interval"].startswith("95% Student-t CI over per-conversation")
    # Sampled choices: probability 1 always wins, 0 never; Wilson interval for 31 of 32.
    assert comparison["sampled_wins"] == 31 and comparison["sampled_win_rate"] == pytest.approx(0.96875)
    assert comparison["sampled_win_rate_ci_low"] == pytest.approx(0.8426, abs=1e-4)
    assert comparison["sampled_win_rate_ci_high"] == pytest.approx(0.9945, abs=1e-4)
    assert comparison["sampled_win_rate_interval"] == "95% Wilson score CI"
    # Paired improvement: 31 × 0.1 and one -0.1; mean 0.09375.
    assert comparison["improvement"] == pytest.approx(0.09375)
    diffs = [0.1] * 31 + [-0.1]
    s = math.sqrt(sum((d - 0.09375) ** 2 for d in diffs) / 31)
    assert comparison["improvement_ci95"] == pytest.approx(T_975[31] * s / math.sqrt(32), abs=1e-4)
    assert comparison["improvement_interval"] == "95% paired Student-t CI"


def test_compare_win_rate_averages_the_users_probabilities():
    before = [episode(f"u{i}", "a", [0.0], [0.0], reply="0") for i in range(4)]
    after = [episode(f"u{i}", "a", [0.0], [0.0], reply=p) for i, p in enumerate(["0.9", "0.8", "0.7", "1.0"])]
    comparison = evaluate.compare(before, after, FixedProbabilityUsers(), seed=0, noise=0.0)
    # Mean 0.85, s = sqrt(0.05 / 3), t(0.975, 3) = 3.182.
    half = T_975[3] * math.sqrt(0.05 / 3) / 2
    assert comparison["win_rate"] == pytest.approx(0.85)
    assert comparison["win_rate_ci_low"] == pytest.approx(0.85 - half, abs=1e-3)
    assert comparison["win_rate_ci_high"] == 1.0  # 0.85 + 0.205 clipped
    with pytest.raises(ValueError, match="same episodes"):
        evaluate.compare(before, after[:3], FixedProbabilityUsers(), seed=0, noise=0.0)


def _report():
    before = [episode(f"u{i}", "a" if i < 3 else "b", [0.1 * i], [0.0, 0.1 * i], reply="0") for i in range(4)]
    # The users surely prefer the trained reply in three conversations of four, and surely not in the last.
    after = [episode(f"u{i}", "a" if i < 3 else "b", [0.1 * i + 0.2], [0.0, 0.2], reply="1" if i < 3 else "0")
             for i in range(4)]
    return {
        "before": evaluate.summarize(before),
        "after": evaluate.summarize(after),
        "comparison": evaluate.compare(before, after, FixedProbabilityUsers(), seed=0, noise=0.0),
        "train_seconds": 1.0,
    }


def test_every_table_states_n_and_the_interval_kinds(tmp_path):
    from experiments.report import write_report
    from experiments.comparison import print_comparison, write_comparison
    from experiments.runner import print_report

    report = _report()
    caption = metrics.describe_intervals(report["before"], report["comparison"])
    assert caption.startswith("n = 4 held-out conversations, 1 seed; ± is the half-width of the 95% Student-t CI")
    assert "95% paired Student-t CI" in caption and "95% Wilson score CI" in caption and "Bradley-Terry" in caption

    text = write_report(tmp_path, report, "seed: 0\n").read_text()
    assert caption in text
    assert "| group b (n=1) | +0.300 (no CI) | +0.500 (no CI) |" in text
    # Win probabilities 1, 1, 1, 0: mean 0.75 ± 3.182 · 0.25, clipped to [0, 1]; Wilson for 3 of 4.
    assert "| win rate vs base (users' choices, expected) | | 0.75 [0.00, 1.00] |" in text
    assert "| sampled wins vs base | | 3/4 = 0.75 [0.30, 0.95] |" in text

    console = Console(file=io.StringIO(), width=400)
    print_report(console, report, tmp_path)
    printed = console.file.getvalue()
    assert "n = 4 held-out conversations, 1 seed" in printed and "3/4 = 0.75 [0.30, 0.95]" in printed

    rows = [{"variant": "grpo", "method": "grpo", **report, "train_seconds": 2.0},
            {"variant": "bandit", "method": "linucb", "train_seconds": 1.0}]
    table = write_comparison(tmp_path, rows)
    assert table[0]["n"] == 4 and table[0]["sampled_wins"] == 3 and table[0]["win_rate_ci_high"] == 1.0
    assert json.loads((tmp_path / "comparison.json").read_text())[0]["win_rate_interval"].startswith("95% Student-t")
    markdown = (tmp_path / "comparison.md").read_text()
    assert "n = 4 held-out conversations, 1 seed per variant; ± is the half-width" in markdown
    assert "| grpo | grpo | 4 | +0.350 ± " in markdown and "| 0.75 [0.00, 1.00] | 3/4 = 0.75 [0.30, 0.95] | - | 2 |" in markdown
    console = Console(file=io.StringIO(), width=400)
    print_comparison(console, table, tmp_path)
    assert "1 seed per variant" in console.file.getvalue()


def test_reward_comparison_table_states_n_and_the_interval_kinds(tmp_path):
    from types import SimpleNamespace

    from experiments.compare_rewards import write_outputs

    row = {"variant": "length", "rewards": "length_target", "n": 32, "proxy_gain": 0.5, "utility_gain": -0.1,
           "utility_gain_ci95": 0.05, "utility_gain_ci_low": -0.15, "utility_gain_ci_high": -0.05,
           "utility_gain_interval": "95% paired Student-t CI", "proxy_gain_std_units": 1.0,
           "utility_gain_std_units": -0.5, "gap_std_units": 1.5, "probe_replies": 288, "pearson_with_utility": 0.2,
           "spearman_with_utility": 0.1, "ms_per_100_replies": 3.0, "win_rate": 0.4, "win_rate_ci_low": 0.3,
           "win_rate_ci_high": 0.5, "win_rate_interval": "95% Student-t CI"}
    write_outputs(tmp_path, [row], SimpleNamespace(tracking=SimpleNamespace(wandb="disabled")))
    text = (tmp_path / "reward_comparison.md").read_text()
    assert ("n = 32 held-out conversations per variant, 1 seed per variant; utility gain ± is the half-width of the "
            "95% paired Student-t CI; correlations over 288 probe replies (Pearson; Spearman with tied ranks averaged).") in text
    assert "| length | length_target | +0.500 | -0.100 ± 0.050 |" in text


def test_term_means_and_paired_term_changes_say_what_training_moved():
    from experiments.evaluate import EpisodeResult, summarize, term_changes

    def episode(relevance, brevity):
        return EpisodeResult("u", "g", "t", ["r"], [0.0], [relevance + brevity], False,
                             terms=[{"relevance": relevance, "brevity": brevity}])

    before = [episode(-1.0, 0.5), episode(0.0, 0.5), episode(-0.5, 0.2)]
    after = [episode(0.0, 0.5), episode(1.0, 0.4), episode(0.5, 0.2)]
    assert summarize(before)["terms"] == pytest.approx({"relevance": -0.5, "brevity": 0.4})
    changes = term_changes(before, after)
    assert changes["relevance"]["change"] == 1.0
    assert changes["relevance"]["ci95"] == 0.0  # every pair moved by exactly +1
    assert abs(changes["brevity"]["change"] - (-0.1 / 3)) < 1e-12
    assert changes["brevity"]["n"] == 3


def test_a_balanced_evaluation_set_measures_a_rare_group_as_often_as_the_majority():
    from collections import Counter

    from agents.rollouts import make_env
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup

    groups = [UserGroup("majority", 10.0, {"brevity": 1.0}, spread=0.0), UserGroup("minority", 1.0, {"brevity": -1.0}, spread=0.0)]
    population = UserPopulation("writing", n_users=110, seed=0, groups=groups)
    env = make_env("attune/WritingAssistant-v1", population=population, split="held_out")
    drawn = Counter(r["group"] for r in evaluate.build_eval_set(env, 24, seed=1))
    assert drawn["minority"] < 8  # at random a 10:1 minority gets about 2 of 24
    balanced = evaluate.build_eval_set(env, 24, seed=1, balance_groups=True)
    assert Counter(r["group"] for r in balanced) == {"majority": 12, "minority": 12}
    assert len({r["user_id"] + r["task_id"] for r in balanced}) == 24
    assert evaluate.build_eval_set(env, 24, seed=1, balance_groups=True) == balanced  # reproducible
