"""The robustness suite, ``attune evaluate RUN --stress``: a finished run's trained policy and its base policy on
the run's held-out users, clean and under perturbed requests.

Both policies answer the same held-out conversations (the run's users, rebuilt from its saved config and
seed, the same evaluation rows and sampling seeds as the run's own evaluation) once clean and once per
perturbation of :mod:`envs.perturbations`: typos and casing noise, a paraphrase, a prompt injection, a
cue contradicting the user's strongest preference. A perturbation changes only what the policy reads
(:class:`~envs.perturbations.PerturbedRequests`); each reply is scored by the simulated user against the
original task with their hidden weights, so a score that falls is the policy being thrown off.

Reported per perturbation (:mod:`experiments.stats`, every number with its n and interval kind): each
policy's mean hidden utility (Student-t interval); its drop, clean minus perturbed, paired by conversation;
trained minus base under that perturbation (paired); and the trained policy's drop minus the base
policy's (paired): whether training made the policy more fragile. Writes ``stress.json``, ``stress.md`` and
``stress_episodes.json`` (what each policy read and replied) into the run folder or ``--output``, prints
the table, and adds it to the run's ``report.md``.

Training under noisy, inconsistent or adversarial feedback is the other half of robustness: the env
options ``env.inconsistent``, ``env.adversarial`` and ``env.noise``, compared side by side by
``experiments/configs/robustness.yaml``.

Why one module over 300 lines: loading a finished run's two policies, replaying its held-out conversations
under each perturbation and the table of paired drops are one pipeline behind one command, read top to bottom.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.config import ConfigError, ExperimentConfig

if TYPE_CHECKING:  # imported where used: the CLI imports this module for RunFolderError on every error
    from experiments import stats
    from experiments.evaluate import EpisodeResult
    from experiments.tables import Table

CLEAN = "clean"
POLICIES = ("base", "trained")
REPORT_START = "<!-- attune evaluate --stress -->"
REPORT_END = "<!-- /attune evaluate --stress -->"


class RunFolderError(ConfigError):
    """A run folder the stress suite cannot evaluate: missing, unfinished, or without a trained model."""


def perturbation_names(text: str | None) -> list[str]:
    """``--perturbations typos,injection`` as a list (every perturbation when None); unknown names are an error."""
    from envs.perturbations import PERTURBATIONS

    if text is None:
        return list(PERTURBATIONS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PERTURBATIONS]
    if unknown or not names:
        raise ConfigError(f"--perturbations: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                          f"choose from {','.join(PERTURBATIONS)} (comma-separated)")
    return list(dict.fromkeys(names))


def check_run(run_dir: Path) -> tuple[ExperimentConfig, Path]:
    """The run's saved config and its trained model's folder (``checkpoints/final``). Raises
    :class:`RunFolderError` naming the problem and the fix."""
    import agents
    from experiments.config_files import load_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder; pass the folder `attune run` printed (runs/<name>)")
    if not (run_dir / "config.yaml").is_file():
        raise RunFolderError(f"{run_dir} has no config.yaml: not a run folder; pass the folder `attune run` "
                             "printed (runs/<name>)")
    config = load_config(run_dir / "config.yaml")
    if config.variants or config.seeds:
        raise RunFolderError(f"{run_dir} holds several runs (variants or seeds); evaluate one of them: "
                             f"{run_dir / 'variants'}/<name>")
    method = agents.get_method(config.method)
    if method.kind != "llm":
        raise RunFolderError(f"{run_dir}: method {config.method!r} is a classic baseline on a discrete env; the "
                             "stress suite evaluates LLM policies (runs of grpo, dpo, ppo, ...)")
    if not (run_dir / "eval.json").is_file():
        raise RunFolderError(
            f"{run_dir} did not finish (no eval.json); resume it with `attune run {run_dir / 'config.yaml'} "
            f"resume=true tracking.runs_dir={run_dir.parent} tracking.name={run_dir.name}` or run it again")
    final = run_dir / "checkpoints" / "final"
    if (final / "adapters.json").is_file():
        raise RunFolderError(f"{run_dir}: its policy is one LoRA adapter per user or group (method "
                             f"{config.method!r}); the stress suite evaluates one trained model or adapter")
    if not final.is_dir():
        raise RunFolderError(f"{run_dir} has no trained model ({final} is missing); evaluate a finished run that "
                             "saved one (every grpo, dpo, ppo, ... run does), or run it again")
    if not ((final / "config.json").is_file() or (final / "adapter_config.json").is_file()):
        raise RunFolderError(f"{run_dir} has no trained model: method {config.method!r} keeps the base weights "
                             f"({final} holds no model or LoRA adapter); evaluate a run of a method that trains "
                             "them (grpo, dpo, ppo, ...)")
    return config, final


def load_trained(config: ExperimentConfig, final: Path) -> Any:
    """The trained policy saved in ``final``: a whole model, or the run's base model with its LoRA adapter."""
    from agents.policy import load_policy

    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base, _, _ = load_policy(config.policy.model)
        return PeftModel.from_pretrained(base, str(final))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(final, dtype="float32")


