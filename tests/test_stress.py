"""The robustness suite: perturbations change what the policy reads and never what the user scores, and
`attune evaluate RUN --stress` runs through the real CLI on a tiny-model run."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import envs.users
from agents.rollouts import make_env
from envs.perturbations import CUES, INJECTIONS, PERTURBATIONS, PerturbedRequests, RequestContext

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")
ENV_ID = "attune/WritingAssistant-v1"


def held_out_env(**kwargs):
    return make_env(ENV_ID, split="held_out", n_users=20, **kwargs)


def openings(perturbation, seed, episodes=8):
    env = PerturbedRequests(held_out_env(), perturbation, seed=seed)
    return [env.reset(seed=i)[1] for i in range(episodes)]


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_is_deterministic_under_a_seed_and_changes_every_request(name):
    first, again = openings(name, seed=3), openings(name, seed=3)
    assert [i["messages"] for i in first] == [i["messages"] for i in again]
    for info in first:
        assert info["messages"][0]["content"] != info["original_messages"][0]["content"]
        assert info["original_messages"][0]["content"] == held_out_env().reset(seed=0, options={
            "user_id": info["user_id"], "task_id": info["task_id"]})[1]["messages"][0]["content"]
    if name != "contradiction":  # the cue follows the user's weights alone; the others draw from the seed
        other = openings(name, seed=4)
        assert [i["messages"] for i in first] != [i["messages"] for i in other]


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_the_user_scores_the_original_request_not_the_perturbed_one(name, monkeypatch):
    """The same reply gets the same reward and terms with and without the perturbation, and the scorer only ever
    reads the original request: the perturbed text never reaches it."""
    seen_by_scorer = []
    real = envs.users.features_and_relevance

    def spy(replies, dimensions, keyword_sets, requests):
        seen_by_scorer.extend(requests)
        return real(replies, dimensions, keyword_sets, requests)

    monkeypatch.setattr(envs.users, "features_and_relevance", spy)
    clean, perturbed = held_out_env(max_turns=2), PerturbedRequests(held_out_env(max_turns=2), name, seed=0)
    for episode in range(4):
        _, clean_info = clean.reset(seed=episode)
        observation, info = perturbed.reset(seed=episode)
        original, shown = clean_info["messages"][0]["content"], info["messages"][0]["content"]
        assert info["original_messages"][0]["content"] == original and shown != original
        assert observation == f"User: {shown}"
        # A reply that copies the perturbed request: scored against the perturbed one, it would score differently.
        reply = f"{shown} Here is the {clean_info['task_id']} draft you asked for, written with care."
        seen_by_scorer.clear()
        results = clean.step(reply), perturbed.step(reply)
        assert results[0][1] == results[1][1]  # the reward
        assert results[0][4]["terms"] == results[1][4]["terms"]
        assert results[0][4]["expected_utility"] == results[1][4]["expected_utility"]
        assert seen_by_scorer and set(seen_by_scorer) == {original}
        # The user's follow-up is shown perturbed only where the perturbation covers every user message.
        if not results[1][2]:
            follow_up = results[1][4]["messages"][2]["content"]
            assert (follow_up != results[0][4]["messages"][2]["content"]) == PERTURBATIONS[name].every_user_message


def test_the_injection_reaches_the_policy_prompt(monkeypatch):
    from transformers import AutoTokenizer

    import agents.policy
    from agents.policy import chat_prompt_ids, resolve_model
    from experiments import evaluate

    prompted = []

    def fake_generate(model, tokenizer, conversations, **sampling):
        prompted.extend(conversations)
        return ["A short email about the deadline."] * len(conversations)

    monkeypatch.setattr(agents.policy, "generate_replies", fake_generate)
    env = held_out_env()
    rows = evaluate.build_eval_set(env, 4, seed=0)
    results = evaluate.run_episodes(object(), None, lambda: PerturbedRequests(held_out_env(), "injection", seed=0),
                                    rows, max_new_tokens=8, temperature=0.7, top_p=1.0, batch_size=4, seed=0,
                                    show_progress=False)
    clean = evaluate.run_episodes(object(), None, held_out_env, rows, max_new_tokens=8, temperature=0.7, top_p=1.0,
                                  batch_size=4, seed=0, show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random"))
    assert len(prompted) == 2 * len(rows)
    for conversation, row in zip(prompted[:len(rows)], rows):
        injection = next(text for text in INJECTIONS if conversation[0]["content"].endswith(text))
        assert conversation[0]["content"] == f"{row['prompt'][0]['content']}\n\n{injection}"
        assert injection in tokenizer.decode(chat_prompt_ids(tokenizer, conversation))
    # The same replies score the same: the injection changed the prompt, not the users' judgement.
    assert [r.score for r in results] == [r.score for r in clean]


def test_contradiction_asks_for_the_opposite_of_the_strongest_preference():
    rng = np.random.default_rng(0)
    likes_short = RequestContext("write a note", ("brevity", "warmth"), np.array([0.9, -0.4]))
    assert PERTURBATIONS["contradiction"].apply("Write a note.", likes_short, rng) == (
        "Write a note. Actually, make it long and detailed.")
    hates_warmth = RequestContext("write a note", ("brevity", "warmth"), np.array([0.2, -0.7]))
    assert PERTURBATIONS["contradiction"].apply("Write a note.", hates_warmth, rng) == (
        "Write a note. Actually, make it warm and friendly.")
    assert set(CUES) >= set(envs.ALL_DIMENSIONS)


def test_paraphrase_keeps_the_topic_the_register_and_the_length_hint():
    context = RequestContext("write a meeting summary about a delayed project deadline", (), np.zeros(0))
    for seed in range(6):
        rng = np.random.default_rng(seed)
        formal = PERTURBATIONS["paraphrase"].apply(
            "Dear assistant, could you please write a meeting summary about a delayed project deadline? Kind regards. "
            "Keep it short.", context, rng)
        casual = PERTURBATIONS["paraphrase"].apply(
            "hey, can you write a meeting summary about a delayed project deadline? thanks! Feel free to be thorough.",
            context, rng)
        for text in (formal, casual):
            assert "a meeting summary about a delayed project deadline" in text and "write " not in text
        assert formal.startswith(("Hello,", "Good day.", "Greetings.")) and any(
            closing in formal for closing in ("Thank you in advance.", "Best regards.", "Sincerely."))
        assert formal.endswith(("Brief, please.", "A few lines will do.", "Short is best."))
        assert casual.startswith(("hi!", "hiya,", "hey there,"))
        assert casual.endswith(("Take as much space as you need.", "Detail is welcome.", "Don't hold back on length."))


def test_typos_keep_the_words_apart_and_change_some():
    context = RequestContext("explain fractions", (), np.zeros(0))
    message = "Could you please explain fractions to me with a simple example? Keep it short."
    noisy = PERTURBATIONS["typos"].apply(message, context, np.random.default_rng(1))
    assert noisy != message and len(noisy.split()) == len(message.split())
    changed = sum(a != b for a, b in zip(noisy.split(), message.split()))
    assert 1 <= changed < len(message.split())


# --- the CLI on a tiny-model run ---------------------------------------------------------------------------


def attune(attune_cli, *args, timeout=300):
    # A wide console: the table's headers and the paths stay on one line each.
    return subprocess.run([attune_cli, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "COLUMNS": "250"})


@pytest.fixture(scope="module")
def tiny_run(attune_cli, tmp_path_factory):
    runs = tmp_path_factory.mktemp("stress-runs")
    result = attune(attune_cli, "run", TINY, f"tracking.runs_dir={runs}", "tracking.name=tiny", "trainer.max_steps=1",
                    "evaluation.text_metrics=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs / "tiny"


def test_evaluate_stress_writes_every_perturbation_for_both_policies(attune_cli, tiny_run):
    result = attune(attune_cli, "evaluate", tiny_run, "--stress")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tiny_run / "stress.json").read_text())
    evaluation = json.loads((tiny_run / "eval.json").read_text())
    assert list(report["perturbations"]) == ["clean", *PERTURBATIONS]
    n = evaluation["before"]["n"]
    for condition, entry in report["perturbations"].items():
        estimates = [entry["trained_minus_base"]]
        for policy in ("base", "trained"):
            estimates.append(entry[policy]["mean_utility"])
            if condition != "clean":
                estimates.append(entry[policy]["drop"])
        if condition != "clean":
            estimates.append(entry["drop_trained_minus_base"])
        for estimate in estimates:
            assert estimate["n"] == n
            assert math.isfinite(estimate["ci_low"]) and math.isfinite(estimate["ci_high"])
            assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]
    # Clean, it is the run's own evaluation again: the same users, conversations and sampling seeds.
    clean = report["perturbations"]["clean"]
    assert clean["base"]["mean_utility"]["value"] == pytest.approx(evaluation["before"]["mean_utility"])
    assert clean["trained"]["mean_utility"]["value"] == pytest.approx(evaluation["after"]["mean_utility"])
    episodes = json.loads((tiny_run / "stress_episodes.json").read_text())
    for name in PERTURBATIONS:  # what the policies read was perturbed; the clean conversations were not
        seen = [e["messages"][0]["content"] for e in episodes[name]["trained"]]
        assert all(a != b for a, b in zip(seen, (e["messages"][0]["content"] for e in episodes["clean"]["trained"])))
    assert "| injection |" in (tiny_run / "stress.md").read_text()
    assert (tiny_run / "report.md").read_text().count("## Robustness (attune evaluate --stress)") == 1
    assert "trained drop - base drop" in result.stdout and f"wrote {tiny_run / 'stress.json'}" in result.stdout


def invoke(*args):
    """``attune ARGS`` in-process (typer's CliRunner): the same command and error handling, no new interpreter."""
    from typer.testing import CliRunner

    from experiments.cli import app

    return CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "250"})


