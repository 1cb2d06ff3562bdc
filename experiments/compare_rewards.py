"""``attune compare-rewards``: the same method on the same users, once per reward; where do proxies lie?

Every variant of the config names its ``rewards`` (the proxy the policy is trained on). After the runs,
for each proxy:

- proxy gain: the proxy's mean on the held-out evaluation replies, after minus before training;
- utility gain: the users' hidden utility, after minus before (what the proxy is meant to raise);
- both in standard units (divided by each one's spread on a fixed probe set), and their difference, the
  **gap**: a proxy that rose much more than the users' utility was hacked;
- the proxy's correlation with the hidden utility on the probe set (Pearson, and Spearman with tied
  ranks averaged, both from scipy): the same replies for every proxy, namely eight fixed response
  styles per evaluation prompt plus the base policy's replies;
- its cost: milliseconds per 100 replies on the probe set.

Written to ``reward_comparison.md``/``.json`` and ``plots/reward_hacking.png`` in the run folder, and
logged to W&B (a table in a run of its own, grouped with the variants).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import stats
from rewards.combine import reward_matrix, weighted_sum
from experiments.config import ConfigError, ExperimentConfig
from experiments.tables import Column, Table, log_tables_to_wandb, mean_column


def _weighted(reward_functions: list[Any], weights: list[float], prompts: list[Any], replies: list[str],
              columns: dict[str, list[Any]]) -> np.ndarray:
    """The proxy as the trainer sees it: the weighted sum of the configured reward functions."""
    completions = [[{"role": "assistant", "content": r}] for r in replies]
    return weighted_sum(reward_matrix(reward_functions, prompts, completions, **columns), weights)


def probe_set(episodes: list[dict[str, Any]], population: Any) -> dict[str, Any]:
    """Fixed replies to score every proxy on: 8 response styles per evaluation prompt + the base replies."""
    from envs.discrete import RESPONSE_STYLES, render_style

    prompts, replies, user_ids, task_ids = [], [], [], []
    for episode in episodes:
        user = population.simulated_user(episode["user_id"])
        task = population.task(episode["task_id"])
        request = [{"role": "user", "content": user.ask(task)}]
        for reply in [render_style(style, task) for style in RESPONSE_STYLES] + [episode["replies"][0]]:
            prompts.append(request)
            replies.append(reply)
            user_ids.append(episode["user_id"])
            task_ids.append(episode["task_id"])
    utilities = np.array([
        float(population.simulated_user(u).utility([r], [population.task(t)])[0])
        for r, u, t in zip(replies, user_ids, task_ids)
    ])
    return {"prompts": prompts, "replies": replies, "columns": {"user_id": user_ids, "task_id": task_ids},
            "utility": utilities}


def analyse(result: Any, variant: ExperimentConfig, population: Any) -> dict[str, Any]:
    """The proxy-vs-utility numbers of one variant's finished run (see the module docstring)."""
    episodes = json.loads((result.run_dir / "episodes.json").read_text())
    weights = [spec.weight for spec in variant.rewards]
    probe = probe_set(episodes["before"], population)
    started = time.perf_counter()
    proxy_on_probe = _weighted(result.reward_functions, weights, probe["prompts"], probe["replies"], probe["columns"])
    cost_ms = (time.perf_counter() - started) * 1000.0 * 100.0 / len(probe["replies"])

    def proxy_of(side: str) -> np.ndarray:
        rows = episodes[side]
        prompts = [[{"role": "user", "content": population.simulated_user(e["user_id"]).ask(population.task(e["task_id"]))}]
                   for e in rows]
        columns = {"user_id": [e["user_id"] for e in rows], "task_id": [e["task_id"] for e in rows]}
        return _weighted(result.reward_functions, weights, prompts, [e["replies"][0] for e in rows], columns)

    proxy_gain = float(proxy_of("after").mean() - proxy_of("before").mean())
    utility_gain = float(result.eval["comparison"]["improvement"])
    proxy_scale = float(np.std(proxy_on_probe)) or 1.0
    utility_scale = float(np.std(probe["utility"])) or 1.0
    comparison = result.eval["comparison"]
    return {
        "variant": result.run_dir.name,
        "rewards": " + ".join(f"{w:g}*{s.name}" if w != 1 else s.name for s, w in zip(variant.rewards, weights)),
        "proxy_gain": proxy_gain,
        "n": int(result.eval["after"]["n"]),
        "utility_gain": utility_gain,
        "utility_gain_ci95": float(comparison["improvement_ci95"]),
        "utility_gain_ci_low": float(comparison["improvement_ci_low"]),
        "utility_gain_ci_high": float(comparison["improvement_ci_high"]),
        "utility_gain_interval": comparison["improvement_interval"],
        "proxy_gain_std_units": proxy_gain / proxy_scale,
        "utility_gain_std_units": utility_gain / utility_scale,
        "gap_std_units": proxy_gain / proxy_scale - utility_gain / utility_scale,
        "probe_replies": len(probe["replies"]),
        "pearson_with_utility": stats.correlation(proxy_on_probe, probe["utility"], "pearson").value,
        "spearman_with_utility": stats.correlation(proxy_on_probe, probe["utility"], "spearman").value,
        "ms_per_100_replies": cost_ms,
        "win_rate": float(comparison["win_rate"]),
        "win_rate_ci_low": float(comparison["win_rate_ci_low"]),
        "win_rate_ci_high": float(comparison["win_rate_ci_high"]),
        "win_rate_interval": comparison["win_rate_interval"],
    }


