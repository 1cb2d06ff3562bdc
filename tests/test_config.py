from pathlib import Path

import sys

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.config import ConfigError, ExperimentConfig
from experiments.config_files import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_bundled_config_parses_and_says_how_to_run_it(path):
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    first_line = path.read_text().splitlines()[0]
    command = "sweep" if config.sweep else "compare-rewards" if path.name == "rewards.yaml" else "run"
    assert first_line == f"# attune {command} experiments/configs/{path.name}"


def test_bundled_configs_exist():
    assert {"quickstart.yaml", "tiny.yaml", "methods.yaml", "rewards.yaml", "sweep.yaml", "baselines.yaml"} <= {
        p.name for p in CONFIGS}


def test_overrides_reach_nested_fields_and_lists(tmp_path):
    config = load_config(
        CONFIGS[0].parent / "tiny.yaml",
        ["trainer.max_steps=7", "env.max_turns=3", "rewards.1.weight=0.5", "policy.lora.r=4", "evaluation.enabled=false"],
    )
    assert config.trainer["max_steps"] == 7
    assert config.env.max_turns == 3
    assert config.rewards[1].weight == 0.5
    assert config.policy.lora is not None and config.policy.lora.r == 4
    assert config.evaluation.enabled is False


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["env.feedback=stars"], "env.feedback: Input should be 'rating', 'utility', 'pairwise', 'critique' or 'implicit' (got 'stars')"),
        (["env.id=attune/TutorDiscrete-v1"], "env.id: 'attune/TutorDiscrete-v1' is a discrete-action variant"),
        (["env.max_turns=0"], "env.max_turns: Input should be greater than or equal to 1 (got 0)"),
        (["env.id=attune/Nope-v1"], "env.id: unknown environment 'attune/Nope-v1'; registered: attune/WritingAssistant-v1, attune/CustomerSupport-v1"),
        (["method=ppo2"], "method: Input should be 'grpo'"),
        (["policy.modle=x"], "policy.modle: unknown key"),
        (["rewards.0.name=nope"], "rewards.0.name: unknown reward 'nope'"),
        (["rewards.5.weight=1"], "not a valid list index"),
        (["trainer.max_steps"], "expected key=value"),
        (["env.id.x=1"], "env.id is a value, not a section"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS[0].parent / "tiny.yaml", overrides)
    assert expected in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["env.feedback=stars"], "config error: env.feedback: Input should be 'rating', 'utility'"),
        (["trainer.max_stepz=3"], "config error: trainer.max_stepz: not a field of trl.GRPOConfig"),
        (["rewards.0.params.target=3"], "config error: rewards.0: reward 'user_feedback': unknown parameter(s) ['target']"),
        (["policy.model=/no/such/folder"], "model not available: policy.model='/no/such/folder' is not available offline"),
        (["method=rloo", "env.max_turns=2"], "config error: env.max_turns: method rloo trains on single replies"),
        (["method=ppo", "trainer={}", "resume=true"], "config error: resume: method 'ppo' cannot resume; resumable: grpo, rloo, online_dpo"),
        (["method_settings.rounds=2"], "config error: method_settings.rounds: not a setting of method 'grpo'; it has none"),
        (["method=dpo", "trainer={}", "method_settings.samples_per_prompt=3"],
         "config error: method_settings.samples_per_prompt: use an even number"),
    ],
)
def test_cli_prints_one_line_error_and_exits_2(overrides, expected, tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(CONFIGS[0].parent / "tiny.yaml"), f"tracking.runs_dir={runs}", *overrides])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())  # nothing written for a config error


def _dotted_fields(model, prefix=""):
    from experiments.config_files import _section_of

    for name, field in model.model_fields.items():
        nested = _section_of(field.annotation)
        if nested is not None and name != "sweep":
            yield from _dotted_fields(nested, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_run_help_is_generated_from_the_config_model_and_the_registries():
    import agents
    from experiments.config import ExperimentConfig
    from rewards import REWARDS

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # rich wraps and pads; compare on single spaces
    for name, field in _dotted_fields(ExperimentConfig):
        assert f"{name} (" in text, name
        if field.description:
            assert " ".join(field.description.split()) in text, name
    for method in agents.method_names():
        assert f" {method}" in text, method
    assert "rounds=2 (sample-choose-train rounds" in text  # a method's own settings, from its Settings model
    assert "episodes=1000 (training episodes" in text  # a baseline's too
    for reward in REWARDS:
        assert reward in text
    assert "env.feedback (rating|utility|pairwise|critique|implicit, default 'rating')" in text


def test_a_method_registered_from_outside_shows_up_in_help_and_validates(monkeypatch):
    import types

    import agents

    class Settings(agents.MethodSettings):
        greeting: str = "hello"

    toy = types.ModuleType("toy_method")
    monkeypatch.setitem(sys.modules, "toy_method", toy)
    monkeypatch.setattr(agents.registry, "METHODS", dict(agents.METHODS))  # registrations here end with the test
    toy.METHOD = agents.register_method(agents.MethodSpec(name="toy", description="a toy", train=lambda job: job.model,
                                                          settings=Settings))
    assert load_config(None, ["method=toy"]).method == "toy"
    assert load_config(None, ["method=toy_method:METHOD"]).method == "toy_method:METHOD"  # by dotted path too
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    assert "toy (conversation envs): a toy. method_settings: greeting='hello'" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("no_such_module:greeter", "method: cannot import 'no_such_module': ModuleNotFoundError"),
        ("json:greeter", "method: no method 'greeter' in module 'json' (a Method"),
        ("json:dumps", "method: no method 'dumps' in module 'json'"),
    ],
)
def test_a_method_by_dotted_path_that_is_not_one_is_a_config_error(method, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"method={method}"])
    assert str(caught.value).startswith(message), str(caught.value)


def test_register_method_refuses_what_is_not_a_method():
    import agents

    with pytest.raises(TypeError, match="is not a Method; it lacks"):
        agents.register_method(object())
    with pytest.raises(ValueError, match="use letters, digits and _ only"):
        agents.register_method(agents.MethodSpec(name="my:toy", description="", train=print))


def test_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS[0].parent / "tiny.yaml", ["seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert load_config(path) == config


def test_custom_groups_reach_the_population_and_bad_dimensions_are_named(tmp_path):
    from experiments.runner import prepare

    groups = "[{name: majority, share: 0.8, preference_center: {brevity: 1.0}}, {name: minority, share: 0.2, preference_center: {warmth: 1.0}, spread: 0.0}]"
    config = load_config(CONFIGS[0].parent / "tiny.yaml", [f"users.groups={groups}", "users.n_users=10"])
    population = prepare(config)["population"]
    assert {u.group for u in population.users} == {"majority", "minority"}
    assert [u.preference_weights["warmth"] for u in population.users if u.group == "minority"] == [1.0, 1.0]
    bad = load_config(CONFIGS[0].parent / "tiny.yaml", ["users.groups=[{name: g, share: 1, preference_center: {jargon: 1}}]"])
    with pytest.raises(ConfigError, match="users.groups: group 'g': dimension.*jargon.*not used in scenario 'writing'"):
        prepare(bad)
