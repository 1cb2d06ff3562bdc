"""People's choices to training data and a human-evaluation report: `attune feedback export|report`, DPO on
people's choices (`data: {source: human, db}`) and people as simulated users (`users.from_feedback`)."""

import csv
import json
import re
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from agents import TrainerSettingsError
from agents.dpo import Settings
from agents.policy import resolve_model
from envs.people import CHOICE_TEMPERATURE, fit_preference_weights, read_judgements
from experiments.cli import app
from experiments.config import ExperimentConfig
from experiments.config_files import format_validation_error
from experiments.feedback import human_report, people_population, report_markdown
from experiments.feedback_store import open_store
from feedback_data import CONCISE, ENV_ID, LONG, SHORT, VERBOSE, build_feedback_db
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_feedback_db(tmp_path_factory.mktemp("feedback") / "feedback.sqlite")


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


def test_the_reader_agrees_with_the_store(db):
    with open_store(db) as store:
        stored = store.judgements()
    read = read_judgements(db)
    assert len(read) == len(stored) == 10
    for mine, theirs in zip(read, stored):
        shared = set(theirs) - {"left_generation", "right_generation"}
        assert {k: mine[k] for k in shared} == {k: theirs[k] for k in shared}
        assert mine["user_id"] == f"p{theirs['person_id']:04d}"
        if theirs["chosen_reply_id"] is not None:
            side = "left" if theirs["chosen_reply_id"] == theirs["left_reply_id"] else "right"
            assert mine["chosen_text"] == theirs[f"{side}_text"]


def test_export_writes_a_trl_preference_dataset_and_a_ratings_table(db, tmp_path):
    result = invoke("feedback", "export", db, "--out", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert "8 preference pairs" in result.output and "2 ties left out" in result.output
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(tmp_path / "data" / "preferences.jsonl"), split="train",
                           cache_dir=str(tmp_path / "cache"))
    assert dataset.column_names == ["prompt", "chosen", "rejected", "user_id"]
    assert dataset["user_id"] == ["p0001"] * 4 + ["p0002"] * 4
    assert dataset[0] == {  # Ann's first judgement: the short reply chosen
        "prompt": [{"role": "user", "content": "Write an email to a colleague about a delayed project deadline."}],
        "chosen": [{"role": "assistant", "content": SHORT["write-000"]}],
        "rejected": [{"role": "assistant", "content": LONG["write-000"]}],
        "user_id": "p0001",
    }
    assert [row[0]["content"] for row in dataset["chosen"][4:]] == [LONG["write-000"], LONG["write-001"],
                                                                     SHORT["write-004"], LONG["write-009"]]
    with (tmp_path / "data" / "ratings.csv").open() as handle:
        ratings = list(csv.DictReader(handle))
    assert len(ratings) == 20  # two replies per judgement, ties included
    assert {k: ratings[0][k] for k in ("judgement_id", "user_id", "person_name", "model", "side", "rating", "outcome",
                                       "critique")} == {
        "judgement_id": "1", "user_id": "p0001", "person_name": "Ann", "model": CONCISE, "side": "left", "rating": "4",
        "outcome": "chosen", "critique": "too long"}
    assert [(r["model"], r["rating"], r["outcome"]) for r in ratings[-2:]] == [(CONCISE, "3", "tie"), (VERBOSE, "3", "tie")]


def test_report_win_rates_agreement_and_fitted_weights(db):
    report = human_report(db)
    assert (report["env_id"], report["judgements"], report["ties"], report["people"]) == (ENV_ID, 10, 2, 3)
    rates = {row["person"]: row for row in report["win_rates"]}
    overall = rates["all"]
    assert (overall["policy_a"], overall["policy_b"]) == (VERBOSE, CONCISE)  # sorted names: A is the verbose one
    assert (overall["a_wins"], overall["b_wins"], overall["ties"]) == (3, 5, 2)
    # Wilson score interval of 3/8 at 95 %: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    assert (overall["win_rate"], overall["win_rate_ci_low"], overall["win_rate_ci_high"]) == pytest.approx(
        (0.375, 0.1369, 0.6943), abs=1e-4)
    assert (rates["Ann"]["a_wins"], rates["Ann"]["n"], rates["Bob"]["a_wins"], rates["Bob"]["n"]) == (0, 4, 3, 4)
    assert rates["Cid"]["n"] == 0 and rates["Cid"]["ties"] == 1  # only a tie: listed, no rate
    agreement = {row["person"]: row for row in report["agreement"]}
    # The concise group's centre user picks the short reply in every pair, the warm group's the long one.
    assert (agreement["Ann"]["concise_professional_agreed"], agreement["Ann"]["warm_detailed_agreed"]) == (4, 0)
    assert (agreement["Bob"]["concise_professional_agreed"], agreement["Bob"]["warm_detailed_agreed"]) == (1, 3)
    assert agreement["all"]["n"] == 8 and agreement["all"]["concise_professional"] == pytest.approx(5 / 8)
    fits = {row["person"]: row for row in report["fits"]}
    assert set(fits) == {"Ann", "Bob"}  # Cid picked nothing
    assert fits["Ann"]["best_group"] == "concise_professional" and fits["Bob"]["best_group"] == "warm_detailed"
    ann, bob = fits["Ann"]["weights"], fits["Bob"]["weights"]
    assert ann["brevity"] > 0 and ann["warmth"] < 0 and ann["examples"] < 0
    assert bob["brevity"] < 0 and bob["warmth"] > 0
    assert fits["Ann"]["fit_accuracy"] == 1.0 and fits["Bob"]["fit_accuracy"] == 0.75


