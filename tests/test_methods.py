"""Every training method, two steps with the tiny model, through the real CLI, on the same users."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents import METHODS
from agents.policy import resolve_model

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
SMALL_TRAINER = {
    "grpo": "{max_steps: 2, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}",
    "rloo": "{max_steps: 2, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}",
    "ppo": "{}",
    "dpo": "{max_steps: 2, per_device_train_batch_size: 2}",
    "online_dpo": "{max_steps: 2, per_device_train_batch_size: 2, max_new_tokens: 8}",
    "sft": "{max_steps: 2}",
    "prompting": "{}",
}
METHOD_SETTINGS = {"dpo": "{rounds: 1, max_new_tokens: 8}", "prompting": "{profile: stated, retrieval_k: 1}"}


@pytest.fixture(scope="module")
def methods_run(attune_cli, tmp_path_factory):
    variants = ", ".join(
        f"{{name: {m}, method: {m}, trainer: {SMALL_TRAINER[m]}"
        + (f", method_settings: {METHOD_SETTINGS[m]}" if m in METHOD_SETTINGS else "") + "}"
        for m in METHODS
    )
    runs = tmp_path_factory.mktemp("runs")
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={runs}", "evaluation.prompts=2", f"variants=[{variants}]"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (parent,) = list(runs.iterdir())
    return parent


def test_methods_table_is_written(methods_run):
    table = json.loads((methods_run / "comparison.json").read_text())
    assert [row["variant"] for row in table] == list(METHODS)
    assert all("mean" in row and "win_rate" in row and row["train_seconds"] >= 0 for row in table)
    assert len({row["base_mean"] for row in table}) == 1  # one base evaluation, shared by every method
    assert "| grpo | grpo |" in (methods_run / "comparison.md").read_text()
    assert (methods_run / "plots" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("sft", "prompting")])
def test_weight_training_methods_changed_the_weights(methods_run, method):
    initial = load_file(resolve_model("tiny-random") / "model.safetensors")
    trained = load_file(methods_run / "variants" / method / "checkpoints" / "final" / "model.safetensors")
    assert sum(not torch.equal(initial[k], trained[k]) for k in initial) > 0
    records = [json.loads(line) for line in (methods_run / "variants" / method / "metrics.jsonl").read_text().splitlines()]
    # every method logs a loss ("loss", or PPO's "loss/policy_avg"), at strictly increasing steps
    steps = [r["step"] for r in records if r["phase"] == "train" and any(k.startswith("loss") for k in r)]
    assert steps and steps == sorted(set(steps))


def test_sft_trained_one_adapter_per_group_and_evaluates_by_user(methods_run):
    final = methods_run / "variants" / "sft" / "checkpoints" / "final"
    mapping = json.loads((final / "adapters.json").read_text())
    assert mapping["per"] == "group"
    for group in set(mapping["user_to_adapter"].values()):
        adapter = load_file(final / group / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), group  # B starts at zero


def test_prompting_put_the_profile_and_retrieved_history_in_the_prompt(methods_run):
    episodes = json.loads((methods_run / "variants" / "prompting" / "episodes.json").read_text())
    assert all(e["system_prompt"] is None for e in episodes["before"])
    for episode in episodes["after"]:
        assert "This user prefers" in episode["system_prompt"]
        assert "Texts this user wrote before:\n- " in episode["system_prompt"]
    assert not (methods_run / "variants" / "prompting" / "checkpoints" / "final" / "model.safetensors").exists()


def test_dpo_logged_the_users_choices(methods_run):
    records = [json.loads(line) for line in (methods_run / "variants" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["phase"] == "method"]
    assert rounds and rounds[0]["dpo/pairs"] > 0 and 0.0 <= rounds[0]["dpo/choice_agrees_with_utility"] <= 1.0


@pytest.mark.parametrize("method", ["rloo", "ppo", "dpo", "online_dpo"])
def test_methods_train_lora_adapters(attune_cli, tmp_path, method):
    overrides = [f"method={method}", f"trainer={SMALL_TRAINER[method]}", "policy.lora.r=4", "evaluation.enabled=false"]
    if method in METHOD_SETTINGS:
        overrides.append(f"method_settings={METHOD_SETTINGS[method]}")
    result = subprocess.run([attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path}", *overrides],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    adapter = load_file(run_dir / "checkpoints" / "final" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # LoRA B starts at zero
