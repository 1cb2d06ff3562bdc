"""PII: the simulated users' fake personal data, the redactor, and a real run whose files carry none of it."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from envs.discrete import RESPONSE_STYLES, render_style
from envs.personal_data import PERSONAL_FIELDS, PERSONAL_NOTES
from envs.population import UserPopulation
from envs.users import HISTORY_REQUESTS, HISTORY_SAMPLES
from experiments import redact

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
SCENARIOS = ("writing", "support", "tutor", "health")


def fingerprint(population: UserPopulation) -> str:
    """Everything a population drew before users had personal data: ids, groups, weights, traits, the history's
    requests and writing samples, the held-out split and the tasks."""
    rows = [[u.user_id, u.group, dict(u.preference_weights), dict(u.traits), list(u.history[:7])] for u in population.users]
    rows.append(sorted(u.user_id for u in population.held_out_users))
    rows.append([t.task_id for t in population.tasks])
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


# Computed with the code before users had personal data (commit f74659e): adding it moved no other draw.
@pytest.mark.parametrize("scenario, n_users, seed, alpha, expected", [
    ("writing", 40, 0, None, "bf33a8eb8b23865a"),
    ("support", 30, 3, None, "de3de5b50cebd326"),
    ("tutor", 25, 1, None, "f46dae33de783cb9"),
    ("health", 20, 7, None, "672841fad0d05c20"),
    ("writing", 30, 2, 0.3, "ce144d36c5495761"),
])
def test_personal_data_leaves_every_other_draw_of_the_population_unchanged(scenario, n_users, seed, alpha, expected):
    assert fingerprint(UserPopulation(scenario, n_users=n_users, seed=seed, dirichlet_alpha=alpha)) == expected


def test_every_user_has_seeded_personal_data_in_their_history_notes():
    population = UserPopulation("writing", n_users=30, seed=5)
    again = UserPopulation("writing", n_users=30, seed=5)
    other_seed = UserPopulation("writing", n_users=30, seed=6)
    assert [u.personal_data for u in population.users] == [u.personal_data for u in again.users]
    assert len({u.name for u in population.users}) == len(population.users)  # one name per user
    assert {u.name for u in population.users}.isdisjoint(u.name for u in other_seed.users)
    for user in population.users:
        assert set(user.personal_data) == set(PERSONAL_FIELDS) and all(user.personal_data.values())
        assert re.fullmatch(r"\S+@\S+\.\w+", user.personal_data["email"])
        notes = user.history[HISTORY_REQUESTS + HISTORY_SAMPLES:]
        assert len(notes) == PERSONAL_NOTES and user.history[:-PERSONAL_NOTES] == user.style_texts
        for value in user.personal_data.values():
            assert any(value in note for note in notes)
        # The notes are history, not writing samples: fine-tuning and BLEU pairs are unchanged.
        assert [sample for _, sample in user.request_sample_pairs()] == list(user.history[HISTORY_REQUESTS:HISTORY_REQUESTS + 3])
        assert not any(value in text for value in user.personal_data.values() for text in user.style_texts)


@pytest.fixture(scope="module")
def users():
    population = [UserPopulation(s, n_users=60, seed=k) for k, s in enumerate(SCENARIOS)]
    users = [u for p in population for u in p.users]
    redact.configure(True, [u.name for u in users])
    return population, users


def test_the_redactor_catches_every_piece_of_seeded_personal_data(users):
    _, people = users
    leaks = []
    for user in people:
        for note in user.history[-PERSONAL_NOTES:]:
            out = redact.redact(note)
            leaks += [(field, out) for field, value in user.personal_data.items() if value in out]
            if re.search(r"\d", out):  # no house number, zip, phone or card digit survives
                leaks.append(("digits", out))
            if user.name.split()[0] in out.split():
                leaks.append(("first name", out))
    assert not leaks, leaks[:5]
    # What replaced it says what it was.
    note = redact.redact(people[0].history[-PERSONAL_NOTES])
    for kind in ("<PERSON>", "<STREET_ADDRESS>", "<EMAIL_ADDRESS>", "<PHONE_NUMBER>"):
        assert kind in note
    assert "<CREDIT_CARD>" in redact.redact(people[0].history[-1])
    # Names in any case and spacing; formats people type the same data in.
    name = people[0].name
    first, last = name.split()
    assert redact.redact(f"thanks {first.lower()}  {last.upper()}!") == "thanks <PERSON>!"
    assert redact.redact("call 555.201.7788 ext. 12 or +1 (555) 201-7788") == "call <PHONE_NUMBER> or <PHONE_NUMBER>"
    assert redact.redact("card 4111 1111 1111 1111.") == "card <CREDIT_CARD>."
    assert redact.redact("card 4111 1111 1111 1112.") == "card 4111 1111 1111 1112."  # fails the Luhn check


def test_the_redactor_leaves_texts_without_personal_data_alone(users):
    """No false positives on what runs write: the users' style texts, replies in every response style, numbers."""
    populations, people = users
    clean = {t for u in people for t in u.style_texts}
    clean |= {render_style(style, task) for p in populations for task in p.tasks for style in RESPONSE_STYLES}
    clean |= {"mean user reward -1.446 ± 0.472", "20/32 = 0.62 [0.45, 0.77]", "4.21 [3.78, 4.69]", "lr 2e-05 at step 1200",
              "Call 911 in an emergency.", "Sleep 7-9 hours a night and walk 10,000 steps on 3 Main points.",
              "runs/quickstart__WritingAssistant-v1__s0__20261129-044343", "attune/WritingAssistant-v1",
              "Version 2.13.0 of 2026-11-29 (build 4412)", "Email me at the office.", "a@b"}
    changed = {text: redact.redact(text) for text in clean if redact.redact(text) != text}
    assert not changed, list(changed.items())[:5]


