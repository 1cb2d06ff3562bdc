"""docs/architecture.md's worked examples run as written."""

import re
import sys
import types
from pathlib import Path

import gymnasium
import pytest

import agents
import envs.scenarios

DOC = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
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


def test_the_example_method_shows_up_in_help_and_runs(clean_registries, tmp_path):
    from typer.testing import CliRunner

    from experiments.cli import app
    from experiments.config_files import load_config
    from experiments.runner import run

    exec(compile(EXAMPLES["add a method"], "docs/architecture.md", "exec"), {"__name__": "architecture_example"})
    help_text = " ".join(CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "greeter: greeting='Hello!'" in help_text
    config = load_config(None, ["method=greeter", "trainer={}", "policy.model=tiny-random", "users.n_users=20",
                                "evaluation.prompts=2", "evaluation.max_new_tokens=4", "tracking.wandb=disabled",
                                f"tracking.runs_dir={tmp_path}", "method_settings={greeting: Hi there}"])
    result = run(config)
    assert result.eval["method"] == "greeter" and result.eval["after"]["n"] == 2
    episodes = (result.run_dir / "episodes.json").read_text()
    assert "Start with: Hi there" in episodes  # the method's system prompt reached every evaluated conversation
