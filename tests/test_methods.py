"""Every training method, two steps with the tiny model, through the real CLI, on the same users."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import agents
from agents.policy import resolve_model

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
# the baselines: test_baselines.py; bc trains on the elicitation env's scripted conversations: tests/test_bc.py;
# federated starts Ray for its clients: tests/test_federated.py runs it through the CLI
METHODS = [method.name for method in agents.methods() if method.kind == "llm" and method.name not in ("bc", "federated")]
SMALL_TRAINER = {
    "grpo": "{max_steps: 2, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}",
    "rloo": "{max_steps: 2, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}",
    "ppo": "{per_device_train_batch_size: 8}",
    "dpo": "{max_steps: 2, per_device_train_batch_size: 2}",
    "online_dpo": "{max_steps: 2, per_device_train_batch_size: 2, max_new_tokens: 8}",
    "sft": "{max_steps: 2}",
    "prompting": "{}",
    "kshot": "{}",
    "fit_rerank": "{}",
}
METHOD_SETTINGS = {"dpo": "{rounds: 1, max_new_tokens: 8}", "prompting": "{profile: stated, retrieval_k: 1}",
                   "fit_rerank": "{k: 2, candidates: 2}",
                   "sft": "{per: group, max_new_tokens: 8}"}
TRAINING_FREE = ("prompting", "kshot", "fit_rerank")


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
    for row in table:  # the table collates each variant's own eval.json, figure for figure
        report = json.loads((methods_run / "variants" / row["variant"] / "eval.json").read_text())
        assert row["method"] == report["method"] == row["variant"]
        assert row["train_seconds"] == report["train_seconds"]
        assert (row["base_mean"], row["mean"]) == (report["before"]["mean_utility"], report["after"]["mean_utility"])
        assert (row["win_rate"], row["improvement"]) == (report["comparison"]["win_rate"], report["comparison"]["improvement"])
    assert len({row["base_mean"] for row in table}) == 1  # one base evaluation, shared by every method
    assert "| grpo | grpo |" in (methods_run / "comparison.md").read_text()
    assert (methods_run / "plots" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "sft" and m not in TRAINING_FREE])
def test_weight_training_methods_changed_the_weights(methods_run, method):
    # A smoke check of the CLI path (the saved checkpoint is the trained one); whether the change is
    # learning is tests/test_learning.py's question.
    final = methods_run / "variants" / method / "checkpoints" / "final"
    if method == "dpo":  # LoRA adapters unless method_settings.adapters: false (B starts at zero)
        assert not (final / "model.safetensors").exists()
        adapter = load_file(final / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    else:
        initial = load_file(resolve_model("tiny-random") / "model.safetensors")
        trained = load_file(final / "model.safetensors")
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
        # smoke: each adapter was trained (LoRA B starts at zero); what they learn: tests/test_learning.py
        assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), group


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
    assert [r["dpo/round"] for r in rounds] == [1]  # method_settings.rounds=1
    pairs = rounds[0]["dpo/pairs"]
    assert pairs in range(1, 9)  # 8 prompts, 2 replies each: one pair per prompt unless both replies are equal
    agreed = rounds[0]["dpo/choice_agrees_with_utility"] * pairs  # a share of the pairs, so a whole number
    assert agreed == pytest.approx(round(agreed)), rounds[0]


def test_dpo_pairs_follow_the_users_choices(monkeypatch):
    """Literal case: a reply each user strongly prefers against one they dislike; the pair's sides follow."""
    import agents.dpo
    from envs.population import UserPopulation
    from envs.scenarios import UserGroup

    population = UserPopulation("writing", n_users=4, seed=0,
                                groups=[UserGroup("warm", 1.0, {"warmth": 1.0}, spread=0.0)])
    # Both answer the task (the users weigh style only in replies that do); one says it warmly.
    warm = ("Thanks so much for asking, I hope this helps! The project deadline moves to Friday because of the "
            "delay, so please let your colleague know.")
    cold = "The project deadline moves to Friday because of the delay. Let your colleague know."
    # replies come in pairs per prompt (0-1, 2-3, ...); the warm one first, then second, then a tie
    replies = [warm, cold, cold, warm, cold, cold]
    monkeypatch.setattr(agents.dpo, "generate_replies", lambda model, tokenizer, conversations, **kw: replies)
    rows = [{"prompt": [{"role": "user", "content": f"request {i}"}], "user_id": u.user_id, "task_id": "write-000"}
            for i, u in enumerate(population.users[:3])]
    pairs, stats = agents.dpo.collect_preferences(None, None, rows, population, samples_per_prompt=2,
                                                  max_new_tokens=8, temperature=1.0, noise=0.0, seed=0)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [(warm, cold), (warm, cold)]
    assert [p["prompt"] for p in pairs] == [rows[0]["prompt"], rows[1]["prompt"]]  # the tie (row 2) is dropped
    user, task = population.simulated_user(rows[0]["user_id"], noise=0.0), population.task("write-000")
    margin = float(user.utility([warm], [task])[0] - user.utility([cold], [task])[0])
    assert margin > 0.5  # the case is what it says: the warm user clearly prefers the warm answer
    assert stats == {"pairs": 2.0, "choice_agrees_with_utility": 1.0, "chosen_minus_rejected_utility": pytest.approx(margin)}


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
    # smoke: the LoRA path trains and saves the adapter (B starts at zero); learning: tests/test_learning.py
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