def test_report_cli_prints_and_writes_every_format(db, tmp_path):
    result = invoke("feedback", "report", db, "--format", "json", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((tmp_path / "report" / "human_eval.json").read_text())
    markdown = (tmp_path / "report" / "human_eval.md").read_text()
    assert "| base:tiny-random | runs/concise | all | 3/8 = 0.38 [0.14, 0.69] | 2 |" in markdown
    assert "| Ann | 4 | 4/4 = 1.00 [0.51, 1.00] | 0/4 = 0.00 [0.00, 0.49] |" in markdown
    table = invoke("feedback", "report", db)
    assert table.exit_code == 0 and "Human win rate of policy A over policy B" in table.output


def test_the_fit_recovers_bradley_terry_weights():
    dims = ("brevity", "formality", "warmth", "examples")
    true = np.array([0.8, -0.5, 0.3, 0.0])
    rng = np.random.default_rng(0)
    differences = rng.uniform(-1, 1, size=(4000, len(dims)))
    p_left = 1 / (1 + np.exp(-2 * differences @ true / CHOICE_TEMPERATURE))
    fit = fit_preference_weights(differences, rng.random(4000) < p_left, dims)
    assert list(fit.weights.values()) == pytest.approx(true.tolist(), abs=0.05)


def test_users_from_feedback_are_the_people_with_their_fitted_weights(db):
    population = people_population(db, ENV_ID, held_out_fraction=0.5, seed=0)
    fits = {row["user_id"]: row for row in human_report(db)["fits"]}
    assert [u.user_id for u in population.users] == ["p0001", "p0002"]
    for user in population.users:
        assert dict(user.preference_weights) == fits[user.user_id]["weights"]
        assert user.group == fits[user.user_id]["best_group"]
        assert len(user.history) == 7  # their own texts, written in their fitted style, as sampled users have
    assert len(population.train_users) == len(population.held_out_users) == 1


def test_bad_feedback_inputs_are_one_line(db, tmp_path):
    missing = tmp_path / "nope.sqlite"
    result = invoke("feedback", "export", missing)
    assert result.exit_code == 2 and not missing.exists()  # a mistyped path makes no new, empty database
    assert result.output.strip() == f"feedback error: no file {missing}; collect choices with `attune serve --db {missing}` or fix the path"
    with open_store(tmp_path / "ties.sqlite") as store:
        person = store.add_person("Dee")
        task = store.add_task("Write a note.")
        left, right = store.add_reply(task, "a", "One."), store.add_reply(task, "b", "Two.")
        store.record_judgement(task, person, left, right, "tie")
    result = invoke("feedback", "report", tmp_path / "ties.sqlite")
    assert result.exit_code == 2 and "has only 1 tie(s): let people judge pairs" in result.output
    (tmp_path / "notes.txt").write_text("not a database")
    result = invoke("feedback", "report", tmp_path / "notes.txt")
    assert result.exit_code == 2 and "is not an attune feedback database" in result.output
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert "is not an attune feedback database" in invoke("feedback", "export", empty).output
    result = invoke("feedback", "report", db, "--env", "attune/Nope-v0")
    assert result.exit_code == 2 and "--env: unknown environment 'attune/Nope-v0'" in result.output
    assert "--format: 'html' is not one of" in invoke("feedback", "report", db, "--format", "html").output
    for result in (invoke("feedback", "export", missing), invoke("feedback", "report", empty)):
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("settings, message", [
    ({"data": {"source": "human"}}, "method_settings.data.db: source human reads people's choices"),
    ({"data": {"source": "human", "db": "nope.sqlite"}}, "method_settings.data.db: no file nope.sqlite"),
    ({"data": {"db": "DB"}}, "method_settings.data.db: a database is read only with source: human"),
    ({"data": {"source": "human", "db": "DB"}, "rounds": 3}, "method_settings.rounds: with data.source human"),
    ({"data": {"source": "human", "db": "DB"}, "judge": "rewards"}, "method_settings.judge: with data.source human"),
    ({"data": {"source": "people"}}, "method_settings.data.source: Input should be 'simulated' or 'human'"),
])
def test_dpo_human_source_is_checked_at_the_door(db, settings, message):
    if settings["data"].get("db") == "DB":
        settings = {**settings, "data": {**settings["data"], "db": str(db)}}
    with pytest.raises(TrainerSettingsError) as error:
        Settings.of(settings)
    assert str(error.value).startswith(message)


def test_users_from_feedback_is_checked_at_the_door(db, tmp_path):
    one = tmp_path / "one.sqlite"
    with open_store(one) as store:
        person = store.add_person("Eve")
        task = store.add_task("Write a note.")
        left, right = store.add_reply(task, "a", "One."), store.add_reply(task, "b", "Two.")
        store.record_judgement(task, person, left, right, "left")
    for users, message in [
        ({"from_feedback": str(db), "n_users": 20}, "users.n_users: the users are the people of users.from_feedback"),
        ({"from_feedback": str(one)}, f"users.from_feedback: {one} has choices from 1 person; users from feedback need"),
        ({"from_feedback": str(tmp_path / "nope")}, "users.from_feedback: no file"),
    ]:
        with pytest.raises(ValidationError) as error:
            ExperimentConfig.model_validate({"users": users})
        assert format_validation_error(error.value).startswith(message)


def test_dpo_trains_on_peoples_choices_and_evaluates_on_them_through_the_cli(attune_cli, db, tmp_path):
    """One run: DPO on what people chose, evaluated on the people as simulated users (their fitted weights)."""
    config = yaml.safe_load((REPO / "experiments" / "configs" / "tiny.yaml").read_text())
    config["users"] = {"from_feedback": str(db), "held_out_fraction": 0.5}
    config.update(method="dpo", method_settings={"data": {"source": "human", "db": str(db)}},
                  trainer={"max_steps": 2, "per_device_train_batch_size": 2})
    config["evaluation"]["text_metrics"] = False
    (tmp_path / "people.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([attune_cli, "run", str(tmp_path / "people.yaml"), f"tracking.runs_dir={tmp_path / 'runs'}",
                             "tracking.wandb=disabled"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (method,) = [r for r in records if r["phase"] == "method"]
    assert (method["dpo/pairs"], method["dpo/ties"], method["dpo/people"]) == (8, 2, 3)
    assert [r["step"] for r in records if r["phase"] == "train" and "loss" in r] == [1, 2]
    adapter = load_file(run_dir / "checkpoints" / "final" / "adapter_model.safetensors")  # DPO's default: LoRA
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero: it trained
    episodes = json.loads((run_dir / "episodes.json").read_text())
    held_out = {u.user_id for u in people_population(db, ENV_ID, held_out_fraction=0.5).held_out_users}
    assert {e["user_id"] for e in episodes["after"]} == held_out


def test_the_readme_shows_this_databases_report(db):
    readme = (REPO / "README.md").read_text()
    shown = re.search(r"```markdown\n(# Human evaluation: feedback\.sqlite\n.*?)```", readme, flags=re.S).group(1)
    report = {**human_report(db), "db": "feedback.sqlite"}
    assert report_markdown(report) == shown


def test_learned_reward_model_trains_on_peoples_choices(db, tmp_path):
    from envs.population import UserPopulation
    from rewards import RewardLookupError, build_reward, check_reward_params
    from rewards.learned import human_preference_pairs

    train, held_out = human_preference_pairs(str(db), seed=0)
    assert (len(train), len(held_out)) == (6, 2)  # a fifth of the 8 decided pairs, rounded
    pairs = {(r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in train + held_out}
    assert (SHORT["write-000"], LONG["write-000"]) in pairs and (LONG["write-000"], SHORT["write-000"]) in pairs
    reward = build_reward("learned_reward_model", {"source": "human", "db": str(db), "steps": 2, "batch_size": 4},
                          population=UserPopulation("writing", n_users=4, seed=0), resolve_model=resolve_model,
                          output_dir=tmp_path)
    assert (reward.summary["train_pairs"], reward.summary["heldout_pairs"]) == (6, 2)
    assert "heldout_accuracy_vs_true_preference" not in reward.summary  # people's true preferences are unknown
    for params, message in [({"source": "human"}, "params.db: source human reads people's choices"),
                            ({"source": "human", "db": str(tmp_path / "nope")}, "params.db: no file"),
                            ({"source": "people"}, "params.source must be 'users'")]:
        with pytest.raises(RewardLookupError, match=re.escape(f"reward 'learned_reward_model': {message}")):
            check_reward_params("learned_reward_model", params)


def test_docstring_examples_run():
    import doctest

    import envs.people
    import envs.population

    for module in (envs.people, envs.population):
        assert doctest.testmod(module, raise_on_error=False).failed == 0


def test_a_new_judgement_changes_the_base_evaluation_cache_key(tmp_path):
    from experiments import eval_cache

    db = build_feedback_db(tmp_path / "feedback.sqlite")
    config = ExperimentConfig.model_validate({"policy": {"model": "tiny-random"}, "users": {"from_feedback": str(db)}})
    before = eval_cache.cache_key(config)
    assert eval_cache.cache_key(config) == before
    with open_store(db) as store:
        task = store.add_task("Write a note.", person_id=1)
        left, right = store.add_reply(task, CONCISE, "Short."), store.add_reply(task, VERBOSE, "Long.")
        store.record_judgement(task, 1, left, right, "left")
    assert eval_cache.cache_key(config) != before  # the people (their fitted weights) may have changed
