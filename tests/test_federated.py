"""Federated personalization (agents/federated.py): aggregation, secure aggregation, FedProx, settings, and a
federated run of the tiny model through the real CLI on Ray."""

import copy
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents import TrainerSettingsError, method_options
from agents.federated import (
    MASK_SCALE,
    ClientPlan,
    ClientResult,
    aggregate,
    fedavg,
    lora_state,
    masked_update,
    secure_sum,
    train_client,
)
from experiments.config import ConfigError
from experiments.config_files import load_config
from experiments.runner import prepare

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "configs" / "tiny.yaml"


def _states(seed: int, clients: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"a.lora_A.default.weight": torch.randn(4, 8, generator=generator),
             "a.lora_B.default.weight": torch.randn(8, 4, generator=generator)} for _ in range(clients)]


def test_fedavg_is_the_example_weighted_mean_of_the_client_adapters():
    states, examples = _states(0, 3), [3, 1, 6]
    averaged = fedavg(states, examples)
    for name in states[0]:
        by_hand = sum(n * s[name].numpy().astype(np.float64) for s, n in zip(states, examples)) / sum(examples)
        assert torch.equal(averaged[name], torch.from_numpy(by_hand.astype(np.float32))), name
        # the weights matter: the plain mean is another adapter
        assert not torch.allclose(averaged[name], sum(s[name] for s in states) / 3)


def test_secure_aggregation_the_server_sum_equals_the_plain_sum_and_hides_each_update():
    updates = [{k: v.double() for k, v in s.items()} for s in _states(1, 4)]
    members = (0, 2, 5, 7)  # the round's sampled clients, by index
    masked = [masked_update(u, k, members, round_seed=11) for u, k in zip(updates, members)]
    total, plain = secure_sum(masked), {k: sum(u[k] for u in updates) for k in updates[0]}
    for name in plain:
        assert torch.allclose(total[name], plain[name], rtol=0, atol=1e-8), name
        for raw, sent in zip(updates, masked):  # what the server sees of one client is noise of the mask's size
            assert (sent[name] - raw[name]).abs().mean() > MASK_SCALE / 10
    # another round's masks are other masks; leaving a member out breaks the cancellation (no dropout recovery)
    assert not torch.allclose(masked_update(updates[0], 0, members, round_seed=12)["a.lora_A.default.weight"],
                              masked[0]["a.lora_A.default.weight"])
    partial = secure_sum(masked[:3])
    assert not torch.allclose(partial["a.lora_A.default.weight"], sum(u["a.lora_A.default.weight"] for u in updates[:3]))


def test_the_server_aggregating_masked_updates_gets_the_fedavg_adapter():
    global_state = _states(2, 1)[0]
    clients, examples, members = _states(3, 3), [3, 5, 2], (1, 4, 6)
    masked = [ClientResult(f"c{k}", n, 0.0, masked_update(
        {name: n * (state[name].double() - global_state[name].double()) for name in state}, k, members, 5), masked=True)
        for state, n, k in zip(clients, examples, members)]
    plain = [ClientResult(f"c{k}", n, 0.0, state) for state, n, k in zip(clients, examples, members)]
    secure, fedavg_state = aggregate(global_state, masked), aggregate(global_state, plain)
    for name in global_state:
        assert torch.allclose(secure[name], fedavg_state[name], rtol=0, atol=1e-5), name
    assert all(torch.equal(fedavg_state[k], fedavg(clients, examples)[k]) for k in global_state)


@pytest.fixture(scope="module")
def tiny_lora():
    from peft import LoraConfig, get_peft_model

    from agents.policy import load_policy
    from agents.sft import user_texts
    from envs.population import UserPopulation

    model, tokenizer, _ = load_policy("tiny-random")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear"))
    rows = user_texts(UserPopulation("writing", n_users=4, seed=0).users[:1])
    return model, tokenizer, rows


