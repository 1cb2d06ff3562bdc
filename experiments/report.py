"""A run's human-readable summary: ``report.md`` and ``plots/*.png`` in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_figure(fig: Any, run_dir: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = run_dir / "plots" / name
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("phase") == "train" and r.get("reward") is not None]


def plot_training(run_dir: Path) -> Path | None:
    """Training reward per step, and the user's utility terms underneath it."""
    records = _train_records(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    terms = sorted({k for r in records for k in r if k.startswith("rewards/user_feedback/") and k.split("/")[-1] not in ("mean", "std")})
    fig, axes = plt.subplots(1, 2 if terms else 1, figsize=(11 if terms else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, [r["reward"] for r in records], marker="o", label="total reward")
    if all("reward_std" in r for r in records):
        low = [r["reward"] - r["reward_std"] for r in records]
        high = [r["reward"] + r["reward_std"] for r in records]
        ax.fill_between(steps, low, high, alpha=0.2, label="± std within batch")
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title("training reward")
    ax.legend()
    if terms:
        ax = axes[0][1]
        for key in terms:
            ax.plot(steps, [r.get(key) for r in records], label=key.split("/")[-1])
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("training step")
        ax.set_title("user utility terms (batch mean)")
        ax.legend(fontsize=8)
    return save_figure(fig, run_dir, "training_reward.png")


def plot_evaluation(run_dir: Path, report: dict[str, Any]) -> Path | None:
    """Held-out mean utility before and after training, overall and per group, with 95 % intervals."""
    if "before" not in report:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    before, after = report["before"], report["after"]
    labels = ["all users"] + [f"{g}\n(n={before['by_group'][g]['n']})" for g in before["by_group"]]
    b_means = [before["mean_utility"]] + [v["mean"] for v in before["by_group"].values()]
    b_cis = [before["ci95"]] + [v["ci95"] for v in before["by_group"].values()]
    a_means = [after["mean_utility"]] + [v["mean"] for v in after["by_group"].values()]
    a_cis = [after["ci95"]] + [v["ci95"] for v in after["by_group"].values()]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, b_means, 0.4, yerr=b_cis, capsize=4, label="base policy")
    ax.bar(x + 0.2, a_means, 0.4, yerr=a_cis, capsize=4, label="trained policy")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(x, labels)
    ax.set_ylabel(f"mean hidden utility\n({before['interval']}, n={before['n']} overall)")
    ax.set_title("held-out users, before and after training")
    ax.legend()
    return save_figure(fig, run_dir, "eval_by_group.png")


def write_report(run_dir: Path, report: dict[str, Any], config_text: str) -> Path:
    """``report.md``: the numbers, the plots and a few example replies, before and after."""
    from experiments.metrics import baseline_table, evaluation_table, term_table
    from experiments.redact import redact

    lines = [f"# {run_dir.name}", ""]
    if "held_out" in report:  # a classic baseline on a discrete env
        lines += [baseline_table(report).to_markdown()]
    if "before" in report:
        lines += [evaluation_table(report).to_markdown()]
        terms = term_table(report)
        if terms is not None:
            lines += [f"### {terms.title}", "", terms.to_markdown(title=False)]
    if "privacy" in report:
        lines += privacy_lines(report["privacy"])
    for section, values in report.items():
        if isinstance(values, dict) and "utility" in values and "policies" in values:
            lines += also_evaluated_table(section, values, report.get("comparison"))
    for name, title in (("training_reward.png", "Training"), ("eval_by_group.png", "Evaluation")):
        if (run_dir / "plots" / name).is_file():
            lines += [f"## {title}", "", f"![{title}](plots/{name})", ""]
    from experiments.explain import explanation_markdown
    from experiments.fairness import fairness_markdown, plot_fairness

    lines += fairness_markdown(report)
    if plot_fairness(run_dir, report) is not None:
        lines += ["![fairness per group and trait](plots/fairness.png)", ""]
    lines += explanation_markdown(run_dir, report)  # writes plots/explain.png
    episodes_path = run_dir / "episodes.json"
    if episodes_path.is_file():
        episodes = json.loads(episodes_path.read_text())
        lines += ["## Example replies", ""]
        for b, a in list(zip(episodes["before"], episodes["after"]))[:3]:
            lines += [
                f"**user {b['user_id']} ({b['group']}), task {b['task_id']}**",
                "",
                f"- base ({b['score']:+.2f}): {redact(b['replies'][0])[:300]!r}",
                f"- trained ({a['score']:+.2f}): {redact(a['replies'][0])[:300]!r}",
                "",
            ]
    lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out


def _epsilon_text(epsilon: float | None) -> str:
    return "inf (no noise)" if epsilon is None else f"{epsilon:.3g}"


def privacy_lines(privacy: dict[str, Any]) -> list[str]:
    """report.md's differential-privacy section: the run's (epsilon, delta) and each private part's accounting."""
    lines = ["## Differential privacy", "",
             f"(epsilon, delta) = ({_epsilon_text(privacy['epsilon'])}, {privacy['delta']:.3g}) per **{privacy['unit']}** "
             f"({privacy['accountant'].upper()} accountant, Poisson sampling of users, per-user clipping"
             + (f"; composition: {privacy['composition']}" if "composition" in privacy else "") + ").", "",
             "| part | epsilon | delta | noise multiplier | max grad norm | sample rate | steps | users | users/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, part in privacy["parts"].items():
        rows = part.get("adapters", {name: part})
        for label, p in rows.items():
            label = name if label == name else f"{name} (adapter {label})"
            lines.append(f"| {label} | {_epsilon_text(p['epsilon'])} | {p['delta']:.3g} | {p['noise_multiplier']:.3g} | "
                         f"{p['max_grad_norm']:g} | {p['sample_rate']:.3g} | {p['steps']} | {p['users']} | {p['users_per_step']:g} |")
    if "not_private" in privacy:
        lines += ["", f"Not private: {privacy['not_private']}."]
    return lines + [""]


def also_evaluated_table(section: str, values: dict[str, Any], comparison: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines: every policy the method had scored (e.g. federated's global and personalized adapters) on
    the same held-out conversations, with intervals and paired differences."""
    utility, policies = values["utility"], values["policies"]
    trained = next(name for name in utility if name != "base" and name not in policies)
    lines = [f"## {section.replace('_', ' ').capitalize()}", ""]
    if "per_round" in values:
        losses = ", ".join(f"{loss:.4f}" for loss in values.get("round_loss", []))
        lines += [f"{values.get('rounds')} rounds of {values.get('clients_per_round')} of {values.get('clients')} clients "
                  f"({values.get('client')}s, {values.get('local_method')}, {values.get('aggregation')}"
                  f"{', secure aggregation' if values.get('secure_aggregation') else ''}); mean client loss per "
                  f"round: {losses}", ""]
    lines += [f"| policy | mean utility [95% CI] | n | vs base (paired) | vs {trained} (paired) |",
              "|---|---|---|---|---|"]
    for name, u in utility.items():
        cells = [name, f"{u['mean_utility']:+.3f} [{u['ci_low']:+.3f}, {u['ci_high']:+.3f}]", str(u["n"]), "", ""]
        if name == trained and comparison:
            c = comparison
            cells[3] = f"{c['improvement']:+.3f} [{c['improvement_ci_low']:+.3f}, {c['improvement_ci_high']:+.3f}]"
        if name in policies:
            c, d = policies[name]["comparison"], policies[name][f"vs_{trained}"]
            cells[3] = f"{c['improvement']:+.3f} [{c['improvement_ci_low']:+.3f}, {c['improvement_ci_high']:+.3f}]"
            cells[4] = f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def build_report(run_dir: Path, report: dict[str, Any]) -> Path:
    plot_training(run_dir)
    plot_evaluation(run_dir, report)
    return write_report(run_dir, report, (run_dir / "config.yaml").read_text())


def print_report(console: Any, report: dict[str, Any], run_dir: Path) -> None:
    """The run's evaluation table in the terminal (the same table as ``report.md``'s)."""
    from experiments.metrics import evaluation_table

    if "before" not in report:
        console.print(f"[green]done[/] (evaluation disabled) -> {run_dir}")
        return
    console.print(evaluation_table(report).to_rich())
    changes = sorted((report["comparison"].get("term_changes") or {}).items(), key=lambda item: -abs(item[1]["change"]))
    if changes:
        console.print("utility terms that moved most (paired change, see report.md): "
                      + ", ".join(f"{name} {c['change']:+.3f}" for name, c in changes[:3]))
    from experiments.fairness import fairness_line

    if (fairness := fairness_line(report)) is not None:
        console.print(fairness + f" (per user: attune explain {run_dir})", markup=False, highlight=False)
    if "privacy" in report:
        privacy = report["privacy"]
        console.print(f"differential privacy per user: epsilon {_epsilon_text(privacy['epsilon'])}, delta {privacy['delta']:.3g}")
    for section, values in report.items():
        if isinstance(values, dict) and "utility" in values and "policies" in values:
            console.print(f"{section} (mean utility, same conversations): " + ", ".join(
                f"{name} {u['mean_utility']:+.3f}" for name, u in values["utility"].items()))
    console.print(f"training took {report['train_seconds']:.0f} s; run folder: [cyan]{run_dir}[/]")
