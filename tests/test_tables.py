"""The one table renderer (experiments.tables) and the metric declarations it shows (experiments.metrics)."""

import io
import math

import pytest
from rich.console import Console

from experiments import metrics, stats
from experiments.tables import Column, Table, count_column, flatten, interval_column, mean_column

ROWS = [
    {"variant": "grpo", "n": 4, "gain": 0.2, "gain_ci95": 0.05, "win": 0.75, "win_ci_low": 0.0, "win_ci_high": 1.0,
     "wins": 3, "rate": 0.75, "rate_ci_low": 0.30, "rate_ci_high": 0.95, "note": "a | b"},
    {"variant": "off", "n": 4, "gain": None},
]
COLUMNS = [Column("variant", align="left"), mean_column("gain", "gain"), interval_column("win", "win rate"),
           count_column("rate", "wins", "wins"), Column("note", missing="-")]


def test_markdown_formats_each_cell_from_its_fields_and_escapes_pipes():
    table = Table(COLUMNS, ROWS, title="two variants", caption="n = 4; ± is the half-width of the 95% t CI.")
    assert table.to_markdown() == (
        "two variants\n\n"
        "n = 4; ± is the half-width of the 95% t CI.\n\n"
        "| variant | gain | win rate | wins | note |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| grpo | +0.200 ± 0.050 | 0.75 [0.00, 1.00] | 3/4 = 0.75 [0.30, 0.95] | a \\| b |\n"
        "| off | | | | - |\n"
    )
    assert table.to_markdown(title=False).startswith("n = 4;")


def test_console_shows_the_same_cells_title_and_caption():
    console = Console(file=io.StringIO(), width=200)
    console.print(Table(COLUMNS, ROWS, title="two variants", caption="n = 4 conversations").to_rich())
    printed = console.file.getvalue()
    for text in ("two variants", "n = 4 conversations", "+0.200 ± 0.050", "0.75 [0.00, 1.00]", "3/4 = 0.75 [0.30, 0.95]",
                 "a | b"):
        assert text in printed


def test_records_and_wandb_keep_the_raw_numbers():
    table = Table(COLUMNS, ROWS)
    assert table.to_records() == ROWS and table.to_records() is not ROWS
    wandb_table = table.to_wandb()
    assert wandb_table.columns[:3] == ["variant", "n", "gain"]
    first, second = wandb_table.data
    assert first[wandb_table.columns.index("gain")] == 0.2  # a number, sortable in W&B
    assert second[wandb_table.columns.index("gain")] is None
    # A column of mixed types is written as text, so W&B's column types never clash.
    mixed = Table([Column("value")], [{"value": 1.5}, {"value": "error"}, {"value": {"a": 1}}]).to_wandb()
    assert [row[0] for row in mixed.data] == ["1.5", "error", '{"a": 1}']


def test_a_number_format_shows_text_as_it_is_and_no_ci_where_there_is_none():
    column = Column("value", format="{:+.4f}", missing="-")
    assert [column.cell({"value": v}) for v in (0.5, "n/a", None)] == ["+0.5000", "n/a", "-"]
    assert mean_column("m", prefix="").cell({"m": 0.3, "ci95": math.nan}) == "+0.300 (no CI)"


def test_flatten_gives_the_w_and_b_summary_keys():
    assert flatten({"after": {"mean_utility": 0.5, "by_group": {"a": {"n": 2}}}, "method": "grpo", "x": [1]}) == {
        "after/mean_utility": 0.5, "after/by_group/a/n": 2, "method": "grpo"}


@pytest.fixture
def extra_metric():
    yield
    for key in ("test_only_rate", "test_only_gap"):
        metrics.METRICS.pop(key, None)


def test_a_metric_is_declared_once_and_stored_with_its_interval(extra_metric):
    @metrics.policy_metric("test_only_rate", "a test rate", show="interval")
    def rate(results):
        return stats.wilson_interval(sum(results), len(results))

    fields = metrics.METRICS["test_only_rate"].fields(rate([1, 1, 0, 0]))
    assert fields["test_only_rate"] == 0.5 and fields["test_only_rate_n"] == 4
    assert fields["test_only_rate_interval"] == "95% Wilson score CI"
    assert fields["test_only_rate_ci_low"] == pytest.approx(0.150, abs=1e-3)  # Wilson, 2 of 4
    with pytest.raises(ValueError, match="declared twice"):
        metrics.policy_metric("test_only_rate", "again")(rate)
    with pytest.raises(ValueError, match="show must be one of"):
        metrics.policy_metric("test_only_gap", "bad", show="stars")(rate)
    with pytest.raises(ValueError, match="lack 'test_only_gap'"):
        metrics.Metric("test_only_gap", "gap", metrics.COMPARISON, rate).fields({"other": 1.0})


