"""Opt-in (`make test-slow`): the embedded SmolLM2 learns the users' preferences on a small budget."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smollm2_grpo_improves_held_out_users_utility(attune_cli, tmp_path):
    result = subprocess.run(
        [attune_cli, "run", "experiments/configs/quickstart.yaml", f"tracking.runs_dir={tmp_path}",
         "trainer.max_steps=10", "evaluation.prompts=24"],
        capture_output=True, text=True, timeout=1200, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    report = json.loads((run_dir / "eval.json").read_text())
    comparison = report["comparison"]
    # Learning, not noise: the paired improvement's 95 % interval lies above zero.
    assert comparison["improvement"] - comparison["improvement_ci95"] > 0, comparison
    assert comparison["win_rate"] > 0.5, comparison