def _estimate(estimate: stats.Estimate) -> dict[str, Any]:
    return {"value": estimate.value, "ci95": estimate.half_width, **estimate.as_dict(), "n": estimate.n}


def summarize(results: dict[str, dict[str, list[EpisodeResult]]]) -> dict[str, Any]:
    """Per condition (``clean`` first) and policy: mean utility; under a perturbation its drop (clean minus
    perturbed, paired by conversation); trained minus base; the trained drop minus the base drop."""
    from experiments import stats

    clean = {policy: [r.score for r in results[CLEAN][policy]] for policy in POLICIES}
    summary: dict[str, Any] = {}
    for condition, by_policy in results.items():
        scores = {policy: [r.score for r in by_policy[policy]] for policy in POLICIES}
        entry: dict[str, Any] = {}
        for policy in POLICIES:
            entry[policy] = {"mean_utility": _estimate(stats.mean_interval(scores[policy]))}
            if condition != CLEAN:
                entry[policy]["drop"] = _estimate(stats.paired_difference_interval(clean[policy], scores[policy]))
        entry["trained_minus_base"] = _estimate(stats.paired_difference_interval(scores["trained"], scores["base"]))
        if condition != CLEAN:
            drops = {p: [c - s for c, s in zip(clean[p], scores[p])] for p in POLICIES}
            entry["drop_trained_minus_base"] = _estimate(stats.paired_difference_interval(drops["trained"],
                                                                                          drops["base"]))
        summary[condition] = entry
    return summary


def _row(condition: str, entry: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"perturbation": condition}

    def put(key: str, estimate: dict[str, Any] | None) -> None:
        if estimate is not None:
            row[key], row[f"{key}_ci95"], row[f"{key}_n"] = estimate["value"], estimate["ci95"], estimate["n"]

    for policy in POLICIES:
        put(policy, entry[policy]["mean_utility"])
        put(f"{policy}_drop", entry[policy].get("drop"))
    put("trained_minus_base", entry["trained_minus_base"])
    put("drop_gap", entry.get("drop_trained_minus_base"))
    row["n"] = entry["base"]["mean_utility"]["n"]
    return row


def stress_table(report: dict[str, Any]) -> Table:
    """The suite's one table: a row per condition, the two policies side by side."""
    from experiments.tables import Column, Table, mean_column

    columns = [
        Column("perturbation", align="left"),
        mean_column("base", "base utility"),
        mean_column("trained", "trained utility"),
        mean_column("base_drop", "base drop", missing="-"),
        mean_column("trained_drop", "trained drop", missing="-"),
        mean_column("trained_minus_base", "trained - base"),
        mean_column("drop_gap", "trained drop - base drop", missing="-"),
        Column("n"),
    ]
    rows = [_row(condition, entry) for condition, entry in report["perturbations"].items()]
    caption = (f"{report['prompts']} held-out conversations, the same in every row for both policies (sampling seed "
               f"{report['sampling_seed']}, perturbation seed {report['perturbation_seed']}). Utility: the users' "
               "noise-free hidden utility, scored against the original request. Drop: clean minus perturbed, paired "
               "by conversation (positive = worse under the perturbation). ± is the half-width of the 95% Student-t "
               "CI (paired t for drops and differences).")
    return Table(columns, rows, title=f"robustness of {report['run']}: trained vs base policy under perturbed requests",
                 caption=caption)


def describe_perturbations(names: list[str]) -> list[str]:
    from envs.perturbations import PERTURBATIONS

    return [f"- **{name}**: {PERTURBATIONS[name].description}" for name in names]


