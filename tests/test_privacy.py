"""privacy.dp: user-level DP-SGD (agents.privacy) - the accounting, the clipping, the door, and a tiny run."""

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from opacus import GradSampleModule
from safetensors.torch import load_file
from typer.testing import CliRunner

from agents.privacy import PrivacySettingsError, default_delta, epsilon_spent, plan, private_gradient
from experiments.cli import app

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
SFT = ["method=sft", "trainer={max_steps: 2, per_device_train_batch_size: 4}"]


def dp(epsilon=None, noise_multiplier=None, max_grad_norm=1.0, delta=None):
    return SimpleNamespace(epsilon=epsilon, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta)


def test_accounting_matches_the_textbook_figure():
    # 1000 users, 32 a step, 3 epochs (93 steps), sigma 1, delta 1e-5: epsilon 2.63 by RDP (Opacus' own figure).
    assert epsilon_spent(1.0, 32 / 1000, 93, 1e-5) == pytest.approx(2.633, abs=0.005)
    fixed = plan(dp(noise_multiplier=1.0, delta=1e-5), users=1000, users_per_step=32, steps=93)
    assert (fixed.sample_rate, fixed.epsilon) == (0.032, pytest.approx(2.633, abs=0.005))
    # Asked for that epsilon, the plan finds sigma ~1 back, and spends no more than asked.
    targeted = plan(dp(epsilon=2.633, delta=1e-5), users=1000, users_per_step=32, steps=93)
    assert targeted.noise_multiplier == pytest.approx(1.0, abs=0.02)
    assert 2.60 <= targeted.epsilon <= 2.633
    assert epsilon_spent(0.0, 0.1, 10, 1e-5) == math.inf
    assert plan(dp(noise_multiplier=0.0), users=10, users_per_step=2, steps=3).as_dict()["epsilon"] is None


def test_default_delta_is_the_largest_power_of_ten_below_one_over_users():
    assert [default_delta(n) for n in (16, 80, 100, 1000)] == [0.01, 0.01, 0.001, 0.0001]
    assert plan(dp(noise_multiplier=1.0), users=80, users_per_step=8, steps=4).delta == 0.01


