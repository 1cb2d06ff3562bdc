"""The ``attune`` command line.

Why one module over 300 lines: every `attune` command is declared here so `--help` and the one-line error
handling stay in one place; each command body is a call into its own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

DEBUG_HELP = "show the full traceback of an error instead of one line"


class _AttuneGroup(TyperGroup):
    """The command group; takes a global ``--debug`` before the command (``attune --debug run ...``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        command_at = next((i for i, arg in enumerate(args) if not arg.startswith("-")), len(args))
        if "--debug" in args[:command_at]:
            ctx.meta["attune.debug"] = True  # ctx.meta is shared with the command's context
            args = [arg for arg in args[:command_at] if arg != "--debug"] + args[command_at:]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="attune",
    cls=_AttuneGroup,
    help="attune: reinforcement learning for feedback-driven, personalized LLM agents. "
    "Errors are one line; add --debug (attune --debug run ...) to see the full traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
DEBUG_OPTION = typer.Option(False, "--debug", help=DEBUG_HELP)

RUN_HELP = """Run one experiment from a YAML config, with optional key=value overrides.

Overrides use dotted paths into the config, values are YAML scalars, e.g.

  attune run experiments/configs/quickstart.yaml trainer.max_steps=5 policy.model=tiny-random

Results land in runs/<name>/. Every field, method and reward is listed below.
"""


def run_help() -> str:
    """``attune run --help``: the fields, methods and rewards, generated from the config model and registries."""
    import agents
    from experiments.config_files import field_reference
    from rewards import REWARDS

    methods = [agents.describe_method(method) for method in agents.methods()]
    methods.append("your own: package.module:name, a Method registered with agents.register_method "
                   "(see docs/architecture.md, Add a method)")
    return "\n\n".join([
        RUN_HELP.strip(),
        "Fields:\n\n\b\n" + "\n".join(f"  {line}" for line in field_reference()),
        "Methods and their method_settings (trainer: passes through to the method's TRL config class):\n\n\b\n"
        + "\n".join(f"  {line}" for line in methods),
        "Rewards (rewards: [{name, weight, params}]): " + ", ".join(REWARDS)
        + ", or your own as package.module:function.",
        "Models (policy.model): smollm2-135m-instruct (embedded default), tiny-random (tests), a local folder, "
        "or a Hugging Face id already in the local cache.",
    ])


def method_table() -> str:
    """The registered methods as a Markdown table (docs/architecture.md holds a copy that a test keeps current)."""
    import agents

    lines = ["| method | kind | multi-turn | resumable | what it does |", "| --- | --- | --- | --- | --- |"]
    for method in agents.methods():
        flags = ["yes" if flag else "no" for flag in (method.multi_turn, method.resumable)]
        lines.append(f"| `{method.name}` | {method.kind} | {' | '.join(flags)} | {method.description} |")
    return "\n".join(lines)


class _GeneratedHelpCommand(TyperCommand):
    """A command whose help text is built only when asked for (it imports every method to describe it)."""

    help_factory: Any = None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if self.help_factory is not None:
            self.help = type(self).help_factory()
        return super().format_help(ctx, formatter)


class _RunCommand(_GeneratedHelpCommand):
    help_factory = staticmethod(run_help)


@app.callback()
def main() -> None:
    """attune: reinforcement learning for feedback-driven, personalized LLM agents."""
    from experiments.offline import go_offline

    go_offline()  # before any command imports W&B, Ray or Hugging Face code


@app.command("run", cls=_RunCommand, help=RUN_HELP)
def run_command(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="experiment YAML, e.g. experiments/configs/quickstart.yaml"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. trainer.max_steps=5"),
    debug: bool = DEBUG_OPTION,
) -> None:
    def action(experiment: Any) -> None:
        from experiments.runner import run

        run(experiment, console=Console())

    _guarded(action, config, overrides, debug or bool(ctx.meta.get("attune.debug")))


COMPARE_HELP = """Train the same method on the same users once per reward, and show where proxies lie.

The config's variants each name the rewards to train on, e.g.

  variants: [{name: utility, rewards: [{name: user_feedback}]}, {name: length, rewards: [{name: length_target}]}]

Reports per reward: gain in the proxy, gain in the users' hidden utility, the gap between them (reward
hacking), the proxy's correlation with the hidden utility on a fixed probe set, and its cost (ms per 100
replies). Writes reward_comparison.md/.json and plots/reward_hacking.png in the run folder, and logs to W&B.
"""


@app.command("compare-rewards", help=COMPARE_HELP)
def compare_rewards_command(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="experiment YAML with variants, e.g. experiments/configs/rewards.yaml"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. trainer.max_steps=5"),
    debug: bool = DEBUG_OPTION,
) -> None:
    def action(experiment: Any) -> None:
        from experiments.compare_rewards import compare_rewards

        compare_rewards(experiment, console=Console())

    _guarded(action, config, overrides, debug or bool(ctx.meta.get("attune.debug")))


SWEEP_HELP = """Search over an experiment config with Ray Tune: locally by default, or on a Ray cluster.

The config's sweep block gives the space as dotted keys, the metric and mode, e.g.

  sweep: {space: {trainer.learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}, seeds: [0, 1], metric: mean_utility, mode: max}

Each trial is one attune run (its own run folder and W&B run). Writes sweep_results.md/.json, sorted by the
metric, and best_config.yaml (runnable with attune run) into <runs_dir>/sweep-<experiment>/.
"""


@app.command("sweep", help=SWEEP_HELP)
def sweep_command(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="experiment YAML with a sweep block, e.g. experiments/configs/sweep.yaml"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. sweep.max_concurrent=2"),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS",
                                          help="an existing Ray cluster (ray://host:10001 or host:6379); default: local Ray"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed sweep, keeping its finished trials"),
    debug: bool = DEBUG_OPTION,
) -> None:
    def action(experiment: Any) -> None:
        from experiments.sweep import run_sweep

        run_sweep(experiment, config, address=address, resume=resume, console=Console())

    _guarded(action, config, overrides, debug or bool(ctx.meta.get("attune.debug")))


BENCHMARK_HELP = """Run a paper-style benchmark: its arms x factor levels x seeds as Ray Tune trials, and its table.

NAME is a bundled benchmark (experiments/benchmarks/NAME.yaml, e.g. pluralistic) or a benchmark YAML file.
--scale smoke runs the tiny random model in minutes (checks the pipeline); --scale paper the setting the
benchmark's docs report (SmolLM2). Writes benchmark.md (mean, IQM and intervals per cell, the published
figure, each shape claim held or not held with its numbers), benchmark.json and plots/benchmark.png into
<runs_dir>/benchmark-NAME-SCALE/; every trial is a run folder under arms/<arm>/trials/.
"""


@app.command("benchmark", help=BENCHMARK_HELP)
def benchmark_command(
    ctx: typer.Context,
    benchmark: str = typer.Argument(..., help="a bundled benchmark name (e.g. pluralistic) or a benchmark YAML file"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value set on every arm, e.g. tracking.runs_dir=out"),
    scale: str = typer.Option("smoke", "--scale", help="smoke (tiny model, minutes) or paper (SmolLM2, hours)"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="run seeds 0..N-1 instead of the scale's seeds"),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS",
                                          help="an existing Ray cluster (ray://host:10001 or host:6379); default: local Ray"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed benchmark, keeping its finished trials"),
    partial: bool = typer.Option(False, "--partial", help="run nothing: report the trials finished so far (a long "
                                 "or killed benchmark), marked partial; --resume finishes it"),
    debug: bool = DEBUG_OPTION,
) -> None:
    from experiments.benchmark import main as benchmark_main

    _guarded_call(lambda: benchmark_main(benchmark, overrides or [], scale, seeds, address, resume, partial),
                  debug or bool(ctx.meta.get("attune.debug")))


SERVE_HELP = """A local feedback page: people judge two policies' replies blind, rate, critique and chat.

RUN folders (written by attune run) name the policies: one run is compared against its base model, two or
more against each other; with none, --model (default: the embedded SmolLM2) is compared with itself. Tasks
come from the first run's scenario (or --env). Every judgement and chat turn goes into --db (SQLite).
Binds to 127.0.0.1 unless --host says otherwise; Ctrl-C stops.

  attune serve runs/<name> --port 8000 --db feedback.sqlite
"""


@app.command("serve", help=SERVE_HELP)
def serve_command(
    ctx: typer.Context,
    runs: Optional[list[Path]] = typer.Argument(None, help="run folders, e.g. runs/quickstart__WritingAssistant-v1__s0__..."),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    db: Path = typer.Option(Path("feedback.sqlite"), "--db", help="SQLite file the feedback goes into (created if missing)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; other than loopback, anyone on the network can use the page"),
    model: Optional[str] = typer.Option(None, "--model", help="base model: compared with one RUN, or with itself when no RUN is given"),
    env: Optional[str] = typer.Option(None, "--env", help="env whose scenario gives the tasks (default: the first run's, else attune/WritingAssistant-v1)"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="longest reply, in tokens"),
    temperature: float = typer.Option(0.7, "--temperature", help="sampling temperature (0: greedy)"),
    debug: bool = DEBUG_OPTION,
) -> None:
    from experiments.serve import ServeError, serve

    def action() -> None:
        try:
            serve(list(runs or []), port=port, db=db, host=host, model=model, env_id=env,
                  max_new_tokens=max_new_tokens, temperature=temperature, console=Console())
        except ServeError as exc:
            if debug or ctx.meta.get("attune.debug"):
                raise
            err.print(f"[red]serve error:[/] {escape(_one_line(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None

    _guarded_call(action, debug or bool(ctx.meta.get("attune.debug")))


feedback_app = typer.Typer(
    name="feedback", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="What people chose in attune serve: export it as training data, or report the human evaluation.",
)
app.add_typer(feedback_app, name="feedback")

FEEDBACK_EXPORT_HELP = """Export the judgements of a feedback database (attune serve --db) as training data.

Writes OUT/preferences.jsonl, a TRL preference dataset (conversational prompt/chosen/rejected and user_id, one
row per judgement that picked a reply; load it with datasets.load_dataset("json", data_files=...)), and
OUT/ratings.csv, one row per judged reply (model, 1-5 rating, chosen/rejected/tie, critique). To train on the
choices directly: method: dpo with method_settings: {data: {source: human, db: DB}}.

  attune feedback export feedback.sqlite --out feedback_data
"""


@feedback_app.command("export", help=FEEDBACK_EXPORT_HELP)
def feedback_export_command(
    ctx: typer.Context,
    db: Path = typer.Argument(..., help="the SQLite file attune serve wrote (--db)"),
    out: Path = typer.Option(Path("feedback_data"), "--out", help="folder for preferences.jsonl and ratings.csv"),
    debug: bool = DEBUG_OPTION,
) -> None:
    def action() -> None:
        from experiments.feedback import export

        written = export(db, out)
        Console().print(f"{written['pairs']} preference pairs -> [cyan]{written['preferences']}[/] "
                        f"({written['ties']} ties left out); {written['rated_replies']} judged replies -> "
                        f"[cyan]{written['ratings']}[/]", soft_wrap=True)

    _feedback_guarded(action, debug or bool(ctx.meta.get("attune.debug")))


FEEDBACK_REPORT_HELP = """The human-evaluation report of a feedback database (attune serve --db).

Per policy pair: the human win rate with a 95% Wilson interval, overall and per person. For the same reply
pairs: how often each simulated user group of the scenario picks what the person picked. Per person: the
best-matching group and preference weights fitted to their choices (Bradley-Terry on the style features),
which users.from_feedback: DB turns into simulated users. --out writes human_eval.md and human_eval.json.

  attune feedback report feedback.sqlite --out feedback_report
"""


@feedback_app.command("report", help=FEEDBACK_REPORT_HELP)
def feedback_report_command(
    ctx: typer.Context,
    db: Path = typer.Argument(..., help="the SQLite file attune serve wrote (--db)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for human_eval.md and human_eval.json"),
    env: Optional[str] = typer.Option(None, "--env", help="env whose scenario judges the replies (default: the "
                                      "judged tasks' own, else attune/WritingAssistant-v1)"),
    output_format: str = typer.Option("rich", "--format", help="what to print: rich (tables), markdown or json"),
    debug: bool = DEBUG_OPTION,
) -> None:
    def action() -> None:
        import json

        from experiments.feedback import FeedbackError, human_report, report_markdown, report_tables, write_report

        if output_format not in ("rich", "markdown", "json"):
            raise FeedbackError(f"--format: {output_format!r} is not one of rich, markdown, json")
        report = human_report(db, env)
        console = Console()
        if output_format == "json":
            print(json.dumps(report, indent=2))
        elif output_format == "markdown":
            print(report_markdown(report), end="")
        else:
            for table in report_tables(report).values():
                console.print(table.to_rich())
        if out is not None:
            markdown, data = write_report(report, out)
            (console if output_format == "rich" else err).print(f"report: [cyan]{markdown}[/], [cyan]{data}[/]",
                                                                soft_wrap=True)

    _feedback_guarded(action, debug or bool(ctx.meta.get("attune.debug")))


def _feedback_guarded(action: Any, debug: bool) -> None:
    """As :func:`_guarded_call`; a feedback database or option the user can fix is one line and exit code 2."""
    from experiments.feedback import FeedbackError

    def guarded() -> None:
        try:
            action()
        except FeedbackError as exc:
            if debug:
                raise
            err.print(f"[red]feedback error:[/] {escape(_one_line(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None

    _guarded_call(guarded, debug)


EXPLAIN_HELP = """Explain what training changed and why, from a run folder's saved files (no model is loaded).

Prints the utility terms' changes before -> after over the held-out conversations (e.g. brevity +0.31,
warmth -0.05), which users' preference weights the change served, the changes per user group, the reply pair
that changed most, and one line per user. --user ID shows one user in full: every term's change, their
weights, and their own reply pair that changed most. The run's report.md embeds the same explanation.
"""


@app.command("explain", help=EXPLAIN_HELP)
def explain_command(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="a run folder, e.g. runs/quickstart__WritingAssistant-v1__s0__<time>"),
    user: Optional[str] = typer.Option(None, "--user", help="one held-out user's id, e.g. u0042"),
    debug: bool = DEBUG_OPTION,
) -> None:
    from experiments.explain import print_explanation

    _guarded_call(lambda: print_explanation(run, user, Console()), debug or bool(ctx.meta.get("attune.debug")))


EVALUATE_HELP = """Evaluate a finished run's trained policy and its base policy again, on the run's held-out users.

--stress runs the robustness suite: both policies answer the same held-out conversations clean and with each
request perturbed (typos and casing noise, a paraphrase, a prompt injection, a cue contradicting the user's
strongest preference); the users score every reply against their original request and hidden preferences.
Reports per perturbation each policy's mean utility, its drop from clean (paired by conversation), and trained
minus base, with 95% Student-t intervals and n. Writes stress.json, stress.md and stress_episodes.json into the
run folder (or --output) and adds the table to the run's report.md, e.g.

  attune evaluate runs/quickstart__WritingAssistant-v1__s0__20261129-044343 --stress
"""


@app.command("evaluate", help=EVALUATE_HELP)
def evaluate_command(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="a finished run folder, e.g. runs/quickstart__WritingAssistant-v1__s0__..."),
    stress: bool = typer.Option(False, "--stress", help="run the robustness suite (perturbed requests)"),
    prompts: Optional[int] = typer.Option(None, "--prompts",
                                          help="held-out conversations (default: the run's evaluation.prompts)"),
    perturbations: Optional[str] = typer.Option(None, "--perturbations",
                                                help="a comma-separated subset of typos,paraphrase,injection,"
                                                     "contradiction (default: all)"),
    seed: int = typer.Option(0, "--seed", help="the perturbations' seed (the sampling seed is the run's)"),
    output: Optional[Path] = typer.Option(None, "--output",
                                          help="write the files into this folder and leave the run folder untouched"),
    debug: bool = DEBUG_OPTION,
) -> None:
    from experiments.stress import main as evaluate_main

    _guarded_call(lambda: evaluate_main(run, stress=stress, prompts=prompts, perturbations=perturbations, seed=seed,
                                        output=output), debug or bool(ctx.meta.get("attune.debug")))


def _one_line(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _user_error_kind(exc: Exception) -> str | None:
    """The label of an error the user can fix (exit code 2), or None for anything else."""
    try:
        from agents.policy import ModelNotAvailableError
        from experiments.config import ConfigError
        from experiments.explain import ExplainError
        from experiments.stress import RunFolderError
        from rewards import RewardContractError
    except Exception:  # a broken install: reported as an unexpected error
        return None
    # RunFolderError first: it is a ConfigError, labelled more precisely.
    kinds = {RunFolderError: "run error", ConfigError: "config error", ModelNotAvailableError: "model not available",
             RewardContractError: "reward error", ExplainError: "cannot explain"}
    return next((label for cls, label in kinds.items() if isinstance(exc, cls)), None)


def _guarded(action: Any, config: Path, overrides: Optional[list[str]], debug: bool = False) -> None:
    """Load the config and run ``action``. Errors a user can fix are one line and exit code 2; any other error
    is one line and exit code 1. With ``--debug`` every error shows its full traceback instead."""
    import os
    import sys

    # As `python -m` does: modules in the current folder (your own rewards) can be named by dotted path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    def load_and_act() -> None:
        from experiments.config_files import load_config
        from experiments.preflight import check_tracking

        experiment = load_config(config, overrides or [])
        check_tracking(experiment)  # before any run, variant or sweep writes its folders
        action(experiment)

    _guarded_call(load_and_act, debug)


def _guarded_call(action: Any, debug: bool = False) -> None:
    """Run ``action()``: an error a user can fix is one line and exit code 2, any other error one line and exit
    code 1; with ``--debug`` the full traceback instead."""
    try:
        action()
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        if debug:
            raise
        kind = _user_error_kind(exc)
        if kind is not None:
            err.print(f"[red]{kind}:[/] {escape(_one_line(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        from experiments.redact import redact  # a user error names settings; any other may quote a text

        err.print(f"[red]error:[/] {escape(redact(type(exc).__name__ + ': ' + _one_line(exc)))}; rerun with --debug for the "
                  "traceback", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