def _client_distance(tiny_lora, tmp_path, mu: float) -> float:
    model, tokenizer, rows = tiny_lora
    start = lora_state(model)
    plan = ClientPlan(name="u0000", local_method="sft", steps=5, seed=0, output_dir=str(tmp_path / f"mu{mu}"),
                      trainer_settings={"learning_rate": 0.02, "optim": "sgd", "lr_scheduler_type": "constant"}, proximal_mu=mu)
    result = train_client(copy.deepcopy(model), tokenizer, start, rows, plan)
    assert result.examples == len(rows) and math.isfinite(result.loss)
    return math.sqrt(sum(float(((result.update[k] - start[k]) ** 2).sum()) for k in start))


def test_fedprox_keeps_a_client_near_the_global_adapter(tiny_lora, tmp_path):
    free = _client_distance(tiny_lora, tmp_path, 0.0)
    held = _client_distance(tiny_lora, tmp_path, 50.0)  # lr * mu = 1: each step pulls back to the global adapter
    assert free > 0  # the client moved away from the global adapter without the proximal term
    assert held < 0.5 * free, (held, free)  # about 1/steps with the term, 1 without it


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"aggregation": "fedprox"}, "method_settings.proximal_mu: aggregation: fedprox needs proximal_mu > 0"),
        ({"proximal_mu": 0.1}, "method_settings.proximal_mu: is only used by aggregation: fedprox"),
        ({"aggregation": "fedsgd"}, "method_settings.aggregation: Input should be 'fedavg' or 'fedprox' (got 'fedsgd')"),
        ({"client": "device"}, "method_settings.client: Input should be 'user' or 'group' (got 'device')"),
        ({"local_method": "grpo"}, "method_settings.local_method: Input should be 'sft' or 'dpo' (got 'grpo')"),
        ({"rounds": 0}, "method_settings.rounds: Input should be greater than or equal to 1 (got 0)"),
        ({"clients_per_round": 0}, "method_settings.clients_per_round: Input should be greater than or equal to 1"),
        ({"local_steps": "many"}, "method_settings.local_steps: Input should be a valid integer"),
        ({"personalize_steps": -1}, "method_settings.personalize_steps: Input should be greater than or equal to 0"),
        ({"secure_aggregation": "maybe"}, "method_settings.secure_aggregation: Input should be a valid boolean"),
        ({"secure_aggregation": True, "clients_per_round": 1}, "method_settings.secure_aggregation: masks cancel only"),
        ({"fedavg": True}, "method_settings.fedavg: not a setting of this method; allowed: rounds, clients_per_round"),
    ],
)
def test_a_bad_federated_setting_is_one_line_naming_the_field(settings, message):
    with pytest.raises(TrainerSettingsError) as caught:
        method_options(agents.get_method("federated"), settings)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method_settings.clients_per_round=17"], "method_settings.clients_per_round: 17 is more than the 16 clients"),
        (["method_settings.client=group", "method_settings.clients_per_round=3"],
         "method_settings.clients_per_round: 3 is more than the 2 clients (client: group"),
        (["method_settings.client=group", "users.groups=[{name: all, share: 1.0, preference_center: {warmth: 1.0}}]",
          "method_settings.secure_aggregation=true"], "method_settings.secure_aggregation: needs two or more clients"),
        (["trainer.max_steps=3"], "trainer.max_steps: a federated client trains method_settings.local_steps steps"),
        (["trainer.num_generations=2"], "trainer.num_generations: not a field of trl.SFTConfig or trl.DPOConfig"),
    ],
)
def test_prepare_refuses_what_the_users_or_trainers_cannot_serve(overrides, message):
    with pytest.raises(ConfigError) as caught:
        prepare(load_config(TINY, ["method=federated", "trainer={}", *overrides]))
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_federated_run_through_the_cli_on_ray(attune_cli, tmp_path):
    """Two rounds of two user-clients with FedProx and secure aggregation, then one personalization step per
    held-out user, as a variants run: eval.json's federated section, the changed adapters, the comparison rows."""
    from safetensors.torch import load_file

    settings = ("{rounds: 2, clients_per_round: 2, local_steps: 1, personalize_steps: 1, aggregation: fedprox, "
                "proximal_mu: 0.01, secure_aggregation: true}")
    ray_tmpdir = tempfile.mkdtemp(prefix="attune-ray-", dir="/tmp")
    result = subprocess.run(
        [attune_cli, "run", str(TINY), f"tracking.runs_dir={tmp_path}", "users.n_users=10", "evaluation.prompts=2",
         "evaluation.text_metrics=false", "trainer={learning_rate: 0.01}",
         f"variants=[{{name: fed, method: federated, method_settings: {settings}}}]"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "RAY_TMPDIR": ray_tmpdir},  # short: Ray's socket paths are limited to 107 bytes
    )
    shutil.rmtree(ray_tmpdir, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (parent,) = list(tmp_path.iterdir())
    run = parent / "variants" / "fed"
    report = json.loads((run / "eval.json").read_text())
    federated = report["federated"]
    assert (federated["engine"], federated["rounds"], federated["clients"], federated["clients_per_round"]) == (
        "ray tasks", 2, 8, 2)  # 10 users, 2 held out: 8 clients
    assert [r["round"] for r in federated["per_round"]] == [1, 2]
    for entry in federated["per_round"]:
        assert len(entry["clients"]) == len(set(entry["clients"])) == 2
        assert entry["examples"] == 2 * 3  # three request/writing-sample pairs per user
        assert math.isfinite(entry["loss"]) and entry["global_change"] > 0
    assert federated["round_loss"] == [r["loss"] for r in federated["per_round"]]
    assert federated["personalized_users"] == 2
    utility = federated["utility"]
    assert set(utility) == {"base", "global", "personalized"}
    assert utility["global"]["mean_utility"] == report["after"]["mean_utility"]
    assert utility["base"]["mean_utility"] == report["before"]["mean_utility"]
    assert all(u["n"] == 2 and u["ci_low"] <= u["mean_utility"] <= u["ci_high"] for u in utility.values())
    personalized = federated["policies"]["personalized"]
    episodes = json.loads((run / "episodes.json").read_text())
    scores = [e["score"] for e in episodes["after_personalized"]]
    assert personalized["after"]["mean_utility"] == pytest.approx(np.mean(scores))
    assert personalized["vs_global"]["difference"] == pytest.approx(
        np.mean(scores) - np.mean([e["score"] for e in episodes["after"]]))
    # the adapters changed: LoRA's B starts at zero, so a non-zero B was trained; each held-out user has their own
    final = run / "checkpoints" / "final"
    global_adapter = load_file(final / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in global_adapter.items() if "lora_B" in k)
    users = sorted({e["user_id"] for e in episodes["after"]})
    for user_id in users:
        personal = load_file(final / user_id / "adapter_model.safetensors")
        assert any(not torch.equal(personal[k], global_adapter[k]) for k in global_adapter), user_id
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["federated/round"] for r in rounds if "federated/round" in r] == [1, 2]
    table = json.loads((parent / "comparison.json").read_text())
    assert [row["variant"] for row in table] == ["fed", "fed/personalized"]
    assert table[1]["mean"] == pytest.approx(np.mean(scores))
    markdown = (run / "report.md").read_text()
    assert "## Federated" in markdown and "| personalized | " in markdown and "| global | " in markdown


def test_the_shipped_federated_config_compares_centralized_and_federated_at_equal_example_passes():
    config = load_config(REPO / "experiments" / "configs" / "federated.yaml", ["policy.model=tiny-random"])
    variants = dict(config.variant_configs())
    assert [(name, v.method) for name, v in variants.items()] == [("centralized", "sft"), ("federated", "federated")]
    checked = {name: prepare(v) for name, v in variants.items()}  # every setting passes the door
    centralized, federated = variants["centralized"], checked["federated"]["method_settings"]
    assert checked["centralized"]["method_settings"].data == "writing_samples"
    assert (federated.client, federated.local_method) == ("user", "sft")
    pairs_per_user = 3
    assert (centralized.trainer["max_steps"] * centralized.trainer["per_device_train_batch_size"]
            == federated.rounds * federated.clients_per_round * federated.local_steps * pairs_per_user)
