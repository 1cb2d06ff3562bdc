"""What ``attune benchmark`` makes of its trials: cells over seeds, shape claims, tables and the plot.

- :func:`aggregate`: one cell per (metric, arm, factor levels): the mean over seeds with its Student-t
  interval, the IQM with its stratified bootstrap interval (Agarwal et al., 2021) and the probability of
  improving on the first arm;
- :func:`evaluate_claim`: a shape claim **held**, **not held** or **not evaluated**, with its numbers;
- :func:`metric_table` / :func:`claims_table`: the tables, through the one renderer (:mod:`experiments.tables`);
  :func:`render_markdown` is ``benchmark.md``; :func:`plot_benchmark` is ``plots/benchmark.png``.
"""

from __future__ import annotations

import json
import math
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmark_metrics import metric_of
from experiments.benchmark_spec import Benchmark, Claim, Term
from experiments.tables import Column, Table, interval_column

OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


# --- aggregation and claims ------------------------------------------------------------------------------


def level_key(levels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in levels.items()) or "-"


def aggregate(bench: Benchmark, trials: list[dict[str, Any]], levels: dict[str, list[str]],
              arms: list[str] | None = None) -> list[dict[str, Any]]:
    """One cell per (metric, arm, factor levels) over seeds: mean (t interval), IQM (stratified bootstrap interval),
    and the probability of improving on the first arm (the arms' seeds as runs)."""
    from experiments import stats

    combos = [dict(zip(levels, values)) for values in product(*levels.values())] if levels else [{}]
    run = [a for a in bench.arms if arms is None or a.name in arms]
    reference = run[0].name
    cells = []
    for metric in bench.metrics:
        for combo in combos:
            scores = {}
            seeds_of = {}
            for arm in run:
                rows = [t for t in trials if t["arm"] == arm.name and t["levels"] == combo and t["status"] == "done"
                        and not math.isnan(t["metrics"].get(metric, math.nan))]
                scores[arm.name] = [t["metrics"][metric] for t in rows]
                seeds_of[arm.name] = [t["seed"] for t in rows]
            present = {a: v for a, v in scores.items() if v}
            summaries = {}
            if present:
                baseline = reference if reference in present and len(present) > 1 else None
                summaries = {s.method: s for s in stats.summarize_seeds(present, baseline=baseline)}
            for arm in run:
                values = scores[arm.name]
                mean = stats.mean_interval(values)
                summary = summaries.get(arm.name)
                p = summary.probability_of_improvement if summary else None
                cells.append({
                    "metric": metric, "arm": arm.name, "levels": combo, "n": len(values), "seeds": seeds_of[arm.name],
                    "values": values, "mean": mean.value, "mean_ci_low": mean.low, "mean_ci_high": mean.high,
                    "mean_interval": mean.interval,
                    "iqm": summary.iqm.value if summary else math.nan,
                    "iqm_ci_low": summary.iqm.low if summary else math.nan,
                    "iqm_ci_high": summary.iqm.high if summary else math.nan,
                    "iqm_interval": summary.iqm.interval if summary else "",
                    "p_improvement": p.value if p else None, "p_improvement_ci_low": p.low if p else None,
                    "p_improvement_ci_high": p.high if p else None,
                    "published": bench.published.get(arm.name, {}).get(metric, ""),
                })
    return cells


def _cell_mean(cells: list[dict[str, Any]], arm: str, metric: str, combo: dict[str, str]) -> float:
    for cell in cells:
        if cell["arm"] == arm and cell["metric"] == metric and cell["levels"] == combo:
            return cell["mean"] if cell["n"] else math.nan
    return math.nan


def _side(cells: list[dict[str, Any]], first: Term, second: Term | None, combo: dict[str, str]) -> tuple[float, str]:
    a = _cell_mean(cells, first.arm, first.metric, combo)
    text = f"{first.arm} {first.metric} {a:.3f}"
    if second is None:
        return a, text
    b = _cell_mean(cells, second.arm, second.metric, combo)
    return a - b, f"({text} - {second.arm} {second.metric} {b:.3f} = {a - b:+.3f})"


