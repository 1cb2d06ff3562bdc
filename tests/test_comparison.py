"""Variants over several training seeds (IQM, bootstrap, P(beats base)), and learning curves against seconds."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from experiments.comparison import comparison_table, write_comparison
from experiments.config import ConfigError, ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")


def _row(seed: int, after: list[float], base: list[list[float]], spread: float) -> dict:
    improvement = sum(a - b for a, b in zip(after, base[0])) / len(after)
    return {
        "variant": "grpo", "method": "grpo", "seed": seed, "train_seconds": 10.0 + seed, "total_seconds": 20.0,
        "before": {"mean_utility": sum(base[0]) / 4, "ci95": 1.0, "n": 4, "interval": "95% Student-t CI"},
        "after": {"mean_utility": sum(after) / 4, "ci95": 1.0, "n": 4},
        "comparison": {"improvement": improvement, "win_rate": 0.5 + 0.1 * seed},
        "base_seed_to_seed": {"std": spread},
        "after_scores": after, "base_scores": base,
    }


def _two_seeds(spread: float) -> list[dict]:
    base = [[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]  # the base policy under two sampling seeds
    return [_row(0, [1.0, 2.0, 3.0, 4.0], base, spread), _row(1, [2.0, 3.0, 4.0, 5.0], base, spread)]


def test_a_variant_over_seeds_by_hand():
    (entry,) = comparison_table(_two_seeds(spread=0.5))
    assert entry["seeds"] == 2 and entry["seed_list"] == [0, 1] and entry["n"] == 4
    # Improvements 1 and 2: mean 1.5, t(0.975, 1) = 12.706 times sd / sqrt(2) = 0.5.
    assert entry["improvement"] == pytest.approx(1.5)
    assert entry["improvement_ci95"] == pytest.approx(12.7062 * 0.5, rel=1e-4)
    assert entry["improvement_interval"] == "95% Student-t CI over training seeds"
    # Per-conversation improvements over the first base run: four 1s and four 2s; IQM keeps 1, 1, 2, 2.
    assert entry["iqm_improvement"] == pytest.approx(1.5)
    # P(trained run > base run) per conversation: 3.5/4 on the first (one tie), 1 on the others.
    assert entry["probability_of_improvement"] == pytest.approx((0.875 + 3) / 4)
    assert entry["win_rate"] == pytest.approx(0.55) and entry["train_seconds"] == pytest.approx(10.5)
    assert entry["learns"] is True  # 1.5 > 2 x 0.5
    assert comparison_table(_two_seeds(spread=1.0))[0]["learns"] is False  # 1.5 < 2 x 1.0


def test_the_seeds_table_names_seeds_n_and_every_interval(tmp_path):
    (tmp_path / "plots").mkdir()
    write_comparison(tmp_path, _two_seeds(spread=0.5))
    markdown = (tmp_path / "comparison.md").read_text()
    assert "n = 4 held-out conversations, 2 training seeds per variant (seeds 0, 1)" in markdown
    assert "95% stratified bootstrap CI (IQM)" in markdown and "95% Student-t CI over training seeds" in markdown
    assert "| grpo | grpo | 2 | 4 | +3.000 | +1.500 ± 6.353 | 1.500 [" in markdown
    assert "| yes | 10 |" in markdown  # learns; mean training seconds
    assert json.loads((tmp_path / "comparison.json").read_text())[0]["improvement_per_seed"] == [1.0, 2.0]
    assert (tmp_path / "plots" / "comparison.png").stat().st_size > 0


@pytest.mark.parametrize(("data", "message"), [
    ({"seeds": [0, 0]}, "each training seed once"),
    ({"seeds": [0, 1], "sweep": {"seeds": [0]}}, "sweep.seeds"),
    ({"seeds": [0, 1], "resume": True}, "cannot resume"),
])
def test_bad_seed_settings_are_config_errors(data, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.model_validate(data)


def test_a_variant_cannot_set_its_own_seeds():
    config = ExperimentConfig.model_validate({"seeds": [0, 1], "variants": [{"name": "a", "seeds": [3]}]})
    with pytest.raises(ConfigError, match="variants.0: a variant cannot set variants, seeds or resume"):
        config.variant_configs()


def test_learning_curve_scoring_leaves_training_as_it_was():
    """Scoring samples on its own RNG stream and restores train mode: training is the same with a curve."""
    from agents.policy import load_policy, sample_continuations
    from experiments.tracking import learning_curve_callback

    model, tokenizer, _ = load_policy("tiny-random")
    model.train()
    logged = []
    tracker = SimpleNamespace(log=lambda metrics, step, phase: logged.append((step, phase, metrics)))

    def score(policy):
        sample_continuations(policy, tokenizer, [[1, 2, 3]], max_new_tokens=4, temperature=1.0, seed=7)
        return 0.25

    curve = learning_curve_callback(2, score, tracker)
    state = SimpleNamespace(global_step=0, max_steps=10)
    rng = torch.get_rng_state()
    for step in range(1, 6):
        state.global_step = step
        curve.on_step_end(None, state, None, model=SimpleNamespace(policy=model))  # PPO's wrapper
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert [p["step"] for p in curve.points] == [2, 4] and [p["mean_utility"] for p in curve.points] == [0.25, 0.25]
    assert [(step, phase) for step, phase, _ in logged] == [(2, "curve"), (4, "curve")]
    assert curve.points[0]["seconds"] <= curve.points[1]["seconds"] and curve.paused > 0
    state.global_step = state.max_steps = 6  # the trainer's last step is the final evaluation's
    curve.on_step_end(None, state, None, model=model)
    assert len(curve.points) == 2


def test_seeds_and_a_curve_through_the_cli(attune_cli, tmp_path):
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path}", "seeds=[0, 1]", "evaluation.noise_seeds=1",
         "evaluation.curve_every=1", "evaluation.curve_prompts=4", "trainer.max_steps=3"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (parent,) = tmp_path.iterdir()
    assert sorted(p.name for p in (parent / "variants").iterdir()) == ["grpo-seed0", "grpo-seed1"]
    (entry,) = json.loads((parent / "comparison.json").read_text())
    assert entry["seeds"] == 2 and entry["seed_list"] == [0, 1] and math.isfinite(entry["iqm_improvement"])
    assert entry["base_runs"] == 2  # the base policy's noise seed is a second base run
    for seed in (0, 1):
        run_dir = parent / "variants" / f"grpo-seed{seed}"
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == seed
        curve = json.loads((run_dir / "eval.json").read_text())["curve"]
        assert curve["prompts"] == 4 and [p["step"] for p in curve["points"]] == [0, 1, 2, 3]
        seconds = [p["seconds"] for p in curve["points"]]
        assert seconds == sorted(seconds) and seconds[0] == 0.0
        phases = [json.loads(line)["phase"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert phases.count("curve") == 2
    assert "2 training seeds per variant" in (parent / "comparison.md").read_text()


def test_the_cache_keys_code_by_what_it_does_not_by_its_documentation(tmp_path):
    """Editing a docstring or a comment of the code the base evaluation depends on keeps its cache key; changing
    a statement, or a string that is not a docstring, makes a new one."""
    from experiments.eval_cache import _code_digest

    def digest(source: str) -> str:
        path = tmp_path / "module.py"
        path.write_text(source)
        return _code_digest([path])

    original = digest('"""Module."""\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n\nclass C:\n    """A class."""\n')
    assert digest('"""The module, reworded."""\n\ndef f(x):\n    """x, two times."""\n\n    return 2 * x\n\n'
                  'class C:\n    """Another."""\n') == original
    assert digest('"""Module."""\n\ndef f(x):\n    """Twice x."""\n    return 3 * x\n\nclass C:\n    """A class."""\n') != original
    assert digest('"""Module."""\n\ndef f(x):\n    """Twice x."""\n    return "2" * x\n\nclass C:\n    """A class."""\n') != original
    assert digest('"""Module."""\n\ndef f(x):\n    return 2 * x\n\nclass C:\n    pass\n') == original  # no docstring = empty
    assert digest("def broken(:\n") != digest("def broken(:\n  # other\n")  # unparsable: by its bytes


def test_the_base_evaluation_is_paid_once_and_keyed_by_what_it_depends_on(attune_cli, tmp_path):
    cache = tmp_path / "cache"
    env = {**__import__("os").environ, "ATTUNE_CACHE_DIR": str(cache)}

    def run(*overrides):
        result = subprocess.run([attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", "trainer.max_steps=1",
                                 *overrides], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        newest = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return result.stdout, json.loads((newest / "eval_before.json").read_text())

    first_out, first = run()
    assert "reused from" not in first_out
    (entry,) = (cache / "evaluations").glob("*.json")
    second_out, second = run("trainer.learning_rate=1e-3")  # training settings do not change the base policy
    assert "base policy's evaluation: reused from" in second_out and entry.stem in second_out
    assert second == first
    changed_out, changed = run("evaluation.prompts=3", "evaluation.cache=false")
    assert "reused from" not in changed_out and len(changed["episodes"]) == 3
    assert list((cache / "evaluations").glob("*.json")) == [entry]  # cache off: nothing stored either