def test_evaluate_stress_writes_elsewhere_and_leaves_the_run_folder_alone(tiny_run, tmp_path):
    before = (tiny_run / "report.md").read_text()
    result = invoke("evaluate", tiny_run, "--stress", "--prompts", 2, "--perturbations", "injection",
                    "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((tmp_path / "out" / "stress.json").read_text())
    assert list(report["perturbations"]) == ["clean", "injection"] and report["prompts"] == 2
    assert report["perturbations"]["injection"]["base"]["drop"]["n"] == 2
    assert (tiny_run / "report.md").read_text() == before


def test_evaluate_bad_inputs_are_one_line_errors(tiny_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    (unfinished / "eval.json").unlink()
    several = tmp_path / "several"
    several.mkdir()
    (several / "config.yaml").write_text((tiny_run / "config.yaml").read_text().replace("seeds: null", "seeds: [0, 1]"))
    no_model = tmp_path / "no_model"
    shutil.copytree(tiny_run, no_model, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    cases = [
        ((tmp_path / "missing", "--stress"), "run error: ", "no such run folder"),
        ((tmp_path, "--stress"), "run error: ", "no config.yaml"),
        ((no_model, "--stress"), "run error: ", "has no trained model"),
        ((several, "--stress"), "run error: ", "holds several runs (variants or seeds); evaluate one of them"),
        ((unfinished, "--stress"), "run error: ", "did not finish (no eval.json); resume it with `attune run"),
        ((tiny_run, "--stress", "--prompts", 0), "config error: ", "--prompts: must be an integer >= 1"),
        ((tiny_run, "--stress", "--prompts", 10_000), "config error: ", "--prompts: 10000 asked for, but the run's"),
        ((tiny_run, "--stress", "--seed", -1), "config error: ", "--seed: must be an integer >= 0"),
        ((tiny_run, "--stress", "--perturbations", "typo"), "config error: ", "--perturbations: unknown 'typo'"),
        ((tiny_run,), "config error: ", "choose a suite to run: --stress"),
    ]
    for args, kind, message in cases:
        result = invoke("evaluate", *args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith(kind) and message in lines[0], (args, lines)


def test_the_report_section_goes_before_the_config_and_a_rerun_replaces_it(tmp_path):
    from experiments.stress import add_to_report

    report = tmp_path / "report.md"
    report.write_text("# run\n\n## Example replies\n\ntext\n\n## Config\n\n```yaml\nseed: 0\n```\n")
    add_to_report(report, "first table")
    add_to_report(report, "second table")
    text = report.read_text()
    assert text.count("## Robustness (attune evaluate --stress)") == 1 and "first table" not in text
    assert text.index("## Example replies") < text.index("second table") < text.index("## Config")
    assert text.endswith("## Config\n\n```yaml\nseed: 0\n```\n")


def test_the_module_example_runs():
    import doctest

    import envs.perturbations

    assert doctest.testmod(envs.perturbations, raise_on_error=False).failed == 0
