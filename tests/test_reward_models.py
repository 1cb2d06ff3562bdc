"""Issue-5 reward models: rule rewards (literal values), embedding, learned Bradley-Terry model, judge, mixtures."""

import json
import math
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agents.policy import resolve_model
from envs.population import UserPopulation
from rewards import build_reward
from rewards.text import keyword_coverage, readability, structure

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def population():
    return UserPopulation("writing", n_users=40, seed=0)


def test_rule_rewards_literal_values():
    assert keyword_coverage(None, ["the heater is broken", "nothing"], keywords=["heater", "broken", "repair", "landlord"]) == [0.5, 0.0]
    request = [[{"role": "user", "content": "Write a note about the broken heater"}]]
    assert keyword_coverage(request, ["The heater is broken, here is a note"]) == [pytest.approx(3 / 5)]  # write note about broken heater
    # Flesch: 206.835 - 1.015 * 4/1 - 84.6 * 5/4 (reading=2, books=1, helps=1, people=1 syllables) = 97.025
    assert readability(None, ["Reading books helps people.", "", "The cat sat on the mat."]) == [
        pytest.approx(0.97025), 0.0, 1.0]
    assert structure(None, ["- a\n- b", "1. x\n2) y\n* z\n- w", "plain text", "-no space"]) == [2 / 3, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="target_items must be > 0"):
        structure(None, ["x"], target_items=0)


def test_mixture_is_a_weighted_sum_that_reports_its_terms(population):
    seen = {}
    mixture = build_reward("mixture", {"components": [
        {"name": "length_target", "weight": 0.5, "params": {"target_words": 2}}, {"name": "structure"}]},
        population=population, report=lambda name, terms: seen.update({name: terms}))
    assert mixture(None, ["one two", "- a\n- b\n- c"]) == [0.0, pytest.approx(0.5 * -0.5 + 1.0)]
    assert seen["mixture"] == {"length_target": pytest.approx(-0.25), "structure": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="give name"):
        build_reward("mixture", {"components": [{"weight": 1}]}, population=population)


def test_user_mixture_gives_each_user_their_own_weights(population):
    mixture = build_reward("user_mixture", {"components": [{"name": "length_target", "params": {"target_words": 2}},
                                                           {"name": "structure"}], "seed": 3}, population=population)
    a, b = mixture.user_weights("u0000"), mixture.user_weights("u0001")
    assert a.sum() == pytest.approx(1.0) and b.sum() == pytest.approx(1.0)
    assert not np.allclose(a, b) and np.allclose(a, mixture.user_weights("u0000"))
    value = mixture(None, ["- a\n- b\n- c"], user_id=["u0000"])[0]
    assert value == pytest.approx(a[0] * -0.5 + a[1] * 1.0)


def test_embedding_similarity_prefers_the_users_own_style(population):
    reward = build_reward("embedding_similarity", {}, population=population)
    user = population.users[0]
    own_sample = user.request_sample_pairs()[0][1]
    scores = reward(None, [own_sample, "Quarterly tax filings for offshore shipping."], user_id=[user.user_id] * 2)
    assert scores[0] > scores[1] + 0.2
    # literal: against a single reference text (the profile's description) the text itself scores 1
    by_profile = build_reward("embedding_similarity", {"source": "profile"}, population=population)
    assert by_profile(None, [user.describe()], user_id=[user.user_id]) == [pytest.approx(1.0, abs=1e-5)]


def test_learned_reward_model_beats_chance_on_held_out_users(population, tmp_path):
    reward = build_reward("learned_reward_model", {"pairs": 256, "steps": 60, "held_out_pairs": 100},
                          population=population, resolve_model=resolve_model, output_dir=tmp_path)
    assert reward.summary["heldout_accuracy"] > 0.65, reward.summary  # chance is 0.5
    assert json.loads((tmp_path / "reward_model.json").read_text())["heldout_accuracy"] == reward.summary["heldout_accuracy"]
    scores = reward([[{"role": "user", "content": "hi"}]] * 2, ["- a\n- b", "b"])
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_llm_judge_scores_in_range_and_sees_the_profile(population):
    judge = build_reward("llm_judge", {"model": "tiny-random"}, population=population, resolve_model=resolve_model)
    prompts = [[{"role": "user", "content": "write a note about my heater"}]] * 2
    scores = judge(prompts, ["Here is a note about your heater.", "lol"], user_id=["u0000", "u0001"])
    assert scores == judge(prompts, ["Here is a note about your heater.", "lol"], user_id=["u0000", "u0001"])
    assert scores[0] != scores[1]
    text = judge.tokenizer.decode(judge._prompt(prompts[0], "reply", "u0000"))
    assert "What the user told us: This user prefers" in text and "Answer with one digit" in text

    # literal: the reward is (expected digit - 3) / 2 under the judge's next-token probabilities of 1..5
    import torch

    def judge_model_with_digit_logits(values):
        def forward(input_ids, **_):
            logits = torch.full((input_ids.shape[0], 1, len(judge.tokenizer)), -1e4)
            logits[:, -1, judge.digit_ids] = torch.tensor(values, dtype=torch.float32)
            return SimpleNamespace(logits=logits)
        return forward

    for logits, expected in [([0, 0, 0, 0, 30], 1.0), ([30, 0, 0, 0, 0], -1.0), ([0, 0, 0, 0, 0], 0.0),
                             ([0, 0, 0, math.log(3), 0], (23 / 7 - 3) / 2)]:  # E[digit] = (1+2+3+3*4+5)/7
        judge.model = judge_model_with_digit_logits(logits)
        assert judge(prompts[:1], ["x"], user_id=["u0000"]) == [pytest.approx(expected, abs=1e-6)], logits


