"""Tiny-model runs through the installed `attune` command: every run file exists, parses and makes sense."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import yaml
from safetensors.torch import load_file

from agents.policy import resolve_model
from experiments.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")


def run_cli(attune_cli, runs_dir, *overrides, timeout=300):
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={runs_dir}", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(Path(runs_dir).iterdir())
    return run_dir, result


def changed_parameters(before: dict, after: dict) -> int:
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


def check_run_files(run_dir: Path, expected_steps: int) -> dict:
    config = ExperimentConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert config.experiment == "tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["phase"] == "train" and "loss" in r]
    assert train_steps == list(range(1, expected_steps + 1))
    train = [r for r in records if r["phase"] == "train" and "loss" in r]
    assert all("rewards/user_feedback/mean" in r and "rewards/user_feedback/brevity" in r for r in train)
    assert [r["phase"] for r in records].count("eval") == 2
    report = json.loads((run_dir / "eval.json").read_text())
    episodes = json.loads((run_dir / "episodes.json").read_text())
    assert len(episodes["before"]) == len(episodes["after"]) == config.evaluation.prompts
    assert [e["user_id"] for e in episodes["before"]] == [e["user_id"] for e in episodes["after"]]
    for side in ("before", "after"):
        scores = [e["score"] for e in episodes[side]]
        assert report[side]["n"] == config.evaluation.prompts
        # The reported numbers are the episodes' own: mean, scipy's t interval, and terms that add up.
        assert report[side]["mean_utility"] == pytest.approx(float(np.mean(scores)))
        low, high = scipy.stats.t.interval(0.95, len(scores) - 1, loc=np.mean(scores), scale=scipy.stats.sem(scores))
        assert (report[side]["ci_low"], report[side]["ci_high"]) == pytest.approx((low, high))
        assert sum(report[side]["terms"].values()) == pytest.approx(report[side]["mean_utility"])
    spent = report["evaluation_seconds"]  # where the wall time went: evaluation, training, the rest
    assert spent["trained"] > 0 and spent["base"] >= 0 and spent["learning_curve"] == 0.0  # no curve_every here
    assert spent["base"] + spent["trained"] + report["train_seconds"] < report["total_seconds"]
    changes = report["comparison"]["term_changes"]
    assert sum(c["change"] for c in changes.values()) == pytest.approx(report["comparison"]["improvement"])
    text = (run_dir / "report.md").read_text()
    assert "win rate vs base" in text and "What moved: the users' utility terms" in text
    for plot in ("training_reward.png", "eval_by_group.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    offline_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline_runs) == 1 and offline_runs[0].stat().st_size > 0
    return report


def test_single_turn_grpo_trains_and_writes_every_run_file(attune_cli, tmp_path):
    run_dir, result = run_cli(attune_cli, tmp_path / "runs", "trainer.max_steps=2")
    assert run_dir.name.startswith("tiny__WritingAssistant-v1__s0__")
    check_run_files(run_dir, expected_steps=2)
    initial = load_file(resolve_model("tiny-random") / "model.safetensors")
    trained = load_file(run_dir / "checkpoints" / "final" / "model.safetensors")
    assert changed_parameters(initial, trained) > 0
    assert "win rate vs base" in result.stdout and str(run_dir) in result.stdout.replace("\n", "")


def test_multi_turn_grpo_trains_through_the_rollout(attune_cli, tmp_path):
    run_dir, _ = run_cli(attune_cli, tmp_path / "runs", "env.max_turns=2", "trainer.max_steps=2")
    check_run_files(run_dir, expected_steps=2)
    episodes = json.loads((run_dir / "episodes.json").read_text())
    assert any(len(e["replies"]) == 2 for e in episodes["after"])  # the users answered and the policy replied again
    initial = load_file(resolve_model("tiny-random") / "model.safetensors")
    trained = load_file(run_dir / "checkpoints" / "final" / "model.safetensors")
    assert changed_parameters(initial, trained) > 0


def test_lora_run_saves_a_changed_adapter(attune_cli, tmp_path):
    run_dir, _ = run_cli(attune_cli, tmp_path / "runs", "policy.lora.r=4", "trainer.learning_rate=0.01", "evaluation.prompts=2")
    final = run_dir / "checkpoints" / "final"
    assert (final / "adapter_config.json").is_file()
    adapter = load_file(final / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: non-zero means it trained


def test_runs_never_overwrite_each_other(attune_cli, tmp_path):
    runs = tmp_path / "runs"
    run_cli(attune_cli, runs, "tracking.name=same", "evaluation.enabled=false", "trainer.max_steps=1")
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={runs}", "tracking.name=same", "evaluation.enabled=false",
         "trainer.max_steps=1"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in runs.iterdir()) == ["same", "same-2"]


@pytest.mark.parametrize(
    "env_id, overrides",
    [
        ("attune/CustomerSupport-v1", ["env.feedback=utility", "env.adversarial=0.2", "rewards=[{name: user_feedback, params: {feedback: env}}]"]),
        ("attune/Tutor-v1", ["env.max_turns=2", "env.feedback=critique", "env.patience=2"]),
        ("attune/HealthCoach-v1", ["env.max_turns=2", "env.feedback=implicit", "env.reward_mode=episode_end"]),
    ],
)
def test_every_scenario_trains_through_the_cli(attune_cli, tmp_path, env_id, overrides):
    run_dir, _ = run_cli(attune_cli, tmp_path / "runs", f"env.id={env_id}", "trainer.max_steps=1",
                         "evaluation.prompts=2", *overrides)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["phase"] == "train" and "loss" in r]
    assert len(train) == 1
    scenario_dimension = {"attune/CustomerSupport-v1": "jargon", "attune/Tutor-v1": "simplicity",
                          "attune/HealthCoach-v1": "empathy"}[env_id]
    assert f"rewards/user_feedback/{scenario_dimension}" in train[0]
    episodes = json.loads((run_dir / "episodes.json").read_text())
    assert {e["task_id"].split("-")[0] for e in episodes["after"]} == {
        {"attune/CustomerSupport-v1": "support", "attune/Tutor-v1": "tutor", "attune/HealthCoach-v1": "health"}[env_id]
    }
    initial = load_file(resolve_model("tiny-random") / "model.safetensors")
    trained = load_file(run_dir / "checkpoints" / "final" / "model.safetensors")
    assert changed_parameters(initial, trained) > 0