def markdown(report: dict[str, Any]) -> str:
    names = [c for c in report["perturbations"] if c != CLEAN]
    lines = [stress_table(report).to_markdown(), "", "Perturbations (the policy reads them; the user scores the "
             "original request):", "", *describe_perturbations(names), ""]
    for example in report["examples"]:
        lines += [f"**{example['perturbation']}** (user {example['user_id']}, task {example['task_id']}): "
                  f"{example['request']!r} -> {example['seen']!r}", ""]
    lines.append(f"`attune evaluate {report['run_dir']} --stress` took {report['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def add_to_report(report_path: Path, section: str) -> None:
    """Put the stress section into the run's ``report.md`` (before its config), replacing an older one."""
    text = report_path.read_text()
    block = f"{REPORT_START}\n## Robustness (attune evaluate --stress)\n\n{section.rstrip()}\n{REPORT_END}\n"
    if REPORT_START in text and REPORT_END in text:
        head, rest = text.split(REPORT_START, 1)
        text = head + block + rest.split(REPORT_END, 1)[1].lstrip("\n")
    elif "\n## Config\n" in text:
        head, rest = text.split("\n## Config\n", 1)
        text = f"{head}\n{block}\n## Config\n{rest}"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    report_path.write_text(text)


def run_stress(run_dir: Path, *, prompts: int | None = None, perturbations: list[str] | None = None, seed: int = 0,
               output: Path | None = None, console: Any = None) -> dict[str, Any]:
    """Evaluate the run's trained and base policies clean and under each perturbation; write and print the results.

    ``prompts``: held-out conversations (default: the run's ``evaluation.prompts``, the same conversations as
    its own evaluation); ``seed``: the perturbations' seed; ``output``: a folder for the files instead of the
    run folder (the run folder is then left untouched).
    """
    from envs.perturbations import PERTURBATIONS, PerturbedRequests
    from experiments import evaluate
    from experiments.preflight import check_runs_dir, distinct_openings
    from experiments.runner import _population

    run_dir = Path(run_dir)
    names = list(PERTURBATIONS) if perturbations is None else perturbations
    check_options(prompts, seed)
    config, final = check_run(run_dir)  # before anything slow
    out_dir = Path(output) if output is not None else run_dir
    try:
        check_runs_dir(out_dir)
    except ConfigError as exc:
        if output is not None:
            raise ConfigError(str(exc).replace("tracking.runs_dir", "--output", 1)) from None
        raise RunFolderError(f"{run_dir} is not writable: write the results elsewhere with --output DIR") from None
    settings = config.evaluation
    n = settings.prompts if prompts is None else prompts
    population = _population(config)
    available = distinct_openings(population, population.held_out_users, n)
    if n > available:
        raise ConfigError(f"--prompts: {n} asked for, but the run's {len(population.held_out_users)} held-out users "
                          f"give only {available} distinct conversations; use --prompts {available} or fewer")

    import torch
    from rich.console import Console

    from agents.policy import load_policy
    from agents.rollouts import make_env
    from experiments.runner import _quiet_libraries

    console = console or Console()
    started = time.perf_counter()
    _quiet_libraries()
    torch.set_num_threads(config.threads)
    console.print(f"[bold]attune[/] stress suite on [cyan]{run_dir}[/]: base [cyan]{config.policy.model}[/] and the "
                  f"trained policy, {n} held-out conversations, clean + {', '.join(names)}")
    base, tokenizer, _ = load_policy(config.policy.model)
    trained = load_trained(config, final)
    env_kwargs = {"population": population, **config.env.env_kwargs(), "split": "held_out"}
    rows = evaluate.build_eval_set(make_env(config.env.id, **env_kwargs), n, seed=settings.seed,
                                   balance_groups=settings.balance_groups)

    def factory(condition: str) -> Any:
        if condition == CLEAN:
            return lambda: make_env(config.env.id, **env_kwargs)
        return lambda: PerturbedRequests(make_env(config.env.id, **env_kwargs), condition, seed=seed)

    results: dict[str, dict[str, list[EpisodeResult]]] = {}
    for condition in [CLEAN, *names]:
        results[condition] = {
            policy: evaluate.run_episodes(
                model, tokenizer, factory(condition), rows, max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature, top_p=settings.top_p, batch_size=settings.batch_size,
                seed=settings.seed, description=f"{condition}: {policy} policy")
            for policy, model in (("base", base), ("trained", trained))
        }
    report = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "prompts": n,
        "sampling_seed": settings.seed,
        "perturbation_seed": seed,
        "perturbations": summarize(results),
        "descriptions": {name: PERTURBATIONS[name].description for name in names},
        "examples": [
            {"perturbation": name, "user_id": r.user_id, "task_id": r.task_id,
             "request": rows[0]["prompt"][0]["content"], "seen": r.messages[0]["content"]}  # r plays rows[0]
            for name in names for r in results[name]["trained"][:1] if r.messages
        ],
        "seconds": time.perf_counter() - started,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stress.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    (out_dir / "stress_episodes.json").write_text(json.dumps(
        {condition: {policy: evaluate.episode_records(episodes) for policy, episodes in by_policy.items()}
         for condition, by_policy in results.items()}, indent=1) + "\n")
    section = markdown(report)
    (out_dir / "stress.md").write_text(f"# {run_dir.name}: robustness\n\n{section}")
    if output is None and (run_dir / "report.md").is_file():
        add_to_report(run_dir / "report.md", section)
    console.print(stress_table(report).to_rich())
    console.print(f"wrote {out_dir / 'stress.json'} and stress.md" + (", and the table into report.md"
                  if output is None and (run_dir / "report.md").is_file() else "")
                  + f" ({report['seconds']:.0f} s)")
    return report


def check_options(prompts: int | None, seed: int) -> None:
    """The command's numbers, checked before anything loads."""
    if prompts is not None and (isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1):
        raise ConfigError(f"--prompts: must be an integer >= 1 (held-out conversations), got {prompts!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed: must be an integer >= 0, got {seed!r}")


def main(run_dir: Path, *, stress: bool, prompts: int | None, perturbations: str | None, seed: int,
         output: Path | None) -> dict[str, Any]:
    """``attune evaluate``: the suites it runs (only ``--stress`` so far), options checked first."""
    if not stress:
        raise ConfigError("attune evaluate: choose a suite to run: --stress (the robustness suite)")
    names = perturbation_names(perturbations)
    check_options(prompts, seed)
    return run_stress(run_dir, prompts=prompts, perturbations=names, seed=seed, output=output)