def test_compare_rewards_through_the_cli(attune_cli, tmp_path):
    variants = ("[{name: utility, rewards: [{name: user_feedback}]}, "
                "{name: length, rewards: [{name: length_target, params: {target_words: 5}}]}, "
                "{name: bullets, rewards: [{name: structure}]}]")
    result = subprocess.run(
        [attune_cli, "compare-rewards", str(REPO / "experiments" / "configs" / "tiny.yaml"), f"tracking.runs_dir={tmp_path}",
         "rewards=[{name: user_feedback}]", "evaluation.prompts=3", f"variants={variants}"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = list(tmp_path.iterdir())
    rows = {r["variant"]: r for r in json.loads((folder / "reward_comparison.json").read_text())}
    assert set(rows) == {"utility", "length", "bullets"}
    assert rows["utility"]["pearson_with_utility"] > 0.9  # the users' own (noisy) utility tracks their hidden utility
    for row in rows.values():
        assert all(np.isfinite(row[k]) for k in ("proxy_gain", "utility_gain", "gap_std_units", "ms_per_100_replies"))
    assert "| bullets | structure |" in (folder / "reward_comparison.md").read_text()
    assert (folder / "plots" / "reward_hacking.png").read_bytes()[:4] == b"\x89PNG"
    assert list(folder.glob("wandb/offline-run-*"))


def test_compare_rewards_without_variants_says_how(attune_cli, tmp_path):
    result = subprocess.run([attune_cli, "compare-rewards", str(REPO / "experiments" / "configs" / "tiny.yaml"),
                             f"tracking.runs_dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "compare-rewards: add variants" in result.stderr


def test_readme_own_reward_example_runs(attune_cli, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Compare rewards, and your own reward", 1)[1].split("\n## ", 1)[0]
    module = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    override = re.search(r"'(rewards=\[.*?\])'", section).group(1)
    (tmp_path / "my_rewards.py").write_text(module)
    result = subprocess.run(
        [attune_cli, "run", str(REPO / "experiments" / "configs" / "tiny.yaml"), override,
         f"tracking.runs_dir={tmp_path / 'runs'}", "trainer.max_steps=1", "evaluation.enabled=false"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/no_exclamations/mean" in r for r in records)


def test_ppo_reward_model_equals_the_reward_functions_on_the_decoded_replies():
    """PPO reads rewards from a module; it must give what GRPO's direct call of the same functions gives."""
    import torch

    from agents.policy import chat_prompt_ids, load_policy
    from agents.ppo import UserRewardModel, _end_of_turn_id, _tokenizer_for_ppo
    from agents.rollouts import build_prompt_dataset, make_env
    from rewards import build_reward

    population = UserPopulation("writing", n_users=20, seed=0)
    _, tokenizer, _ = load_policy("tiny-random")
    rows = build_prompt_dataset(make_env("attune/WritingAssistant-v1", population=population, split="train"), 4, seed=0)
    prompt_ids = [chat_prompt_ids(tokenizer, row["prompt"]) for row in rows]
    tokenizer = _tokenizer_for_ppo(tokenizer, prompt_ids)
    functions = [build_reward("user_feedback", {"feedback": "expected_utility"}, population=population),
                 build_reward("length_target", {"target_words": 5}),
                 lambda prompts, completions, **kw: [None if "plan" in c[0]["content"] else 0.5 for c in completions]]
    weights = [1.0, 0.2, -2.0]
    module = UserRewardModel(rows, prompt_ids, tokenizer, functions, weights)

    replies = ["Dear colleague, the project deadline moves to Friday.", "hey!! cool", "- a plan\n- a date",
               "Thanks so much, I hope this helps with the email about the delay."]
    order = [2, 0, 3, 1]  # batch rows in another order than the dataset: the module must find each row itself
    pad, stop = tokenizer.pad_token_id, _end_of_turn_id(tokenizer)
    sequences = []
    for k, i in enumerate(order):
        reply = tokenizer.encode(replies[k], add_special_tokens=False) + ([stop] if k % 2 else [])
        sequences.append((prompt_ids[i], reply))
    query_width = max(len(q) for q, _ in sequences)
    reply_width = max(len(r) for _, r in sequences) + 3
    # As PPOTrainer builds them: queries left-padded, replies right-padded, the mask is "not the pad token".
    batch = torch.tensor([[pad] * (query_width - len(q)) + q + r + [pad] * (reply_width - len(r)) for q, r in sequences])
    hidden = module.backbone(input_ids=batch, attention_mask=batch != pad).hidden_states[-1]
    scores = module.score(hidden)[:, :, 0]

    picked = [rows[i] for i in order]
    columns = {"user_id": [r["user_id"] for r in picked], "task_id": [r["task_id"] for r in picked]}
    prompts = [r["prompt"] for r in picked]
    completions = [[{"role": "assistant", "content": text}] for text in replies]
    expected = [0.0] * len(replies)
    for function, weight in zip(functions, weights):
        for j, value in enumerate(function(prompts, completions, **columns)):
            expected[j] += 0.0 if value is None else weight * value
    assert len(set(expected)) == len(expected)  # distinct rewards: a row mix-up would show
    for j in range(len(replies)):
        assert scores[j].tolist() == pytest.approx([expected[j]] * batch.shape[1], abs=1e-6)
