"""Opt-in (`make test-slow`): the embedded SmolLM2 learns the users' preferences on a small budget."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smollm2_grpo_improves_held_out_users_utility(attune_cli, tmp_path):
    """The quickstart learns by the project's standard: its gain on held-out users exceeds twice the
    evaluation's own seed-to-seed spread (the base policy re-scored with other sampling seeds)."""
    result = subprocess.run(
        [attune_cli, "run", "experiments/configs/quickstart.yaml", f"tracking.runs_dir={tmp_path}",
         "evaluation.prompts=24", "evaluation.noise_seeds=2"],
        capture_output=True, text=True, timeout=1500, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    report = json.loads((run_dir / "eval.json").read_text())
    comparison, spread = report["comparison"], report["base_seed_to_seed"]["std"]
    assert comparison["improvement"] > 2 * spread, (comparison, spread)
    assert comparison["win_rate"] > 0.5, comparison
    # What it learned is reported term by term, and the terms add up to the improvement.
    changes = comparison["term_changes"]
    assert abs(sum(c["change"] for c in changes.values()) - comparison["improvement"]) < 1e-9
