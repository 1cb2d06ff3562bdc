"""Typed ``method_settings``: every method (baselines too) validates its own settings at the door."""

import subprocess
from pathlib import Path

import pytest

import agents
from agents import MethodSettings, TrainerSettingsError, method_options
from experiments.config import ConfigError
from experiments.config_files import load_config
from experiments.runner import prepare

DISCRETE = "env.id=attune/TutorDiscrete-v1"
TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tiny.yaml"


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("dpo", {"rounds": "two"}, "method_settings.rounds: Input should be a valid integer"),
        ("dpo", {"rounds": 0}, "method_settings.rounds: Input should be greater than or equal to 1 (got 0)"),
        ("dpo", {"samples_per_prompt": 3}, "method_settings.samples_per_prompt: use an even number"),
        ("dpo", {"temperature": float("nan")}, "method_settings.temperature:"),
        ("dpo", {"sample": 2}, "method_settings.sample: not a setting of this method; allowed: rounds, samples_per_prompt"),
        ("sft", {"per": "team"}, "method_settings.per: Input should be 'all', 'group' or 'user' (got 'team')"),
        ("sft", {"per": "user"}, "method_settings.per: user needs data: writing_samples"),
        ("sft", {"candidates": 1}, "method_settings.candidates: Input should be greater than or equal to 2"),
        ("prompting", {"retrieval_k": -1}, "method_settings.retrieval_k: Input should be greater than or equal to 0"),
        ("prompting", {"profile": 3}, "method_settings.profile: Input should be 'stated', 'traits' or 'none'"),
        ("grpo", {"rounds": 2}, "method_settings.rounds: not a setting of this method; it has none"),
    ],
)
def test_a_bad_method_setting_is_one_line_naming_the_field(method, settings, message):
    with pytest.raises(TrainerSettingsError) as caught:
        method_options(agents.get_method(method), settings)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_defaults_fill_in_and_settings_are_typed():
    options = method_options(agents.get_method("dpo"), {"rounds": "3"})
    assert (options.rounds, options.samples_per_prompt, options.temperature) == (3, 2, 0.9)
    assert isinstance(options.rounds, int)
    # Validated settings pass through unchanged; every method without settings takes none.
    assert method_options(agents.get_method("dpo"), options) is options
    assert type(method_options(agents.get_method("grpo"), {})) is MethodSettings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=dpo", "method_settings.rounds=two"], "method_settings.rounds: Input should be a valid integer"),
        (["method=linucb", DISCRETE, "method_settings.alpha=-1"], "method_settings.alpha: Input should be greater than or equal to 0"),
        (["method=linucb", DISCRETE, "method_settings.episode=5"], "method_settings.episode: not a setting of method 'linucb'; allowed: episodes"),
        (["method=rllib_ppo", DISCRETE, "method_settings.hidden=[0]"], "method_settings.hidden.0: Input should be greater than 0"),
        (["method=rllib_dqn", DISCRETE, "method_settings.iterations=1.5"], "method_settings.iterations: Input should be a valid integer"),
        (["method=linucb", DISCRETE, "trainer.max_steps=3"], "trainer: method linucb would ignore it"),
        (["method=linucb", DISCRETE, "resume=true"], "resume: method linucb would ignore it"),
        (["method=linucb", DISCRETE, "checkpoint_every=2"], "checkpoint_every: method linucb would ignore it"),
        (["method=rllib_ppo", DISCRETE, "rewards=[{name: length_target}]"], "rewards: method rllib_ppo would ignore it"),
        (["method=linucb", DISCRETE, "policy.lora={r: 4}"], "policy.lora: method linucb would ignore it"),
    ],
)
def test_prepare_refuses_bad_settings_for_every_kind_of_method(overrides, message):
    with pytest.raises(ConfigError) as caught:
        prepare(load_config(None, ["policy.model=tiny-random", *overrides]))
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_baseline_with_good_settings_passes_prepare():
    checked = prepare(load_config(None, ["method=linucb", DISCRETE, "method_settings.episodes=50"]))
    assert checked["method_settings"].episodes == 50
    assert checked["method_settings"].alpha == 1.0


def test_cli_reports_a_mistyped_method_setting_as_a_config_error(attune_cli, tmp_path):
    done = subprocess.run(
        [attune_cli, "run", str(TINY), "method=dpo", "trainer={}", "method_settings.rounds=two",
         f"tracking.runs_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "config error: method_settings.rounds: Input should be a valid integer" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not any(tmp_path.iterdir()), "nothing is written for a config error"