def test_redact_data_redacts_strings_only_and_off_means_off(users):
    _, people = users
    user = people[0]
    data = {"user_id": user.user_id, "score": 0.5, "seed": 2147483647, "replies": [user.history[-1]], "n": [1, 2]}
    out = redact.redact_data(data)
    assert out["score"] == 0.5 and out["seed"] == 2147483647 and out["n"] == [1, 2] and out["user_id"] == user.user_id
    assert user.personal_data["card_number"] not in json.dumps(out) and "<CREDIT_CARD>" in out["replies"][0]
    try:
        redact.configure(False)
        assert redact.redact_data(data) == data
    finally:
        redact.configure(True)


def test_privacy_redact_is_validated_at_the_door():
    from experiments.config import ConfigError
    from experiments.config_files import load_config

    assert load_config(TINY, ["privacy.redact=false"]).privacy.redact is False
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["privacy.redact=perhaps"])
    assert str(info.value).startswith("privacy.redact: Input should be a valid boolean") and "\n" not in str(info.value)


# -- a real run: no file it writes holds any seeded personal data ------------------------------------------------


def seeded_values() -> set[str]:
    """Every piece of personal data seeded into the run's users (tiny.yaml: 20 writing-assistant users, seed 0)."""
    population = UserPopulation("writing", n_users=20, seed=0)
    return {v for u in population.users for v in u.personal_data.values()}


def files_holding(folders: list[Path], values: set[str]) -> dict[str, list[str]]:
    """Each file under ``folders`` (read as bytes: text, JSON, W&B's binary .wandb, images) that holds a value."""
    encoded = {v: v.encode() for v in values}
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                hits = [v for v, b in encoded.items() if b in data]
                if hits:
                    found[str(path)] = hits
    return found


def run_prompting(attune_cli, tmp_path, *overrides):
    """The tiny model, prompted with every past text of the user (retrieval_k: all of the history, notes included),
    through the installed CLI with W&B offline: the users' personal data reaches the prompts and the episodes."""
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ATTUNE_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [attune_cli, "run", TINY, f"tracking.runs_dir={tmp_path / 'runs'}", "tracking.wandb=offline", "method=prompting",
         "trainer={}", "method_settings={retrieval_k: 9}", *overrides],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir, cache, result


def test_no_file_of_a_run_holds_the_users_personal_data(attune_cli, tmp_path):
    run_dir, cache, result = run_prompting(attune_cli, tmp_path)
    values = seeded_values()
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))  # W&B's own files are part of the check
    assert (cache / "evaluations").is_dir()
    assert files_holding([run_dir, cache], values) == {}
    assert not [v for v in values if v in result.stdout + result.stderr]
    # The check can fail: the users' notes did reach the run's texts, and were replaced there.
    episodes = (run_dir / "episodes.json").read_text()
    for kind in ("<PERSON>", "<EMAIL_ADDRESS>", "<PHONE_NUMBER>", "<STREET_ADDRESS>", "<CREDIT_CARD>"):
        assert kind in episodes


@pytest.mark.slow
def test_without_redaction_the_same_run_leaks_the_personal_data(attune_cli, tmp_path):
    """``privacy.redact=false`` (debugging only): the check above finds the seeded data in the run's files."""
    run_dir, cache, _ = run_prompting(attune_cli, tmp_path, "privacy.redact=false")
    leaked = files_holding([run_dir, cache], seeded_values())
    assert str(run_dir / "episodes.json") in leaked and str(run_dir / "checkpoints" / "final" / "prompting.json") in leaked
