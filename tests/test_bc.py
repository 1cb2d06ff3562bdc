"""Behaviour cloning (agents/bc.py): its rows are the scripted conversations (all of the expert's, or the best of
a noisy policy's), they reach TRL's SFTTrainer, and a tiny run goes through the real CLI on the elicitation env."""

import json
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import pytest

import agents
import envs  # noqa: F401 - registers the envs
from agents.bc import Settings, demonstration_rows
from envs.elicitation_policies import demonstrations, filtered_demonstrations, sft_rows

REPO = Path(__file__).resolve().parents[1]
ENV = "attune/Elicitation-v1"


def _env():
    return gym.make(ENV, n_users=30, max_turns=3).unwrapped


def test_bc_is_registered_with_its_settings_checked():
    method = agents.get_method("bc")
    assert method.multi_turn and not method.uses_prompts
    assert Settings.of({"filtered": True, "keep": 0.2}).keep == 0.2
    with pytest.raises(agents.TrainerSettingsError, match=r"method_settings.keep"):
        Settings.of({"keep": 0.0})
    with pytest.raises(agents.TrainerSettingsError, match=r"method_settings.episodes"):
        Settings.of({"episodes": 0})


def _pairs(episodes):
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in sft_rows(episodes)]


def test_bc_rows_are_the_demonstrators_conversations_and_filtered_bc_the_best_of_the_same_ones():
    from envs.elicitation_policies import behaviour_policy, expert_policy
    from envs.seeding import derive_seed

    seed = derive_seed(3, "bc-demonstrations")
    plain = demonstration_rows(_env(), Settings.of({"episodes": 20}), 3)
    behaviour = demonstrations(_env(), 20, seed, behaviour_policy())
    assert plain == _pairs(behaviour)
    filtered = demonstration_rows(_env(), Settings.of({"episodes": 20, "filtered": True, "keep": 0.25}), 3)
    kept = sorted(behaviour, key=lambda e: -e.episode_return)[:5]
    assert filtered == _pairs(kept) == _pairs(filtered_demonstrations(_env(), 20, seed, keep=0.25))
    expert = demonstration_rows(_env(), Settings.of({"episodes": 6, "demonstrator": "expert"}), 3)
    assert expert == _pairs(demonstrations(_env(), 6, seed, expert_policy()))
    assert any(len(r["prompt"]) > 1 for r in expert)  # later turns carry the user's answers as context
    plain = demonstration_rows(_env(), Settings.of({"episodes": 6}), 3)
    assert plain != demonstration_rows(_env(), Settings.of({"episodes": 6}), 4)  # the run's seed reaches the data


def test_bc_on_another_env_is_one_clear_error():
    with pytest.raises(agents.TrainerSettingsError, match=r"bc: .*use env.id=attune/Elicitation-v1"):
        demonstration_rows(gym.make("attune/WritingAssistant-v1", n_users=10).unwrapped, Settings(), 0)


def test_the_rows_reach_the_sft_trainer(monkeypatch, tmp_path):
    import trl

    from agents import TrainingJob, bc

    seen = {}

    class FakeTrainer:
        def __init__(self, *, model, args, train_dataset, processing_class, peft_config, callbacks):
            seen["rows"] = train_dataset.to_list()
            seen["max_steps"] = args.max_steps
            self.model = model

        def train(self):
            seen["trained"] = True

    monkeypatch.setattr(trl, "SFTTrainer", FakeTrainer)
    job = TrainingJob(model="model", tokenizer=None, peft_config=None, env_id=ENV,
                      env_kwargs={"n_users": 30, "max_turns": 3}, max_turns=3, reward_functions=[], reward_weights=[],
                      trainer_settings={"max_steps": 3}, output_dir=tmp_path, seed=5, prompts=0,
                      method_settings={"episodes": 4})
    assert bc.train(job) == "model" and seen["trained"] and seen["max_steps"] == 3
    assert seen["rows"] == demonstration_rows(_env(), Settings.of({"episodes": 4}), 5)


@pytest.mark.parametrize("filtered", [False, True])
def test_tiny_bc_run_through_the_cli(attune_cli, tmp_path, filtered):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [attune_cli, "run", str(REPO / "experiments/configs/tiny.yaml"), f"tracking.runs_dir={tmp_path}",
         f"env.id={ENV}", "env.max_turns=3", "rewards=[{name: user_feedback}]", "method=bc",
         "trainer={max_steps: 2}", f"method_settings={{episodes: 8, filtered: {str(filtered).lower()}, keep: 0.5}}",
         "evaluation.prompts=2"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    report = json.loads((run / "eval.json").read_text())
    assert report["method"] == "bc" and report["after"]["n"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records if r.get("phase") == "train")
