"""experiments.stats against values worked out by hand from textbook formulas and tables."""

import math

import numpy as np
import pytest

from experiments import stats

# Two-sided 95 % critical values of Student's t, from printed tables.
T_975 = {2: 4.303, 4: 2.776, 31: 2.040}
Z_975 = 1.960


def test_t_interval_of_a_small_sample_matches_the_table():
    # 1..5: mean 3, s = sqrt(2.5), s / sqrt(5) = 0.70711; t(0.975, 4) = 2.776.
    estimate = stats.mean_interval([1, 2, 3, 4, 5])
    half = T_975[4] * math.sqrt(2.5) / math.sqrt(5)
    assert estimate.value == 3.0
    assert estimate.low == pytest.approx(3 - half, abs=1e-3)  # 1.037
    assert estimate.high == pytest.approx(3 + half, abs=1e-3)  # 4.963
    assert estimate.half_width == pytest.approx(1.963, abs=1e-3)
    assert (estimate.n, estimate.interval) == (5, "95% Student-t CI")


def test_t_interval_is_wider_than_the_normal_one_at_n_32():
    values = np.array([0.0, 1.0] * 16)
    sem = values.std(ddof=1) / math.sqrt(32)
    assert stats.mean_interval(values).half_width == pytest.approx(T_975[31] * sem, rel=1e-3)
    assert stats.mean_interval(values).half_width / (Z_975 * sem) == pytest.approx(1.0406, abs=1e-3)


def test_mean_interval_without_enough_values_has_no_interval():
    one = stats.mean_interval([0.7])
    assert one.value == 0.7 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    empty = stats.mean_interval([])
    assert math.isnan(empty.value) and empty.n == 0
    constant = stats.mean_interval([0.5, 0.5, 0.5])
    assert (constant.low, constant.high) == (0.5, 0.5)


def test_mean_interval_clips_to_bounds():
    # 31 ones and one zero: mean 0.96875, s / sqrt(n) = sqrt(1/32) / sqrt(32) = 1/32.
    estimate = stats.mean_interval([1.0] * 31 + [0.0], bounds=(0.0, 1.0), what="over pairs")
    assert estimate.low == pytest.approx(0.96875 - T_975[31] / 32, abs=1e-3)  # 0.905
    assert estimate.high == 1.0
    assert estimate.interval == "95% Student-t CI over pairs"


def test_paired_difference_interval():
    # Differences 1, 2, 3: mean 2, s = 1; t(0.975, 2) = 4.303.
    estimate = stats.paired_difference_interval([2, 4, 6], [1, 2, 3])
    assert estimate.value == 2.0
    assert estimate.low == pytest.approx(2 - T_975[2] / math.sqrt(3), abs=1e-3)  # -0.484
    assert estimate.high == pytest.approx(2 + T_975[2] / math.sqrt(3), abs=1e-3)  # 4.484
    assert estimate.interval == "95% paired Student-t CI" and estimate.n == 3
    with pytest.raises(ValueError, match="same length"):
        stats.paired_difference_interval([1, 2], [1, 2, 3])


def test_wilson_interval_for_31_of_32():
    # Wilson (1927) by hand, z = 1.96, p = 31/32: centre (p + z²/2n) / (1 + z²/n) = 0.9185,
    # half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n) = 0.0760.
    estimate = stats.wilson_interval(31, 32)
    assert estimate.value == pytest.approx(0.96875)
    assert estimate.low == pytest.approx(0.8426, abs=1e-4)
    assert estimate.high == pytest.approx(0.9945, abs=1e-4)
    assert estimate.high < 1.0  # the normal approximation gave 0.969 ± 0.061, past 1
    assert (estimate.n, estimate.interval) == (32, "95% Wilson score CI")


def test_wilson_interval_at_the_extremes():
    # With no successes the Wilson upper end is z² / (n + z²); with all of them the lower end is n / (n + z²).
    z2 = 1.959963984540054**2
    none = stats.wilson_interval(0, 32)
    assert none.low == 0.0 and none.high == pytest.approx(z2 / (32 + z2))  # 0.1072
    every = stats.wilson_interval(32, 32)
    assert every.high == 1.0 and every.low == pytest.approx(32 / (32 + z2))  # 0.8928
    assert math.isnan(stats.wilson_interval(0, 0).value)


def test_spearman_averages_tied_ranks_and_ignores_the_order_of_pairs():
    x = [1, 2, 2, 3, 5]
    y = [2, 1, 3, 3, 4]
    # Averaged ranks: x -> 1, 2.5, 2.5, 4, 5; y -> 2, 1, 3.5, 3.5, 5; their Pearson r = 7.25 / 9.5.
    forward = stats.correlation(x, y, "spearman")
    assert forward.value == pytest.approx(7.25 / 9.5)
    assert stats.correlation(x[::-1], y[::-1], "spearman").value == pytest.approx(forward.value)
    assert (forward.n, forward.method) == (5, "spearman")