def evaluate_claim(claim: Claim, cells: list[dict[str, Any]], levels: dict[str, list[str]]) -> dict[str, Any]:
    """``held``, ``not held`` or ``not evaluated`` (missing values), with the numbers that decided it."""
    result = {"id": claim.id, "claim": claim.claim, "published": claim.published, "source": claim.source}
    if claim.trend is not None:
        t = claim.trend
        names = levels.get(t.factor, [])
        others = {k: v for k, v in levels.items() if k != t.factor}
        series, held = [], True
        for values in product(*others.values()) if others else [()]:
            fixed = dict(zip(others, values))
            points = [_cell_mean(cells, t.arm, t.metric, {**fixed, t.factor: name}) for name in names]
            # in the factor order of the config: levels dict order is the factor's own
            combo_points = [(name, v) for name, v in zip(names, points)]
            series.append((fixed, combo_points))
            if len(points) < 2 or any(math.isnan(v) for v in points):
                return {**result, "status": "not evaluated",
                        "numbers": f"{t.arm} {t.metric} needs values at two or more {t.factor} levels"}
            steps = np.diff(points)
            held = held and bool(np.all(steps > 0) if t.direction == "increasing" else np.all(steps < 0))
        numbers = "; ".join((level_key(fixed) + ": " if fixed else "") + " -> ".join(f"{n} {v:+.3f}" for n, v in pts)
                            for fixed, pts in series)
        return {**result, "status": "held" if held else "not held",
                "numbers": f"{t.arm} {t.metric} ({t.direction} expected): {numbers}",
                "values": {level_key(f): dict(p) for f, p in series}}
    combos = [dict(zip(levels, values)) for values in product(*levels.values())] if levels else [{}]
    if isinstance(claim.at, list):
        combos = [c for c in combos if any(v in claim.at for v in c.values())]
    if not combos:
        return {**result, "status": "not evaluated", "numbers": f"none of the levels {claim.at} was run at this scale"}
    per_combo = []
    for combo in combos:
        left, left_text = _side(cells, claim.left, claim.minus, combo)
        if claim.right is not None:
            right, right_text = _side(cells, claim.right, claim.right_minus, combo)
        else:
            right, right_text = float(claim.value), f"{claim.value:g}"
        per_combo.append((combo, left, right, left_text, right_text))
    if any(math.isnan(left) or math.isnan(right) for _, left, right, _, _ in per_combo):
        return {**result, "status": "not evaluated", "numbers": "some values are missing (unfinished or failed trials, or a group with "
                "no held-out conversations)"}
    op = OPS[claim.op]
    if claim.at == "mean":
        left = float(np.mean([c[1] for c in per_combo]))
        right = float(np.mean([c[2] for c in per_combo]))
        held = bool(op(left, right))
        detail = "; ".join(f"{level_key(c[0])}: {c[3]} vs {c[4]}" for c in per_combo)
        numbers = f"mean over levels {left:+.3f} {claim.op} {right:+.3f} ({detail})"
        values = {"left": left, "right": right}
    else:
        held = all(bool(op(c[1], c[2])) for c in per_combo)
        numbers = "; ".join(f"{level_key(c[0])}: {c[3]} {claim.op} {c[4]} "
                            f"{'yes' if op(c[1], c[2]) else 'no'}" for c in per_combo)
        values = {level_key(c[0]): {"left": c[1], "right": c[2]} for c in per_combo}
    return {**result, "status": "held" if held else "not held", "numbers": numbers, "values": values}


# --- tables ---------------------------------------------------------------------------------------------


def _seeds(row: dict[str, Any]) -> str:
    return f"{row['n']} ({', '.join(str(s) for s in row['seeds'])})"