def _linear_with_hooks(inputs: int):
    layer = torch.nn.Linear(inputs, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    return layer, GradSampleModule(layer, batch_first=True, loss_reduction="sum")


def _linear_loss(model, xs):  # loss = w . x: the gradient of an example is its x
    return model(torch.tensor(xs, dtype=torch.float32))[:, 0], list(range(len(xs)))


def test_clipping_bounds_each_users_whole_contribution():
    layer, hooked = _linear_with_hooks(2)
    # User a has two huge examples, user b one small one; no noise; both users sampled (2 expected).
    users = [[[1000.0, 0.0], [0.0, 1000.0]], [[0.0, 1.0]]]
    stats = private_gradient(hooked, _linear_loss, users, max_grad_norm=1.0, noise_std=0.0, expected_users=2.0,
                             generator=torch.Generator())
    # a's gradient is the mean of its examples' ([500, 500]) clipped to norm 1, whatever its size or count;
    # per-example clipping would give a [1, 1] (norm 1.41), no clipping [500, 500].
    a = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
    assert torch.allclose(layer.weight.grad[0], (a + torch.tensor([0.0, 1.0])) / 2.0, atol=1e-5)
    assert stats["clipped"] == 0.5 and stats["users"] == 2.0


def test_noise_is_added_even_when_no_user_is_sampled():
    layer, hooked = _linear_with_hooks(20_000)
    private_gradient(hooked, _linear_loss, [], max_grad_norm=2.0, noise_std=3.0, expected_users=4.0,
                     generator=torch.Generator().manual_seed(0))
    grad = layer.weight.grad[0]
    assert float(grad.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(grad.std()) == pytest.approx(3.0 / 4.0, rel=0.03)  # noise std / expected users


def test_plan_errors_name_the_setting():
    with pytest.raises(PrivacySettingsError, match=r"^trainer: under privacy.dp a batch is users"):
        plan(dp(epsilon=1.0), users=10, users_per_step=11, steps=3)
    with pytest.raises(PrivacySettingsError, match=r"^privacy.dp.delta: 0.2 is not below 1/\(training users\) = 1/10"):
        plan(dp(epsilon=1.0, delta=0.2), users=10, users_per_step=2, steps=3)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["privacy.dp.epsilon=1"], "config error: privacy.dp: method grpo does not train with differential privacy; "
         "use method: sft or a learned_reward_model reward"),
        (["privacy.dp={epsilon: 1, noise_multiplier: 1}"], "privacy.dp: give exactly one of epsilon"),
        ([*SFT, "privacy.dp.epsilon=1", "method_settings={per: user, data: writing_samples}"],
         "config error: privacy.dp: method_settings.per: user trains each user's adapter on that user's data alone"),
        (["method=sft", "trainer={per_device_train_batch_size: 17}", "privacy.dp.epsilon=1"],
         "config error: trainer.per_device_train_batch_size: under privacy.dp a batch is users, and 17 per step is "
         "more than the 16 training users"),
        ([*SFT, "privacy.dp={epsilon: 1, delta: 0.1}"], "config error: privacy.dp.delta: 0.1 is not below 1/(training users)"),
        (["privacy.dp.noise_multiplier=1", "rewards=[{name: learned_reward_model, params: {batch_size: 32}}]"],
         "config error: rewards.0.params.batch_size: under privacy.dp a batch is users"),
        ([*SFT, "privacy.dp.epsilon=-1"], "privacy.dp.epsilon: Input should be greater than 0"),
    ],
)
def test_bad_privacy_settings_are_one_line_errors(overrides, expected, tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", TINY, f"tracking.runs_dir={runs}", *overrides])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_dp_sft_run_reports_a_finite_epsilon_and_trains_the_adapters(attune_cli, tmp_path):
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path}", *SFT, "privacy.dp.epsilon=8",
         "evaluation.enabled=false", "tracking.wandb=disabled"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    privacy = json.loads((run_dir / "eval.json").read_text())["privacy"]
    assert privacy["unit"] == "user" and privacy["accountant"] == "rdp"
    assert math.isfinite(privacy["epsilon"]) and 7.9 <= privacy["epsilon"] <= 8.0  # the target, reached over 2 steps
    part = privacy["parts"]["policy"]
    # 16 training users, 4 expected a step; delta the largest power of ten below 1/16.
    assert (part["users"], part["sample_rate"], part["steps"], part["delta"]) == (16, 0.25, 2, 0.01)
    assert part["noise_multiplier"] > 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    spent = [r["dp/epsilon"] for r in records if "dp/epsilon" in r]
    assert len(spent) == 2 and spent[0] < spent[1] == pytest.approx(privacy["epsilon"])
    assert f"(epsilon, delta) = ({privacy['epsilon']:.3g}, 0.01) per **user**" in (run_dir / "report.md").read_text()
    # The adapter moved: LoRA's B matrices start at zero.
    adapter = next((run_dir / "checkpoints" / "final").rglob("adapter_model.safetensors"))
    lora_b = [t for name, t in load_file(adapter).items() if "lora_B" in name]
    assert lora_b and all(float(t.abs().max()) > 0 for t in lora_b)


def test_learned_reward_model_trains_privately_when_given_dp_sgd(tmp_path):
    import envs
    from agents.policy import resolve_model
    from agents.privacy import private_trainer
    from envs.population import UserPopulation
    from rewards import build_reward

    population = UserPopulation(envs.scenario_of("attune/WritingAssistant-v1"), n_users=20, seed=0)
    reward = build_reward("learned_reward_model", {"pairs": 16, "steps": 2, "batch_size": 4, "held_out_pairs": 8},
                          population=population, resolve_model=resolve_model, output_dir=tmp_path,
                          private_training=private_trainer(dp(noise_multiplier=1.0)))
    assert (reward.privacy["users"], reward.privacy["sample_rate"], reward.privacy["steps"]) == (16, 0.25, 2)
    assert reward.privacy["epsilon"] == pytest.approx(epsilon_spent(1.0, 0.25, 2, 0.01))
    assert json.loads((tmp_path / "reward_model.json").read_text())["privacy"] == reward.privacy
    # Only adapters and the score head were trained, and they moved (LoRA's B starts at zero).
    trained = {n: p for n, p in reward.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or "score" in n for n in trained)
    assert all(float(p.detach().abs().max()) > 0 for n, p in trained.items() if "lora_B" in n)
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in reward.model.parameters())