def test_a_declared_comparison_metric_reaches_the_table_the_caption_and_the_sweep(extra_metric):
    from test_evaluate import _report

    @metrics.comparison_metric("test_only_gap", "a test gap", show="mean")
    def gap(paired):
        return stats.paired_difference_interval([a.score for a in paired.after], [b.score for b in paired.before])

    report = _report()  # computed after the declaration: compare() computes every declared metric
    assert report["comparison"]["test_only_gap"] == pytest.approx(report["comparison"]["improvement"])
    table = metrics.evaluation_table(report)
    markdown = table.to_markdown()
    assert f"| a test gap | | {stats.format_mean(0.2, report['comparison']['test_only_gap_ci95'])} |" in markdown
    assert "a test gap: 95% paired Student-t CI" in table.caption
    assert {"metric": "test_only_gap", "base": None, "trained": report["comparison"]["test_only_gap"]} in table.to_records()
    assert "test_only_gap" in metrics.sweep_metrics()
    assert metrics.final_values(report)["test_only_gap"] == report["comparison"]["test_only_gap"]


def test_a_metric_column_shows_a_row_per_variant():
    from test_evaluate import _report

    comparison = _report()["comparison"]
    row = {"variant": "grpo", **comparison}
    table = Table([Column("variant", align="left"), metrics.get("improvement").column("improvement over base"),
                   metrics.get("win_rate").column(), metrics.get("sampled_win_rate").column()], [row])
    assert "| grpo | +0.200 ± 0.000 | 0.75 [0.00, 1.00] | 3/4 = 0.75 [0.30, 0.95] |" in table.to_markdown()
    with pytest.raises(KeyError, match="no metric 'typo'"):
        metrics.get("typo")


def test_the_evaluation_table_lists_the_metrics_in_declaration_order():
    from test_evaluate import _report

    table = metrics.evaluation_table(_report())
    labels = [row["metric"].strip() for row in table.rows]
    assert labels == ["mean user reward (hidden utility)", "group a (n=3)", "group b (n=1)",
                      "mean feedback return (per episode)", "satisfaction rate", "mean reply length (words)",
                      "distinct-1 (unique words / words)", "distinct-2 (unique bigrams / bigrams)",
                      "improvement (paired)", "win rate vs base (users' choices, expected)", "sampled wins vs base",
                      "worst-group utility (min of group means)", "max-min gap between group means",
                      "users made worse off by training"]
    assert table.title == "held-out users: 4 conversations, same prompts and seeds"


def test_sweep_and_reward_tables_go_through_the_renderer():
    from experiments.compare_rewards import reward_table
    from experiments.sweep_results import sweep_table

    rows = [{"trial": "t1", "trainer.learning_rate": 1e-5, "status": "done", "win_rate": 0.61, "run_dir": "r1"},
            {"trial": "t2", "trainer.learning_rate": 1e-4, "status": "error", "win_rate": None, "run_dir": None,
             "error": "ValueError: a | b"}]
    markdown = sweep_table(rows, "win_rate").to_markdown(title=False)
    assert "| trial | trainer.learning_rate | win_rate | status |" in markdown
    assert "| t1 | 1e-05 | +0.6100 | done |" in markdown and "| t2 | 0.0001 | - | error: ValueError: a \\| b |" in markdown
    reward = {"variant": "length", "rewards": "length_target", "n": 32, "proxy_gain": 0.5, "utility_gain": -0.1,
              "utility_gain_ci95": 0.05, "proxy_gain_std_units": 1.0, "utility_gain_std_units": -0.5,
              "gap_std_units": 1.5, "probe_replies": 288, "pearson_with_utility": 0.2, "spearman_with_utility": 0.1,
              "ms_per_100_replies": 3.0, "utility_gain_interval": "95% paired Student-t CI"}
    assert ("| length | length_target | +0.500 | -0.100 ± 0.050 | +1.00 | -0.50 | +1.50 | +0.20 / +0.10 | 3.0 |"
            in reward_table([reward]).to_markdown())
