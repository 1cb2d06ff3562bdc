"""docs/architecture.md's worked examples run as written."""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import gymnasium
import pytest

import agents
import envs.scenarios
from experiments import metrics

from experiments.stats import format_interval

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text()
TINY = REPO / "experiments" / "configs" / "tiny.yaml"
EXAMPLES = dict(re.findall(r"```python\n# example: ([^\n]+)\n(.*?)```", DOC, flags=re.S))


def test_the_doc_has_the_examples_it_promises():
    assert set(EXAMPLES) == {"add an environment", "add a reward", "add a method", "add a metric"}


@pytest.fixture
def clean_registries():
    yield
    envs.scenarios.SCENARIOS.pop("recipes", None)
    for env_id in ("my/Recipes-v1", "my/RecipesDiscrete-v1"):
        gymnasium.registry.pop(env_id, None)
    agents.METHODS.pop("greeter", None)
    metrics.METRICS.pop("question_rate", None)
    for name in ("greeter", "architecture_example"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", ["add an environment", "add a reward", "add a method", "add a metric"])
def test_example_runs(name, clean_registries):
    module = types.ModuleType("architecture_example")
    sys.modules["architecture_example"] = module  # the reward example names its function by dotted path
    exec(compile(EXAMPLES[name], "docs/architecture.md", "exec"), module.__dict__)


def test_the_example_method_shows_up_in_help(clean_registries):
    from typer.testing import CliRunner

    from experiments.cli import app

    exec(compile(EXAMPLES["add a method"], "docs/architecture.md", "exec"), {"__name__": "architecture_example"})
    assert agents.get_method("greeter").name == "greeter"
    help_text = " ".join(CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"}).output.split())
    assert ("greeter (conversation envs): SFT on the users' own texts, every reply opened with a greeting. "
            "method_settings: greeting='Hello!' (what every reply starts with)") in help_text


def test_the_example_method_trains_end_to_end_through_the_cli(attune_cli, tmp_path):
    """As the doc says: my_methods.py in the folder you run from, named as my_methods:greeter."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "my_methods.py").write_text(EXAMPLES["add a method"])
    runs = tmp_path / "runs"
    done = subprocess.run(
        [attune_cli, "run", str(TINY), "method=my_methods:greeter", "trainer={}", "method_settings.greeting=Hi there",
         "evaluation.prompts=2", "tracking.wandb=disabled", f"tracking.runs_dir={runs}"],
        capture_output=True, text=True, timeout=300, cwd=workdir,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["method"] == "my_methods:greeter" and report["after"]["n"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The example's SFTTrainer ran its 2 default steps with the runner's callbacks: its losses are in the run.
    assert [r["step"] for r in records if r["phase"] == "train" and "loss" in r] == [1, 2]
    assert (run_dir / "checkpoints" / "final" / "model.safetensors").is_file()


def test_the_doc_lists_every_registered_method():
    from experiments.cli import method_table

    listed = re.search(r"<!-- methods:[^\n]*\n(.*?)\n<!-- end of methods -->", DOC, flags=re.S)
    assert listed is not None, "docs/architecture.md lost its generated methods table"
    assert listed.group(1) == method_table(), "regenerate the table in docs/architecture.md from method_table():\n" + method_table()


def test_the_metric_diff_is_the_example_and_fits_evaluate_py():
    diff = DOC.split("```diff\n", 1)[1].split("```", 1)[0].splitlines()
    assert diff[:2] == ["--- a/experiments/evaluate.py", "+++ b/experiments/evaluate.py"] and diff[2].startswith("@@")
    context = "\n".join(line[1:] for line in diff[3:] if line.startswith(" "))
    added = [line[1:] for line in diff[3:] if line.startswith("+")]
    assert context in (REPO / "experiments" / "evaluate.py").read_text()  # the diff applies where it says
    declaration, body = added[0], added[2].strip()
    assert declaration.startswith("@metrics.policy_metric(") and declaration in EXAMPLES["add a metric"]
    assert body in EXAMPLES["add a metric"]  # the example declares what the diff adds


def test_the_example_metric_reaches_every_output(clean_registries, tmp_path, monkeypatch):
    """One declaration, and the metric is in eval.json, the console table, report.md, W&B and the sweep's metrics."""
    import io

    from rich.console import Console

    from experiments.config_files import load_config
    from experiments.runner import run
    from experiments.sweep import allowed_metrics, final_metrics
    from experiments.tracking import RunTracker

    summaries = []
    finish = RunTracker.finish

    def keep_summary(self, exit_code=0):
        if self.wandb_run is not None:
            summaries.append({key: self.wandb_run.summary[key] for key in self.wandb_run.summary.keys()})
        finish(self, exit_code)

    monkeypatch.setattr(RunTracker, "finish", keep_summary)
    exec(compile(EXAMPLES["add a metric"], "docs/architecture.md", "exec"), {"__name__": "architecture_example"})
    config = load_config(REPO / "experiments" / "configs" / "tiny.yaml",
                         ["trainer.max_steps=1", "evaluation.prompts=4", "tracking.wandb=offline",
                          f"tracking.runs_dir={tmp_path}"])
    console = Console(file=io.StringIO(), width=300)
    result = run(config, console)

    episodes = json.loads((result.run_dir / "episodes.json").read_text())
    report = json.loads((result.run_dir / "eval.json").read_text())
    for side in ("before", "after"):
        asked = sum("?" in e["replies"][0] for e in episodes[side])
        assert report[side]["question_rate"] == asked / 4 and report[side]["question_rate_n"] == 4
    expected = format_interval(report["after"]["question_rate"], report["after"]["question_rate_ci_low"],
                               report["after"]["question_rate_ci_high"])
    caption_part = "replies that ask a question: 95% Wilson score CI"
    printed = " ".join(console.file.getvalue().split())
    assert re.search(r"replies that ask a question .*" + re.escape(expected), printed) and caption_part in printed
    markdown = (result.run_dir / "report.md").read_text()
    assert re.search(r"\| replies that ask a question \| [^|]+ \| " + re.escape(expected) + r" \|", markdown)
    assert caption_part in markdown
    (summary,) = summaries
    assert summary["after/question_rate"] == report["after"]["question_rate"]
    assert summary["before/question_rate_interval"] == "95% Wilson score CI"
    assert "question_rate" in allowed_metrics(config)
    assert final_metrics(result.run_dir, report)["question_rate"] == report["after"]["question_rate"]


BENCHMARK_EXAMPLE = re.search(r"```yaml\n# example: add a benchmark\n(.*?)```", DOC, flags=re.S)


def test_the_example_benchmark_loads_and_every_arm_is_a_valid_config(tmp_path):
    from experiments.benchmark_spec import arm_config_data, load_benchmark, scale_arms
    from experiments.config import ExperimentConfig

    assert BENCHMARK_EXAMPLE is not None, "docs/architecture.md lost its benchmark example"
    path = tmp_path / "my_first.yaml"
    path.write_text(BENCHMARK_EXAMPLE.group(1))
    bench = load_benchmark(str(path))
    assert [a.name for a in scale_arms(bench, "smoke")] == ["grpo", "prompting"]
    for scale in ("smoke", "paper"):
        for arm in bench.arms:
            config = ExperimentConfig.model_validate(arm_config_data(bench, arm, scale))
            assert config.method == arm.name
            assert config.policy.model == ("tiny-random" if scale == "smoke" else "smollm2-135m-instruct")
    assert [c.id for c in bench.claims] == ["rl_beats_prompting"]


@pytest.mark.slow
def test_the_example_benchmark_runs_through_the_cli(benchmark_smoke, tmp_path):
    path = tmp_path / "my_first.yaml"
    path.write_text(BENCHMARK_EXAMPLE.group(1))
    _, data = benchmark_smoke(str(path), cwd=tmp_path, bench_name="my_first")
    assert sorted(t["arm"] for t in data["trials"]) == ["grpo", "prompting"]
    (claim,) = data["claims"]
    assert claim["id"] == "rl_beats_prompting" and claim["status"] in ("held", "not held")