def compare_rewards(config: ExperimentConfig, console: Any = None) -> tuple[Path, list[dict[str, Any]]]:
    """Run every variant, then compare their proxies; returns the run folder and one row per variant."""
    from rich.console import Console

    from experiments.runner import _population, run_variants

    console = console or Console()
    if not config.variants:
        raise ConfigError(
            "compare-rewards: add variants, one per reward to compare, e.g. "
            "variants: [{name: utility, rewards: [{name: user_feedback}]}, {name: length, rewards: [{name: length_target}]}]"
        )
    if not config.evaluation.enabled:
        raise ConfigError("compare-rewards: evaluation.enabled must be true (the comparison is made on the evaluation)")
    variant_configs = dict(config.variant_configs())
    result = run_variants(config, console)
    rows = []
    for variant_result in result.variants:
        variant = variant_configs[variant_result.run_dir.name]
        rows.append(analyse(variant_result, variant, _population(variant)))
    write_outputs(result.run_dir, rows, config)
    print_table(console, rows, result.run_dir)
    return result.run_dir, rows


def caption(rows: list[dict[str, Any]]) -> str:
    """n, seeds and the kind of every interval and correlation in the table."""
    if not rows:
        return ""
    ns, probes = sorted({r["n"] for r in rows}), sorted({r["probe_replies"] for r in rows})
    n_text = f"n = {ns[0]}" if len(ns) == 1 else "n = " + "/".join(map(str, ns))
    probe_text = "/".join(map(str, probes))
    return (f"{n_text} held-out conversations per variant, 1 seed per variant; utility gain ± is the half-width "
            f"of the {rows[0]['utility_gain_interval']}; correlations over {probe_text} probe replies "
            "(Pearson; Spearman with tied ranks averaged).")


def reward_table(rows: list[dict[str, Any]]) -> Table:
    """One row per proxy reward: what it raised, what the users got, how it tracks their utility, its cost."""
    return Table(
        [
            Column("variant", align="left"),
            Column("rewards", "proxy", align="left"),
            Column("proxy_gain", "proxy gain", "{:+.3f}"),
            mean_column("utility_gain", "utility gain"),
            Column("proxy_gain_std_units", "proxy gain (std)", "{:+.2f}"),
            Column("utility_gain_std_units", "utility gain (std)", "{:+.2f}"),
            Column("gap_std_units", "gap (std)", "{:+.2f}"),
            Column("pearson_with_utility", "corr. with utility (Pearson / Spearman)",
                   lambda r: f"{r['pearson_with_utility']:+.2f} / {r['spearman_with_utility']:+.2f}"),
            Column("ms_per_100_replies", "ms / 100 replies", "{:.1f}"),
        ],
        rows,
        title="proxy rewards vs. the users' hidden utility (held-out users)",
        caption=caption(rows),
    )


def write_outputs(folder: Path, rows: list[dict[str, Any]], config: ExperimentConfig) -> None:
    table = reward_table(rows)
    (folder / "reward_comparison.json").write_text(json.dumps(table.to_records(), indent=2) + "\n")
    lines = [
        f"# Reward comparison: {folder.name}", "",
        "Same method, users, prompts and seeds for every reward. Gains are after minus before training on "
        "held-out users; std units divide by each quantity's spread on a fixed probe set; gap = proxy gain "
        "- utility gain in std units (large = the proxy was hacked).", "",
        table.to_markdown(title=False),
        "![reward hacking](plots/reward_hacking.png)", "",
    ]
    (folder / "reward_comparison.md").write_text("\n".join(lines))
    plot(folder, rows)
    log_to_wandb(folder, table, config)


def plot(folder: Path, rows: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["proxy_gain_std_units"] for r in rows], 0.4, label="proxy gain")
    ax.bar(x + 0.2, [r["utility_gain_std_units"] for r in rows], 0.4, label="users' hidden utility gain")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(x, [r["variant"] for r in rows], rotation=15)
    ax.set_ylabel("gain after training (std units)")
    ax.set_title("what each reward raised, and what the users got")
    ax.legend()
    return save_figure(fig, folder, "reward_hacking.png")


def log_to_wandb(folder: Path, table: Table, config: ExperimentConfig) -> None:
    """The table in a W&B run of its own, grouped with the variants' runs."""
    if config.tracking.wandb == "disabled":
        return
    log_tables_to_wandb(config.tracking, folder, f"{folder.name}-reward-comparison", config.experiment,
                        {"reward_comparison": table}, images={"plots/reward_hacking": folder / "plots" / "reward_hacking.png"},
                        config={"variants": [r["variant"] for r in table.rows]})


def print_table(console: Any, rows: list[dict[str, Any]], folder: Path) -> None:
    console.print(reward_table(rows).to_rich())
    console.print(f"reward comparison: [cyan]{folder / 'reward_comparison.md'}[/]")