def metric_table(bench: Benchmark, cells: list[dict[str, Any]], metric: str, levels: dict[str, list[str]],
                 reference: str) -> Table:
    """One metric's cells: per arm and factor levels, mean and IQM with their intervals, P(> reference), n."""
    rows = [{**cell, **{f"level:{f}": cell["levels"][f] for f in levels}}
            for cell in cells if cell["metric"] == metric]
    no_value = {"missing": "-"}
    columns = [Column("arm", align="left"),
               *[Column(f"level:{f}", bench.factors[f].label or f, align="left") for f in levels],
               interval_column("mean", "mean [95% t CI]", prefix="mean_", digits=3, **no_value),
               interval_column("iqm", "IQM [95% bootstrap CI]", prefix="iqm_", digits=3, **no_value),
               interval_column("p_improvement", f"P(> {reference})", digits=2, **no_value),
               Column("n", "n (seeds)", _seeds),
               Column("published", align="left")]
    for row in rows:  # a cell without seeds shows "-", not NaN
        if not row["n"]:
            row["mean"] = row["iqm"] = None
    return Table(columns, rows, title=f"{metric}: {metric_of(metric).label}", records=[c for c in cells if c["metric"] == metric])


def claims_table(claims: list[dict[str, Any]], markdown: bool = True) -> Table:
    """Every shape claim: held / not held / not evaluated, with the numbers that decided it."""
    colours = {"held": "green", "not held": "red"}

    def status(row: dict[str, Any]) -> str:
        if markdown:
            return f"**{row['status']}**"
        return f"[{colours.get(row['status'], 'yellow')}]{row['status']}[/]"

    columns = [Column("claim", align="left"), Column("status", format=status, align="left"),
               Column("numbers", align="left")]
    if markdown:
        columns += [Column("published", align="left"), Column("source", align="left")]
    held = sum(c["status"] == "held" for c in claims)
    return Table(columns, claims, title="shape claims", caption=f"{held} of {len(claims)} held at this scale.")


def render_markdown(bench: Benchmark, result: dict[str, Any]) -> str:
    cells, claims, levels = result["cells"], result["claims"], result["levels"]
    arms = [a for a in bench.arms if a.name in {c["arm"] for c in cells}] or bench.arms
    reference = arms[0].name
    done = [t for t in result["trials"] if t["status"] == "done"]
    lines = [f"# Benchmark {bench.name} (scale {result['scale']})", ""]
    if bench.title:
        lines += [bench.title, ""]
    if result["command"]:
        lines += ["Rerun with:", "", f"    {result['command']}", ""]
    partial = result.get("partial")
    if partial:
        lines += [f"**Partial report**: {partial['finished']} of {partial['expected']} trials have finished (`--partial`: "
                  "the benchmark is still running or was stopped; the command above with `--resume` runs the rest). "
                  "A cell's n counts its finished seeds; a claim whose cells have none is not evaluated.", ""]
        trial_line = f"{partial['finished']} finished trials of"
    else:
        trial_line = (f"{len(result['trials'])} trials ({len(done)} finished; this invocation took {result['seconds']:.0f} s, "
                      "trials a resumed benchmark had finished before not counted):")
    lines += [
        f"Policy model `{result['model']}`; {trial_line} "
        + " x ".join([f"arms {', '.join(a.name for a in arms)}",
                      *(f"{bench.factors[f].label or f} {{{', '.join(names)}}}" for f, names in levels.items()),
                      f"seeds {result['seeds']}"]) + ".", "",
        "Arms:", "",
        *[f"- **{a.name}**: {a.description or 'set ' + json.dumps(a.set)}" for a in arms], "",
        f"Each trial is evaluated on {result['eval_conversations']} held-out conversations; a cell summarizes its "
        "seeds (n = seeds). Mean: the mean over seeds with its 95% Student-t CI. IQM: the interquartile mean over "
        "seeds with its 95% stratified bootstrap CI (Agarwal et al., 2021). "
        f"P(> {reference}): the probability that a seed of the arm beats a seed of {reference} (95% stratified "
        "bootstrap CI). Win rates are the held-out users' Bradley-Terry probability of preferring the arm's "
        "reply over the reference reply named by the metric. \"Published\" is what the source reports for the arm in "
        "its own setting (not a number attune's miniature is expected to match).", "",
    ]
    per_group = sorted({(level_key(t["levels"]), k.removeprefix("n:"), int(v)) for t in done
                        for k, v in t["metrics"].items() if k.startswith("n:")})
    if per_group:
        lines += ["Held-out conversations per group in each trial: "
                  + "; ".join(f"{lv}: {g} {n}" for lv, g, n in per_group)
                  + " (a group's win rate is over its own conversations).", ""]
    lines += ["## Results", ""]
    for metric in bench.metrics:
        table = metric_table(bench, cells, metric, levels, reference)
        lines += [f"### {metric}", "", metric_of(metric).label, "", table.to_markdown(title=False)]
    claims_md = claims_table(claims)
    held, claims_md.caption = claims_md.caption, ""
    lines += ["## Shape claims", "", f"{held} Each is checked on the seed means above.", "",
              claims_md.to_markdown(title=False)]
    lines += ["Sources:", ""] + [f"- {key}: {text}" for key, text in bench.sources.items()] + [""]
    failed = [t for t in result["trials"] if t["status"] != "done"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- {t['arm']} {level_key(t['levels'])} seed {t['seed']}: "
                                             f"{t.get('error', 'no result')}" for t in failed] + [""]
    lines += ["![benchmark](plots/benchmark.png)", ""]
    return "\n".join(lines)