def test_pearson_and_degenerate_correlations():
    # x = 1, 2, 3; y = 1, 2, 4: Sxy = 3, Sxx = 2, Syy = 42/9.
    assert stats.correlation([1, 2, 3], [1, 2, 4], "pearson").value == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert math.isnan(stats.correlation([1, 1, 1], [1, 2, 3]).value)
    assert math.isnan(stats.correlation([1], [2]).value)
    with pytest.raises(ValueError, match="pearson"):
        stats.correlation([1, 2], [1, 2], "kendall")


def test_interquartile_mean_drops_the_outer_quarters():
    # Sorted: -50, 1, 2, 3, 4, 5, 6, 100; the middle half is 2, 3, 4, 5.
    assert stats.interquartile_mean([1, 2, 3, 4, 100, -50, 5, 6]) == 3.5
    assert stats.interquartile_mean([[0, 10], [0, 10], [0, 10], [0, 10]]) == 5.0  # runs x tasks, pooled


def test_iqm_bootstrap_resamples_runs_within_each_task():
    # Task 0 always scores 0 and task 1 always 10: resampling runs within each task keeps four of each, so
    # every resample has IQM 5. Resampling the pooled scores would mix the tasks and spread the interval.
    scores = np.array([[0.0, 10.0]] * 4)
    estimate = stats.iqm_interval(scores)
    assert (estimate.value, estimate.low, estimate.high) == (5.0, 5.0, 5.0)
    assert (estimate.n, estimate.interval) == (4, "95% stratified bootstrap CI (IQM)")


def test_iqm_bootstrap_interval_is_seeded_and_covers_the_estimate():
    scores = np.array([[0.1, 0.5], [0.4, 0.7], [0.2, 0.9], [0.8, 0.6], [0.3, 0.2]])
    first, again = stats.iqm_interval(scores, seed=3), stats.iqm_interval(scores, seed=3)
    assert first == again
    assert first.low < first.value < first.high
    # An IQM is a mean of pooled scores, so its interval lies within their range.
    assert scores.min() <= first.low and first.high <= scores.max()
    assert math.isnan(stats.iqm_interval([[0.3, 0.4]]).low)  # one run: nothing to resample


def test_probability_of_improvement_counts_pairs_and_half_ties():
    # 1 > 0; 3 > 0, 2, 2; 5 > 0, 2, 2: 7 of 9 pairs.
    assert stats.probability_of_improvement([1, 3, 5], [0, 2, 2]).value == pytest.approx(7 / 9)
    # 2 = 2 (half), 2 > 1, 3 > 2, 3 > 1: 3.5 of 4.
    assert stats.probability_of_improvement([2, 3], [2, 1]).value == pytest.approx(3.5 / 4)
    # Two tasks, averaged: 7/9 on the first, 0 on the second.
    x = np.array([[1, 0], [3, 0], [5, 0]])
    y = np.array([[0, 1], [2, 1], [2, 1]])
    assert stats.probability_of_improvement(x, y).value == pytest.approx(7 / 18)


def test_probability_of_improvement_interval():
    certain = stats.probability_of_improvement([5, 6, 7], [1, 2, 3])
    assert (certain.value, certain.low, certain.high) == (1.0, 1.0, 1.0)
    assert certain.interval == "95% stratified bootstrap CI (P(X > Y))"
    mixed = stats.probability_of_improvement([1, 3, 5, 7], [2, 4, 6, 0])
    assert 0.0 <= mixed.low < mixed.value < mixed.high <= 1.0
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)))


def test_summarize_seeds_gives_each_method_its_iqm_and_improvement_over_the_baseline():
    scores = {"base": [1, 2, 3, 4], "trained": [3, 4, 5, 6]}
    base, trained = stats.summarize_seeds(scores, baseline="base")
    assert base.probability_of_improvement is None
    assert (trained.runs, trained.tasks) == (4, 1)
    assert trained.iqm.value == 4.5 and trained.mean == 4.5  # IQM of 3, 4, 5, 6 is the mean of 4, 5
    # Pairs won by trained: 3 > 1, 2; 4 > 1, 2, 3; 5 > all; 6 > all; ties 3 = 3, 4 = 4: (13 + 1) / 16.
    assert trained.probability_of_improvement.value == pytest.approx(14 / 16)
    row = trained.as_dict()
    assert row["iqm"] == 4.5 and row["iqm_interval"] == "95% stratified bootstrap CI (IQM)"
    assert row["probability_of_improvement"] == pytest.approx(0.875)
    assert row["probability_of_improvement_ci_low"] <= 0.875 <= row["probability_of_improvement_ci_high"]
    with pytest.raises(ValueError, match="baseline 'nope'"):
        stats.summarize_seeds(scores, baseline="nope")


def test_formatting():
    assert stats.format_mean(0.1234, 0.0456) == "+0.123 ± 0.046"
    assert stats.format_mean(0.1234, float("nan")) == "+0.123 (no CI)"
    assert stats.format_interval(0.62, 0.551, 0.694) == "0.62 [0.55, 0.69]"
