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

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text()
TINY = REPO / "experiments" / "configs" / "tiny.yaml"
EXAMPLES = dict(re.findall(r"```python\n# example: ([^\n]+)\n(.*?)```", DOC, flags=re.S))


def test_the_doc_has_the_examples_it_promises():
    assert set(EXAMPLES) == {"add an environment", "add a reward", "add a method"}


@pytest.fixture
def clean_registries():
    yield
    envs.scenarios.SCENARIOS.pop("recipes", None)
    for env_id in ("my/Recipes-v1", "my/RecipesDiscrete-v1"):
        gymnasium.registry.pop(env_id, None)
    agents.METHODS.pop("greeter", None)
    for name in ("greeter", "architecture_example"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", ["add an environment", "add a reward", "add a method"])
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