def plot_benchmark(folder: Path, bench: Benchmark, cells: list[dict[str, Any]], levels: dict[str, list[str]]) -> Path:
    """One panel per metric: IQM (with its bootstrap interval) of every arm along the first factor's levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    factor = next(iter(levels), None)
    names = levels.get(factor, ["-"]) if factor else ["-"]
    panels = len(bench.metrics)
    arms = [a for a in bench.arms if any(c["arm"] == a.name for c in cells)]
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels + 1, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], bench.metrics):
        for k, arm in enumerate(arms):
            rows = [c for c in cells if c["metric"] == metric and c["arm"] == arm.name]
            xs, ys, low, high = [], [], [], []
            for i, name in enumerate(names):
                for cell in rows:
                    if (not factor or cell["levels"].get(factor) == name) and cell["n"]:
                        xs.append(i + 0.06 * (k - len(arms) / 2))
                        ys.append(cell["iqm"])
                        low.append(cell["iqm"] - cell["iqm_ci_low"] if math.isfinite(cell["iqm_ci_low"]) else 0.0)
                        high.append(cell["iqm_ci_high"] - cell["iqm"] if math.isfinite(cell["iqm_ci_high"]) else 0.0)
                        break
            if xs:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=arm.name)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(bench.factors[factor].label or factor if factor else "")
        ax.set_title(metric, fontsize=10)
        if metric_of(metric).chance is not None:
            ax.axhline(metric_of(metric).chance, color="grey", linestyle=":", linewidth=1)
    axes[0][0].set_ylabel("IQM over seeds (95% bootstrap CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"benchmark {bench.name}", fontsize=11)
    return save_figure(fig, folder, "benchmark.png")


def print_summary(console: Any, result: dict[str, Any], folder: Path) -> None:
    table = claims_table(result["claims"], markdown=False)
    partial = result.get("partial")
    table.title = (f"benchmark {result['benchmark']} ({result['scale']}): shape claims"
                   + (f", partial: {partial['finished']} of {partial['expected']} trials" if partial else ""))
    console.print(table.to_rich())
    console.print(f"benchmark: [cyan]{folder / 'benchmark.md'}[/]")
