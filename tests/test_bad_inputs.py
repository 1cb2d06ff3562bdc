"""The bad-input corpus: every input a user can get wrong ends in one clear error, never a traceback, a hang or
silent acceptance.

Config and CLI cases run the ``attune`` command in-process (typer's CliRunner) against the tiny config: the error
must come before any model is loaded or anything is written, exit non-zero, fit on one line, and name the field
and what is allowed. Environment and reward cases call the code directly, as a user's script would.
A few cases need a subprocess (the console script's own traceback handling) or the tiny model (a reward that
only fails when called in training).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

import envs  # noqa: F401  (registers the attune/* ids)
from experiments.cli import app
from experiments.config import ConfigError
from experiments.config_files import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of stalling the suite


def invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(app, args, env=env)


def assert_one_clear_line(result, expected: list[str], exit_code: int | None = 2) -> str:
    """Non-zero exit, no traceback, one non-empty line that contains every expected fragment."""
    output = result.output
    assert result.exit_code != 0, output
    if exit_code is not None:
        assert result.exit_code == exit_code, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# --- config values: (overrides, fragments the one-line error must contain) -------------------------------------------

CONFIG_CASES = [
    # a string where a number belongs (once a traceback from inside TRL)
    (["trainer.learning_rate=abc"], ["trainer.learning_rate: a finite number > 0", "got 'abc'"]),
    (["env.noise=abc"], ["env.noise: Input should be a valid number", "'abc'"]),
    (["prompts=many"], ["prompts: Input should be a valid integer"]),
    (["seed=zero"], ["seed: Input should be a valid integer"]),
    (["evaluation.temperature=hot"], ["evaluation.temperature: Input should be a valid number"]),
    # out of range, once tracebacks deep in a run
    (["evaluation.batch_size=0"], ["evaluation.batch_size: Input should be greater than or equal to 1"]),
    (["evaluation.max_new_tokens=0"], ["evaluation.max_new_tokens: Input should be greater than or equal to 1"]),
    (["trainer.learning_rate=-0.1"], ["trainer.learning_rate: a finite number > 0", "-0.1"]),
    (["trainer.learning_rate=0"], ["trainer.learning_rate: a finite number > 0"]),
    (["trainer.learning_rate=.nan"], ["trainer.learning_rate: a finite number > 0"]),
    (["trainer.learning_rate=.inf"], ["trainer.learning_rate: a finite number > 0"]),
    # once silently accepted
    (["trainer.max_steps=0"], ["trainer.max_steps: an integer >= 1", "got 0"]),
    (["trainer.max_steps=-1"], ["trainer.max_steps: an integer >= 1", "got -1"]),
    (["trainer.max_steps=2.5"], ["trainer.max_steps: an integer >= 1"]),
    (["trainer.max_steps=ten"], ["trainer.max_steps: an integer >= 1"]),
    (["trainer.max_steps=true"], ["trainer.max_steps: an integer >= 1"]),
    (["env.noise=.inf"], ["env.noise: Input should be a finite number"]),
    (["env.noise=.nan"], ["env.noise: Input should be a finite number"]),
    (["env.satisfaction_utility=.nan"], ["env.satisfaction_utility: Input should be a finite number"]),
    (["env.satisfaction_utility=-.inf"], ["env.satisfaction_utility: Input should be a finite number"]),
    (["env.leave_utility=.nan"], ["env.leave_utility: Input should be a finite number"]),
    (["env.max_turns=2.5"], ["env.max_turns: Input should be a valid integer"]),
    (["prompts=true"], ["prompts: Input should be a number, not true/false"]),
    # the other trainer keys everyone uses
    (["trainer.per_device_train_batch_size=0"], ["trainer.per_device_train_batch_size: an integer >= 1"]),
    (["trainer.gradient_accumulation_steps=0"], ["trainer.gradient_accumulation_steps: an integer >= 1"]),
    (["trainer.num_generations=1"], ["trainer.num_generations: an integer >= 2"]),
    (["trainer.max_completion_length=0"], ["trainer.max_completion_length: an integer >= 1"]),
    (["trainer.temperature=0"], ["trainer.temperature: a finite number > 0"]),
    (["trainer.top_p=1.5"], ["trainer.top_p: a finite number > 0 and <= 1"]),
    (["trainer.beta=-1"], ["trainer.beta: a finite number >= 0"]),
    (["trainer.warmup_ratio=2"], ["trainer.warmup_ratio: a finite number >= 0 and <= 1"]),
    (["trainer.num_train_epochs=0"], ["trainer.num_train_epochs: a finite number > 0"]),
    (["trainer.weight_decay=.nan"], ["trainer.weight_decay: a finite number >= 0"]),
    (["trainer.seed=-1"], ["trainer.seed: an integer >= 0"]),
    (["trainer.bf16=maybe"], ["trainer.bf16: true or false"]),
    (["trainer.max_stepz=3"], ["trainer.max_stepz: not a field of trl.GRPOConfig"]),
    (["trainer.lr_scheduler_type=sideways"], ["trainer:", "sideways"]),
    # each section's fields: wrong type, out of range, nan, inf
    (["seed=-1"], ["seed: Input should be greater than or equal to 0"]),
    (["seed=99999999999"], ["seed: Input should be less than or equal to 2147483647"]),
    (["seed=1.5"], ["seed: Input should be a valid integer"]),
    (["threads=0"], ["threads: Input should be greater than or equal to 1"]),
    (["threads=true"], ["threads: Input should be a number, not true/false"]),
    (["experiment=a/b"], ["experiment: the experiment name is part of run folder names", "letters, digits"]),
    (["experiment="], ["experiment: String should have at least 1 character"]),
    (["experiment=[1, 2]"], ["experiment: Input should be a valid string"]),
    (["env.id=attune/Nope-v1"], ["env.id: unknown environment 'attune/Nope-v1'; registered: attune/WritingAssistant-v1"]),
    (["env.id=attune/TutorDiscrete-v1"], ["env.id: 'attune/TutorDiscrete-v1' is a discrete-action variant"]),
    (["env.max_turns=0"], ["env.max_turns: Input should be greater than or equal to 1"]),
    (["env.max_turns=21"], ["env.max_turns: Input should be less than or equal to 20"]),
    (["env.max_turns=two"], ["env.max_turns: Input should be a valid integer"]),
    (["env.feedback=stars"], ["env.feedback: Input should be 'rating', 'utility', 'pairwise', 'critique' or 'implicit'"]),
    (["env.feedback=3"], ["env.feedback: Input should be 'rating'"]),
    (["env.reward_mode=sometimes"], ["env.reward_mode: Input should be 'per_turn' or 'episode_end'"]),
    (["env.noise=-0.1"], ["env.noise: Input should be greater than or equal to 0"]),
    (["env.patience=0"], ["env.patience: Input should be greater than or equal to 1"]),
    (["env.patience=1.5"], ["env.patience: Input should be a valid integer"]),
    (["env.drift=-1"], ["env.drift: Input should be greater than or equal to 0"]),
    (["env.drift=.inf"], ["env.drift: Input should be a finite number"]),
    (["env.inconsistent=1.5"], ["env.inconsistent: Input should be less than or equal to 1"]),
    (["env.inconsistent=.nan"], ["env.inconsistent: Input should be a finite number"]),
    (["env.adversarial=-0.1"], ["env.adversarial: Input should be greater than or equal to 0"]),
    (["env.colour=blue"], ["env.colour: unknown key; check the spelling"]),
    (["users.n_users=1"], ["users.n_users: Input should be greater than or equal to 2"]),
    (["users.n_users=10000000"], ["users.n_users: Input should be less than or equal to 100000"]),
    (["users.n_users=2.5"], ["users.n_users: Input should be a valid integer"]),
    (["users.held_out_fraction=0"], ["users.held_out_fraction: Input should be greater than 0"]),
    (["users.held_out_fraction=1"], ["users.held_out_fraction: Input should be less than 1"]),
    (["users.held_out_fraction=.nan"], ["users.held_out_fraction: Input should be a finite number"]),
    (["users.seed=-3"], ["users.seed: Input should be greater than or equal to 0"]),
    (["users.groups=[]"], ["users.groups: List should have at least 1 item"]),
    (["users.groups=[{name: g, share: 0, preference_center: {}}]"], ["users.groups.0.share: Input should be greater than 0"]),
    (["users.groups=[{name: g, share: .nan, preference_center: {}}]"], ["users.groups.0.share: Input should be a finite number"]),
    (["users.groups=[{name: g, share: 1, spread: -1, preference_center: {}}]"],
     ["users.groups.0.spread: Input should be greater than or equal to 0"]),
    (["users.groups=[{name: g, share: 1, preference_center: {brevity: 2}}]"],
     ["users.groups.0.preference_center: the weight of 'brevity' must be in [-1, 1]"]),
    (["users.groups=[{name: g, share: 1, preference_center: {brevity: .inf}}]"],
     ["users.groups.0.preference_center.brevity: Input should be a finite number"]),
    (["users.groups=[{name: g, share: 1, preference_center: {}}, {name: g, share: 1, preference_center: {}}]"],
     ["users.groups: group names must be unique"]),
    (["users.groups=[{share: 1, preference_center: {}}]"], ["users.groups.0.name: Field required"]),
    (["users.groups=[{name: g, share: 1, preference_center: {jargon: 1}}]"],
     ["users.groups: group 'g': dimension(s) ['jargon'] are not used in scenario 'writing'"]),
    (["policy.model="], ["policy.model: String should have at least 1 character"]),
    (["policy.model=/no/such/folder"], ["policy.model='/no/such/folder' is not available offline"]),
    (["policy.modle=x"], ["policy.modle: unknown key"]),
    (["policy.lora.r=0"], ["policy.lora.r: Input should be greater than or equal to 1"]),
    (["policy.lora.lora_dropout=1.0"], ["policy.lora.lora_dropout: Input should be less than 1"]),
    (["policy.lora.lora_alpha=big"], ["policy.lora.lora_alpha: Input should be a valid integer"]),
    (["method=ppo2"], ["method: Input should be 'grpo'"]),
    (["method_settings.rounds=2"], ["method_settings.rounds: not a setting of method 'grpo'; it has none"]),
    (["method=rloo", "env.max_turns=2"], ["env.max_turns: method rloo trains on single replies"]),
    (["method=ppo", "trainer={}", "resume=true"], ["resume: method 'ppo' cannot resume; resumable:"]),
    (["resume=maybe"], ["resume: Input should be a valid boolean"]),
    (["checkpoint_every=-1"], ["checkpoint_every: Input should be greater than or equal to 0"]),
    (["prompts=0"], ["prompts: Input should be greater than or equal to 1"]),
    (["prompts=-5"], ["prompts: Input should be greater than or equal to 1"]),
    # more prompts than the users and tasks can give: once minutes of resets before failing
    (["prompts=1000000000"], ["prompts: 1000000000 asked for", "distinct opening prompts", "users.n_users"]),
    (["evaluation.prompts=100000"], ["evaluation.prompts: 100000 asked for", "held-out users"]),
    (["evaluation.prompts=0"], ["evaluation.prompts: Input should be greater than or equal to 1"]),
    (["evaluation.temperature=-1"], ["evaluation.temperature: Input should be greater than or equal to 0"]),
    (["evaluation.temperature=.nan"], ["evaluation.temperature: Input should be a finite number"]),
    (["evaluation.top_p=0"], ["evaluation.top_p: Input should be greater than 0"]),
    (["evaluation.top_p=1.5"], ["evaluation.top_p: Input should be less than or equal to 1"]),
    (["evaluation.seed=-1"], ["evaluation.seed: Input should be greater than or equal to 0"]),
    (["evaluation.noise_seeds=-1"], ["evaluation.noise_seeds: Input should be greater than or equal to 0"]),
    (["evaluation.enabled=perhaps"], ["evaluation.enabled: Input should be a valid boolean"]),
    (["rewards=[]"], ["rewards: List should have at least 1 item"]),
    (["rewards.0.weight=.nan"], ["rewards.0.weight: Input should be a finite number"]),
    (["rewards.0.name="], ["rewards.0.name: String should have at least 1 character"]),
    (["rewards.0.name=nope"], ["rewards.0.name: unknown reward 'nope'; built-in rewards:"]),
    (["rewards.0.name=no_such_module_xyz:f"], ["rewards.0.name: reward 'no_such_module_xyz:f': cannot import module"]),
    (["rewards.0.name=os.path:no_such_function"], ["rewards.0.name: reward 'os.path:no_such_function': module 'os.path' has no callable"]),
    (["rewards.0.name=:f"], ["rewards.0.name: reward ':f': give your own reward as 'package.module:function'"]),
    (["rewards.0.params.target=3"], ["rewards.0: reward 'user_feedback': unknown parameter(s) ['target']"]),
    (["rewards.0.params.feedback=nope"], ["rewards.0: reward 'user_feedback': user_feedback: feedback must be one of"]),
    (["rewards.1.params.target_words=abc"], ["rewards.1: reward 'length_target': params.target_words must be an integer"]),
    (["rewards.1.params.target_words=0"], ["rewards.1: reward 'length_target': length_target: target_words must be > 0"]),
    (["rewards.1.params.target_words=.inf"], ["rewards.1: reward 'length_target': params.target_words must be an integer"]),
    (["rewards.0.noise=1"], ["rewards.0.noise: unknown key"]),
    (["tracking.name=a/b"], ["tracking.name: a run name becomes a folder name", "letters, digits"]),
    (["tracking.name=.."], ["tracking.name: a run name becomes a folder name"]),
    (["tracking.wandb=maybe"], ["tracking.wandb: Input should be 'offline', 'online' or 'disabled'"]),
    (["tracking.project=a/b"], ["tracking.project: a W&B project name cannot contain /"]),
    (["tracking.project="], ["tracking.project: String should have at least 1 character"]),
    (["tracking.runs_dir="], ["tracking.runs_dir: String should have at least 1 character"]),
    (["variants=[{method: dpo}]"], ["variants.0.name: each variant needs a name"]),
    (["variants=[{name: a}, {name: a}]"], ["variants: names must be unique"]),
    (["variants=[{name: a, env: {noise: .nan}}]"], ["variants.0 (a): env.noise: Input should be a finite number"]),
    (["sweep.mode=up"], ["sweep.mode: Input should be 'max' or 'min'"]),
    (["sweep.num_samples=0"], ["sweep.num_samples: Input should be greater than or equal to 1"]),
    (["sweep.trial_cpus=0"], ["sweep.trial_cpus: Input should be greater than 0"]),
    (["sweep.seeds=[-1]"], ["sweep.seeds.0: Input should be greater than or equal to 0"]),
    (["sweep.seeds=[]"], ["sweep.seeds: List should have at least 1 item"]),
    (["colour=blue"], ["colour: unknown key; check the spelling"]),
    # override syntax
    (["trainer.max_steps"], ["override 'trainer.max_steps': expected key=value"]),
    (["=5"], ["override '=5': expected key=value"]),
    (["env..id=x"], ["override 'env..id=x': the key must be a dotted path"]),
    (["a b=1"], ["override 'a b=1': the key must be a dotted path"]),
    (["env.id.x=1"], ["override env.id.x: env.id is a value, not a section"]),
    (["rewards.5.weight=1"], ["override rewards.5.weight: rewards.5 is not a valid list index (0..1)"]),
    (["rewards.x.weight=1"], ["override rewards.x.weight: rewards.x is not a valid list index"]),
    (["env={noise: 1, noise: 2}"], ["override env: line 1: key 'noise' is given twice"]),
    (["rewards=[{name: user_feedback"], ["rewards: Input should be a valid list"]),
]


@pytest.mark.parametrize("overrides, expected", CONFIG_CASES, ids=[" ".join(o)[:60] for o, _ in CONFIG_CASES])
def test_bad_config_values_are_one_clear_line(overrides, expected, tmp_path):
    runs = tmp_path / "runs"
    result = invoke(["run", TINY, f"tracking.runs_dir={runs}", *overrides])
    assert_one_clear_line(result, expected)
    assert not runs.exists() or not any(runs.iterdir())  # nothing written, nothing loaded


# --- config files ---------------------------------------------------------------------------------------------------

FILE_CASES = [
    ("empty.yaml", b"", ["the config is empty", "experiments/configs/quickstart.yaml"]),
    ("comments.yaml", b"# only a comment\n", ["the config is empty"]),
    ("braces.yaml", b"{}\n", ["the config is empty"]),
    ("duplicate.yaml", b"experiment: a\nseed: 1\nexperiment: b\n",
     ["line 3: key 'experiment' is given twice (first on line 1)"]),
    ("nested_duplicate.yaml", b"env:\n  noise: 0.1\n  noise: 0.2\n", ["line 3: key 'noise' is given twice"]),
    ("latin1.yaml", "experiment: caf\u00e9\n".encode("latin-1"), ["not UTF-8 text (byte 0xe9", "save the file as UTF-8"]),
    ("utf16.yaml", "experiment: x\n".encode("utf-16"), ["not UTF-8 text"]),
    ("binary.yaml", b"\x00\x01\x02experiment", ["a binary file, not a YAML config"]),
    ("list.yaml", b"- a\n- b\n", ["the top level must be a mapping of keys"]),
    ("scalar.yaml", b"just text\n", ["the top level must be a mapping of keys"]),
    ("broken.yaml", b"env: [unclosed\n", ["not valid YAML (line 2, column 1:"]),
    ("tabs.yaml", b"env:\n\tnoise: 1\n", ["not valid YAML (line 2"]),
    ("unknown.yaml", b"experiment: x\nenvv: {}\n", ["envv: unknown key"]),
    ("bad_value.yaml", b"env:\n  max_turns: 2.5\n", ["env.max_turns: Input should be a valid integer"]),
    ("section_scalar.yaml", b"env: 3\n", ["env: Input should be a valid dictionary or instance of EnvSettings"]),
]


@pytest.fixture
def bad_file(tmp_path, request):
    name, content, _ = request.param
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("bad_file, expected", [(c, c[2]) for c in FILE_CASES], indirect=["bad_file"],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_config_files_are_one_clear_line(bad_file, expected, tmp_path):
    result = invoke(["run", str(bad_file), f"tracking.runs_dir={tmp_path / 'runs'}"])
    assert_one_clear_line(result, expected)
    assert not (tmp_path / "runs").exists()


def test_a_folder_given_as_config_says_it_is_a_folder(tmp_path):
    (tmp_path / "mine.yaml").write_text("experiment: x\n")
    result = invoke(["run", str(tmp_path)])
    assert_one_clear_line(result, ["is a folder; give a YAML file (it holds mine.yaml)"])


def test_a_missing_config_file_says_not_found(tmp_path):
    result = invoke(["run", str(tmp_path / "nope.yaml")])
    assert_one_clear_line(result, ["nope.yaml' not found; the bundled configs are in experiments/configs/"])


# --- where runs go, and W&B -----------------------------------------------------------------------------------------

def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'afile'}"])
    assert_one_clear_line(result, ["tracking.runs_dir:", "is a file, not a folder"])


def test_runs_dir_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'afile' / 'runs'}"])
    assert_one_clear_line(result, ["tracking.runs_dir:", "cannot be created", "is a file"])


def test_runs_dir_that_is_a_file_in_a_variant_config(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'afile'}", "variants=[{name: a}, {name: b}]"])
    assert_one_clear_line(result, ["tracking.runs_dir:", "is a file, not a folder"])


def test_unwritable_runs_dir(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # Root writes through permission bits; nobody can create a folder in the kernel's /sys.
    parent = locked if not os.access(locked, os.W_OK) else Path("/sys")
    try:
        result = invoke(["run", TINY, f"tracking.runs_dir={parent / 'attune-runs'}"])
        assert_one_clear_line(result, ["tracking.runs_dir:", "is not writable"])
        assert not (parent / "attune-runs").exists()
    finally:
        locked.chmod(0o700)


def test_wandb_online_without_a_key_says_wandb_login(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    environment = {"HOME": str(home), "WANDB_API_KEY": None, "NETRC": None, "WANDB_CONFIG_DIR": str(home / "wandb"),
                   "WANDB_IDENTITY_TOKEN_FILE": None}
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", "tracking.wandb=online"], env=environment)
    assert_one_clear_line(result, ["tracking.wandb=online: no W&B API key found", "wandb login", "tracking.wandb=offline"])
    # with a key in ~/.netrc the same check passes (the run then fails later on the missing model, not on W&B)
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    (home / ".netrc").chmod(0o600)
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", "tracking.wandb=online",
                     "policy.model=/no/such/model"], env=environment)
    assert_one_clear_line(result, ["model not available"])


# --- CLI misuse -----------------------------------------------------------------------------------------------------

CLI_MISUSE = [
    (["run"], ["Missing argument 'config'"]),
    (["nope"], ["No such command", "nope"]),
    (["run", "--nope", TINY], ["No such option", "--nope"]),
    (["sweep", TINY, "--address"], ["Option '--address' requires an argument"]),
    (["--nope", "run", TINY], ["No such option", "--nope"]),
]


@pytest.mark.parametrize("args, expected", CLI_MISUSE, ids=[" ".join(a.rsplit("/", 1)[-1] for a in c[0]) for c in CLI_MISUSE])
def test_cli_misuse_is_a_usage_error(args, expected):
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in expected:
        assert fragment in result.output


@pytest.mark.parametrize(
    "command, expected",
    [
        ("sweep", "sweep: this config has no sweep block"),
        ("compare-rewards", "compare-rewards: add variants, one per reward to compare"),
    ],
)
def test_commands_given_the_wrong_kind_of_config(command, expected, tmp_path):
    result = invoke([command, TINY, f"tracking.runs_dir={tmp_path / 'runs'}"])
    assert_one_clear_line(result, [expected])


def test_a_run_of_a_sweep_config_points_to_attune_sweep(tmp_path):
    result = invoke(["run", str(REPO / "experiments" / "configs" / "sweep.yaml"), f"tracking.runs_dir={tmp_path}"])
    assert_one_clear_line(result, ["this config has a sweep block: run it with `attune sweep`"])


# --- unexpected errors: one line, or the full traceback with --debug -------------------------------------------------

def _explode(*_args, **_kwargs):
    raise RuntimeError("something broke\non two lines")


@pytest.mark.parametrize("debug_args", [[], ["--debug"]], ids=["plain", "debug"])
def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, tmp_path, debug_args):
    import experiments.runner

    monkeypatch.setattr(experiments.runner, "run", _explode)
    args = [*debug_args[:1], "run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}"]
    result = invoke(args)
    if debug_args:
        assert isinstance(result.exception, RuntimeError)  # re-raised: Python prints the whole traceback
    else:
        line = assert_one_clear_line(result, ["error: RuntimeError: something broke on two lines",
                                              "rerun with --debug for the traceback"], exit_code=1)
        assert line.startswith("error:")


def test_per_command_debug_flag_reraises_config_errors(tmp_path):
    result = invoke(["run", "--debug", TINY, "env.noise=.nan", f"tracking.runs_dir={tmp_path}"])
    assert isinstance(result.exception, ConfigError)


def test_debug_flag_through_the_console_script_prints_the_traceback(attune_cli, tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    plain = subprocess.run([attune_cli, "run", str(tmp_path / "empty.yaml")], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr + plain.stdout
    assert "the config is empty" in plain.stderr
    debug = subprocess.run([attune_cli, "--debug", "run", str(tmp_path / "empty.yaml")], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_not_utf8_through_the_console_script(attune_cli, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("experiment: caf\u00e9\n".encode("latin-1"))
    result = subprocess.run([attune_cli, "run", str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"config error: {path}: not UTF-8 text (byte 0xe9 at offset 15); save the file as UTF-8"]


# --- environment arguments ------------------------------------------------------------------------------------------

ENV_KWARG_CASES = [
    ({"max_turns": 2.5}, "max_turns must be an integer >= 1"),
    ({"max_turns": 0}, "max_turns must be an integer >= 1"),
    ({"max_turns": True}, "max_turns must be an integer >= 1"),
    ({"max_turns": "3"}, "max_turns must be an integer >= 1"),
    ({"noise": math.nan}, "noise must be a finite number >= 0.0"),
    ({"noise": math.inf}, "noise must be a finite number >= 0.0"),
    ({"noise": -1.0}, "noise must be a finite number >= 0.0"),
    ({"noise": "loud"}, "noise must be a finite number >= 0.0"),
    ({"satisfaction_utility": math.nan}, "satisfaction_utility must be a finite number"),
    ({"satisfaction_utility": None}, "satisfaction_utility must be a finite number"),
    ({"leave_utility": -math.inf}, "leave_utility must be a finite number or None"),
    ({"drift": -0.5}, "drift must be a finite number >= 0.0"),
    ({"drift": math.nan}, "drift must be a finite number >= 0.0"),
    ({"patience": 0}, "patience must be an integer >= 1 or None"),
    ({"patience": 1.5}, "patience must be an integer >= 1 or None"),
    ({"inconsistent": 1.5}, "inconsistent must be a finite number in [0.0, 1.0]"),
    ({"inconsistent": math.nan}, "inconsistent must be a finite number in [0.0, 1.0]"),
    ({"adversarial": -0.1}, "adversarial must be a finite number in [0.0, 1.0]"),
    ({"feedback": "stars"}, "feedback must be one of"),
    ({"reward_mode": "sometimes"}, "reward_mode must be one of"),
    ({"split": "test"}, "split must be 'train', 'held_out' or 'all'"),
    ({"n_users": 1}, "n_users must be an integer >= 2"),
    ({"n_users": 2.5}, "n_users must be an integer >= 2"),
    ({"population_seed": -1}, "population_seed must be an integer >= 0"),
    ({"render_mode": "human"}, "render_mode must be None or 'ansi'"),
    ({"population": "writing"}, "population must be an envs.population.UserPopulation"),
]


@pytest.mark.parametrize("kwargs, expected", ENV_KWARG_CASES, ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_bad_env_arguments_are_value_errors_naming_the_argument(kwargs, expected):
    with pytest.raises(ValueError) as info:
        gym.make("attune/WritingAssistant-v1", **kwargs)
    assert expected in str(info.value)


def test_a_population_of_another_scenario_is_refused():
    from envs.population import UserPopulation

    with pytest.raises(ValueError, match="users come from scenario 'tutor'.*population given is 'writing'"):
        gym.make("attune/Tutor-v1", population=UserPopulation("writing", n_users=10))


DISCRETE_KWARG_CASES = [
    ({"noise": math.nan}, "noise must be a finite number >= 0.0"),
    ({"noise": -1}, "noise must be a finite number >= 0.0"),
    ({"feedback": "pairwise"}, "feedback must be 'rating' or 'utility'"),
    ({"scenario": "space"}, "got 'space'"),
    ({"n_users": 0}, "n_users must be an integer >= 2"),
    ({"split": "test"}, "split must be 'train', 'held_out' or 'all'"),
    ({"config": {"noise": 0.1, "colour": "blue"}}, "unknown config key(s) ['colour']"),
    ({"config": ["noise", 0.1]}, "config must be a dict of keyword arguments"),
]


@pytest.mark.parametrize("kwargs, expected", DISCRETE_KWARG_CASES, ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_bad_discrete_env_arguments(kwargs, expected):
    from envs.discrete import DiscreteStyleEnv

    with pytest.raises(ValueError) as info:
        DiscreteStyleEnv(**kwargs)
    assert expected in str(info.value)


RESET_CASES = [
    ({"task_id": "nope"}, "unknown task_id 'nope' in scenario 'writing'; its tasks: 64 in all, e.g. "),
    ({"task_id": 3}, "unknown task_id 3"),
    ({"user_id": "nope"}, "user_id 'nope' is not in the 'train' split of this environment; its users: "),
    ({"user_id": ["u0000"]}, "user_id ['u0000'] is not in the 'train' split"),
    ({"user": "u0000"}, "unknown reset option(s) ['user']; allowed: user_id, task_id"),
]


@pytest.mark.parametrize("env_id", ["attune/WritingAssistant-v1", "attune/WritingAssistantDiscrete-v1"])
@pytest.mark.parametrize("options, expected", RESET_CASES, ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_reset_with_unknown_ids_lists_the_valid_ones(env_id, options, expected):
    env = gym.make(env_id, n_users=10).unwrapped
    with pytest.raises(ValueError) as info:
        env.reset(seed=0, options=options)
    assert expected in str(info.value)


def test_reset_with_a_held_out_user_in_the_train_split_names_the_split():
    env = gym.make("attune/WritingAssistant-v1", n_users=10).unwrapped
    held_out = env.population.held_out_users[0].user_id
    with pytest.raises(ValueError, match=f"user_id '{held_out}' is not in the 'train' split.*its users: 8 in all, e.g. u0"):
        env.reset(seed=0, options={"user_id": held_out})
    env.reset(seed=0, options={"user_id": env.population.train_users[0].user_id, "task_id": env.population.tasks[0].task_id})


# --- hostile actions: text that must not crash the env, and non-text that is refused clearly ---------------------------

HOSTILE_TEXT = [
    "",
    " " * 10,
    "\x00" * 100,
    "\ud800\udfff unpaired surrogates",
    "\U0001f642" * 1000,
    "\u202eright-to-left override",
    "a\u0301" * 500,
    "\r\n\t" * 100,
    "Z\u0334\u0321\u031b\u0353a\u0337l\u0337g\u0335o" * 100,
    "\x1b[31mterminal escape\x1b[0m",
    "\ufeffbyte order mark",
    "x" * 16_384,
    "word " * 200_000,  # a million characters, far over the action space's length
    "- bullet\n" * 5000,
]


@pytest.mark.parametrize("action", HOSTILE_TEXT, ids=lambda a: f"{len(a)}chars:{a[:12]!r}")
@pytest.mark.parametrize("env_id", ["attune/WritingAssistant-v1", "attune/Tutor-v1"])
def test_hostile_text_actions_do_not_crash(env_id, action):
    env = gym.make(env_id, max_turns=2, n_users=10).unwrapped
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(observation)
    assert math.isfinite(reward) and math.isfinite(info["utility"])
    assert info["messages"][1]["content"] == action  # the exact reply is kept in info


@pytest.mark.parametrize("action", [None, 5, 1.5, b"bytes", ["a list"], {"text": "dict"}, np.array(["x"])],
                         ids=lambda a: type(a).__name__)
def test_non_text_actions_are_type_errors_saying_str(action):
    env = gym.make("attune/WritingAssistant-v1", n_users=10).unwrapped
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"the action is the reply text \(str\), got"):
        env.step(action)


def test_step_before_reset_says_reset_first():
    env = gym.make("attune/WritingAssistant-v1", n_users=10).unwrapped
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("hello")


@pytest.mark.parametrize("action", ["3", 8, -1, 1.5, None, np.array([1, 2])], ids=repr)
def test_bad_discrete_actions_name_the_valid_range(action):
    env = gym.make("attune/WritingAssistantDiscrete-v1", n_users=10).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 8\)"):
        env.step(action)


# --- users' own rewards ---------------------------------------------------------------------------------------------

OWN_REWARDS = '''
def text(prompts, completions, **kwargs):
    return ["great"] * len(completions)

def raises(prompts, completions, **kwargs):
    raise KeyError("user_idd")

def short(prompts, completions, **kwargs):
    return [1.0]

def nothing(prompts, completions, **kwargs):
    return None

def mapping(prompts, completions, **kwargs):
    return {"reward": 1.0}

def not_finite(prompts, completions, **kwargs):
    return [float("nan")] * len(completions)

def infinite(prompts, completions, **kwargs):
    return [float("inf")] * len(completions)

def booleans(prompts, completions, **kwargs):
    return [True] * len(completions)

def good(prompts, completions, **kwargs):
    import numpy
    return numpy.array([0.5] * (len(completions) - 1) + [0])

def with_none(prompts, completions, **kwargs):
    return [None] * len(completions)

def no_kwargs(prompts, completions):
    return [0.0] * len(completions)

def wrong_names(texts, replies, **kwargs):
    return [0.0] * len(replies)
'''


@pytest.fixture
def own_rewards(tmp_path, monkeypatch):
    (tmp_path / "corpus_own_rewards.py").write_text(OWN_REWARDS)
    (tmp_path / "corpus_broken_reward.py").write_text("def reward(prompts, completions, **kwargs:\n    return []\n")
    (tmp_path / "corpus_failing_import.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "corpus_own_rewards"
    import sys

    for name in ("corpus_own_rewards", "corpus_broken_reward", "corpus_failing_import"):
        sys.modules.pop(name, None)


OWN_REWARD_CASES = [
    ("text", "reward 'corpus_own_rewards:text' returned 'great' (str) at position 0"),
    ("raises", "reward 'corpus_own_rewards:raises' raised KeyError: 'user_idd'"),
    ("short", "reward 'corpus_own_rewards:short' returned 1 values for 3 completions"),
    ("nothing", "reward 'corpus_own_rewards:nothing' returned NoneType None"),
    ("mapping", "reward 'corpus_own_rewards:mapping' returned dict"),
    ("not_finite", "returned nan (float) at position 0"),
    ("infinite", "returned inf (float) at position 0"),
    ("booleans", "returned True (bool) at position 0"),
]


@pytest.mark.parametrize("function, expected", OWN_REWARD_CASES, ids=[c[0] for c in OWN_REWARD_CASES])
def test_own_reward_breaking_the_contract_is_named(own_rewards, function, expected):
    from rewards import RewardContractError, build_reward

    reward = build_reward(f"{own_rewards}:{function}")
    with pytest.raises(RewardContractError) as info:
        reward(["p"] * 3, ["a", "b", "c"], user_id=["u0000"] * 3)
    message = str(info.value)
    assert expected in message
    assert "returns a list with one float (or None) per completion" in message
    assert "\n" not in message


@pytest.mark.parametrize("function, expected", [("good", [0.5, 0.5, 0.0]), ("with_none", [None, None, None])])
def test_own_reward_keeping_the_contract_passes_through(own_rewards, function, expected):
    from rewards import build_reward

    assert build_reward(f"{own_rewards}:{function}")(["p"] * 3, ["a", "b", "c"], user_id=["u0000"] * 3) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("corpus_own_rewards:no_kwargs", "needs the parameters prompts, completions and **kwargs"),
        ("corpus_own_rewards:wrong_names", "its signature is (texts, replies, **kwargs)"),
        ("corpus_broken_reward:reward", "module 'corpus_broken_reward' has a syntax error"),
        ("corpus_failing_import:reward", "importing module 'corpus_failing_import' raised RuntimeError: needs a GPU"),
    ],
)
def test_own_reward_that_cannot_be_used_is_a_config_error(own_rewards, name, expected, tmp_path):
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", f"rewards.0.name={name}"])
    assert_one_clear_line(result, [f"rewards.0.name: reward '{name}'", expected])


def test_own_reward_that_raises_in_training_is_one_line(own_rewards, tmp_path):
    """The one case that needs the tiny model: the reward only fails when training calls it."""
    result = invoke(["run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", "evaluation.enabled=false",
                     "tracking.wandb=disabled", f"rewards.0.name={own_rewards}:raises"])
    output_lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert output_lines[-1].startswith("reward error: reward 'corpus_own_rewards:raises' raised KeyError: 'user_idd'")


# --- load_config directly (what the CLI calls) ----------------------------------------------------------------------

def test_load_config_needs_no_file_but_refuses_an_empty_one(tmp_path):
    assert load_config(None, ["experiment=x"]).experiment == "x"
    (tmp_path / "empty.yaml").write_text("\n\n")
    with pytest.raises(ConfigError, match="the config is empty"):
        load_config(tmp_path / "empty.yaml")


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    """A merge key (<<) is not a duplicate: overriding a merged value is what it is for."""
    (tmp_path / "merge.yaml").write_text("experiment: x\nvariants:\n  - &v {name: a, seed: 1}\n  - {<<: *v, name: b}\n")
    assert [(name, c.seed) for name, c in load_config(tmp_path / "merge.yaml").variant_configs()] == [("a", 1), ("b", 1)]


# --- inputs that look odd but are right: accepted, not refused ------------------------------------------------------

@pytest.mark.parametrize("written, value", [("2e-5", 2e-5), ("1E-4", 1e-4), ("3.0e-5", 3e-5), ("-1e+2", -100.0)])
def test_exponent_notation_is_a_number_in_overrides_and_files(written, value, tmp_path):
    """PyYAML reads 2e-5 as text; a learning rate written that way once failed deep inside the optimizer."""
    assert load_config(TINY, [f"trainer.learning_rate={written.lstrip('-')}"]).trainer["learning_rate"] == abs(value)
    (tmp_path / "lr.yaml").write_text(f"experiment: x\nenv: {{satisfaction_utility: {written}}}\n")
    assert load_config(tmp_path / "lr.yaml").env.satisfaction_utility == value
