"""`attune benchmark`: the maxmin reward, shape-claim evaluation and the table, and the pluralistic suite end to end."""

import json
from pathlib import Path

import pytest

from envs.population import UserPopulation
from envs.scenarios import UserGroup
from rewards import build_reward

REPO = Path(__file__).resolve().parents[1]
# Answers write-000 in its own sentences (relevance 1, see test_rewards.py): only brevity differs by group.
REPLY_14_WORDS = "The project deadline moves to Friday: a supplier delay held back the new parts."
REPLY_30_WORDS = ("Hi Sam, the project deadline moves to Friday because of a supplier delay. Testing starts on "
                  "Monday and the release follows next week, so please plan your time around it.")


def test_maxmin_is_the_worst_groups_utility():
    # spread 0: every user's weights are the group centre. 14 words: brevity feature 1 / (1 + 14/30).
    groups = [UserGroup("brief", 1.0, {"brevity": 1.0}, spread=0.0), UserGroup("verbose", 1.0, {"brevity": -1.0}, spread=0.0)]
    population = UserPopulation("writing", n_users=8, seed=0, groups=groups)
    brief_user = next(u.user_id for u in population.train_users if u.group == "brief")
    reward = build_reward("maxmin", {"noise": 0.0}, population=population)
    short, medium = reward(None, [REPLY_14_WORDS, REPLY_30_WORDS], user_id=[brief_user] * 2, task_id=["write-000"] * 2)
    style = 2 / (1 + 14 / 30) - 1  # the brief group gains it, the verbose group loses it
    assert short == pytest.approx(1.0 - style)  # min(1 + style, 1 - style)
    assert medium == pytest.approx(1.0)  # 30 words: brevity 0.5, no group gains or loses
    # the pooled reward of the same (brief) user is the better of the two groups here, not the worst
    pooled = build_reward("user_feedback", {"feedback": "expected_utility"}, population=population)
    assert pooled(None, [REPLY_14_WORDS], user_id=[brief_user], task_id=["write-000"]) == [pytest.approx(1.0 + style)]


def _cells(bench, table):
    """Cells as aggregate() makes them, from {(arm, metric, level): [seed values]}."""
    from experiments.benchmark_report import aggregate

    trials = []
    for (arm, metric, level), values in table.items():
        for seed, value in enumerate(values):
            trial = next((t for t in trials if t["arm"] == arm and t["levels"] == {"ratio": level} and t["seed"] == seed), None)
            if trial is None:
                trial = {"arm": arm, "levels": {"ratio": level}, "seed": seed, "status": "done", "metrics": {}}
                trials.append(trial)
            trial["metrics"][metric] = value
    return aggregate(bench, trials, {"ratio": ["1:1", "10:1"]})


def test_claims_are_decided_on_seed_means_with_their_numbers():
    from experiments.benchmark_report import evaluate_claim, render_markdown
    from experiments.benchmark_spec import load_benchmark

    bench = load_benchmark("pluralistic")
    arms = [a.name for a in bench.arms]
    table = {}
    for arm in arms:
        for level, (major, minor) in {"1:1": (0.6, 0.6), "10:1": (0.7, 0.4)}.items():
            if arm == "maxmin":
                major, minor = major - 0.05, minor + 0.2
            table[(arm, "win_rate:majority", level)] = [major - 0.01, major + 0.01]
            table[(arm, "win_rate:minority", level)] = [minor - 0.01, minor + 0.01]
            table[(arm, "worst_group_win_rate", level)] = [min(major, minor)] * 2
            table[(arm, "majority_minority_gap", level)] = [major - minor] * 2
            table[(arm, "win_rate", level)] = [(major + minor) / 2] * 2
    cells = _cells(bench, table)
    levels = {"ratio": ["1:1", "10:1"]}
    claims = {c.id: evaluate_claim(c, cells, levels) for c in bench.claims}
    # pooled minority < majority where it is a minority (10:1; 4:1 was not run): 0.4 < 0.7
    assert claims["pooled_fails_minority"]["status"] == "held"
    assert "ratio=10:1" in claims["pooled_fails_minority"]["numbers"] and "1:1" not in claims["pooled_fails_minority"]["numbers"]
    assert claims["pooled_gap_grows"]["status"] == "held"  # 0.0 -> 0.3
    assert "1:1 +0.000 -> 10:1 +0.300" in claims["pooled_gap_grows"]["numbers"]
    assert claims["maxmin_lifts_minority"]["status"] == "held"  # +0.20 >= 0.10
    assert claims["maxmin_lifts_minority"]["values"]["left"] == pytest.approx(0.2)
    assert claims["maxmin_majority_cost_smaller"]["status"] == "held"  # gains 0.20, costs 0.05
    assert claims["maxmin_majority_cost_smaller"]["values"]["right"] == pytest.approx(0.05)
    # equal worst-group win rates: "greater than" does not hold
    assert claims["conditioned_beats_pooled_worst_group"]["status"] == "not held"
    # a cell's mean, IQM and seeds
    cell = next(c for c in cells if c["arm"] == "pooled" and c["metric"] == "win_rate:minority" and c["levels"]["ratio"] == "10:1")
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(0.4) and cell["mean_ci_low"] < 0.4 < cell["mean_ci_high"]
    result = {"scale": "smoke", "command": "attune benchmark pluralistic", "seeds": [0, 1], "levels": levels,
              "model": "tiny-random", "seconds": 1.0, "eval_conversations": 24, "cells": cells,
              "claims": list(claims.values()), "trials": []}
    text = render_markdown(bench, result)
    assert "| pooled | 10:1 | 0.400 [" in text
    assert "4 of 5 held at this scale" in text and "| **not held** |" in text
    assert "> 33 % win-rate improvement for the minority group" in text  # the published column


def test_a_claim_with_missing_values_is_not_evaluated_and_bad_benchmarks_are_one_line(tmp_path):
    from experiments.benchmark_report import evaluate_claim
    from experiments.benchmark_spec import load_benchmark
    from experiments.config import ConfigError

    bench = load_benchmark("pluralistic")
    cells = _cells(bench, {("pooled", "win_rate:minority", "1:1"): [0.5, 0.5]})
    claim = next(c for c in bench.claims if c.id == "maxmin_lifts_minority")
    assert evaluate_claim(claim, cells, {"ratio": ["1:1", "10:1"]})["status"] == "not evaluated"
    with pytest.raises(ConfigError, match="no such benchmark; bundled: .*pluralistic"):
        load_benchmark("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: {}\narms: [{name: a}]\nmetrics: [accuracy]\n")
    with pytest.raises(ConfigError, match="metrics: unknown metric 'accuracy'"):
        load_benchmark(str(bad))


def test_trial_metrics_from_a_run_folder_per_group_worst_group_and_gap(tmp_path):
    """A hand-made run folder: the trained policy answers briefly, the base policy at length; the brief group
    (the majority, share 3) prefers the trained reply, the verbose group the base one."""
    from experiments.benchmark_metrics import trial_metrics
    from experiments.config_files import dump_config, load_config
    from experiments.runner import _population

    config = load_config(REPO / "experiments" / "configs" / "tiny.yaml", [
        "users.n_users=16", "env.noise=0.0",
        "users.groups=[{name: brief, share: 3, preference_center: {brevity: 1.0}, spread: 0.0}, "
        "{name: verbose, share: 1, preference_center: {brevity: -1.0}, spread: 0.0}]"])
    population = _population(config)
    users = [u for u in population.held_out_users]
    assert {u.group for u in users} == {"brief", "verbose"}

    def episode(user, reply):
        return {"user_id": user.user_id, "group": user.group, "task_id": "write-000", "replies": [reply]}

    (tmp_path / "config.yaml").write_text(dump_config(config))
    (tmp_path / "episodes.json").write_text(json.dumps({"before": [episode(u, REPLY_30_WORDS) for u in users],
                                                        "after": [episode(u, REPLY_14_WORDS) for u in users]}))
    by_group = {"brief": {"mean": 1.2}, "verbose": {"mean": 0.7}}
    (tmp_path / "eval.json").write_text(json.dumps({"after": {"mean_utility": 1.0, "by_group": by_group},
                                                    "comparison": {"win_rate": 0.6, "improvement": 0.1}}))
    names = ["win_rate", "win_rate:brief", "win_rate:verbose", "worst_group_win_rate", "majority_minority_gap",
             "mean_utility:verbose", "improvement"]
    out = trial_metrics(tmp_path, names)
    assert out["win_rate"] == 0.6 and out["improvement"] == 0.1 and out["mean_utility:verbose"] == 0.7  # eval.json's
    user = population.simulated_user(users[0].user_id, noise=0.0)
    task = population.task("write-000")
    short, long = user.utility([REPLY_14_WORDS, REPLY_30_WORDS], [task, task])
    p_brief = float(user.choice_probability(short, long)) if users[0].group == "brief" else 1 - float(user.choice_probability(short, long))
    assert out["win_rate:brief"] == pytest.approx(p_brief) and p_brief > 0.5
    assert out["win_rate:verbose"] == pytest.approx(1 - p_brief)  # the mirror image: weights -1 instead of +1
    assert out["worst_group_win_rate"] == pytest.approx(1 - p_brief)
    assert out["majority_minority_gap"] == pytest.approx(2 * p_brief - 1)
    assert out["n:brief"] + out["n:verbose"] == len(users)


@pytest.mark.slow
def test_pluralistic_smoke_through_the_cli(benchmark_smoke):
    folder, data = benchmark_smoke("pluralistic")
    assert len(data["trials"]) == 3 * 2 and all(t["status"] == "done" for t in data["trials"])  # 3 arms x 2 ratios x 1 seed
    assert {t["arm"] for t in data["trials"]} == {"pooled", "maxmin", "group_conditioned"}
    assert all(Path(t["run_dir"], "eval.json").is_file() for t in data["trials"])
    assert {c["id"] for c in data["claims"]} == {"pooled_fails_minority", "pooled_gap_grows", "maxmin_lifts_minority",
                                                  "maxmin_majority_cost_smaller", "conditioned_beats_pooled_worst_group"}
    for claim in data["claims"]:
        assert claim["status"] in ("held", "not held"), claim
        assert any(ch.isdigit() for ch in claim["numbers"])
    text = (folder / "benchmark.md").read_text()
    assert "## Shape claims" in text and "| published |" in text
    assert (folder / "plots" / "benchmark.png").stat().st_size > 0


def test_group_tag_shows_the_users_group_in_the_opening_message_only():
    import gymnasium as gym

    tagged = gym.make("attune/WritingAssistant-v1", group_tag=True).unwrapped
    plain = gym.make("attune/WritingAssistant-v1").unwrapped
    _, info = tagged.reset(seed=3)
    _, plain_info = plain.reset(seed=3)
    opening = info["messages"][0]["content"]
    assert opening == f"[group: {info['group']}] " + plain_info["messages"][0]["content"]
    # the user's judgement is the same: a tag is context for the policy, not a change of the user
    assert tagged.step("A reply.")[1] == plain.step("A reply.")[1]


def test_an_unknown_benchmark_is_one_line_and_exit_code_2():
    from typer.testing import CliRunner

    from experiments.cli import app

    result = CliRunner().invoke(app, ["benchmark", "nope", "--scale", "smoke"])
    assert result.exit_code == 2
    assert "config error: benchmark 'nope': no such benchmark; bundled:" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["benchmark", "pluralistic", "--scale", "huge"])
    assert result.exit_code == 2 and "--scale: 'huge' is not a scale of benchmark pluralistic" in " ".join(result.output.split())


# Two training-free arms on the tiny model, two seeds: four short trials, one at a time.
RESUME_BENCHMARK = """
name: resume
title: "resume check"
base:
  experiment: resume
  seed: 0
  threads: 1
  env: {id: attune/WritingAssistant-v1, max_turns: 1}
  users: {n_users: 20, seed: 0}
  policy: {model: tiny-random}
  method: prompting
  method_settings: {retrieval_k: 0}
  rewards: [{name: user_feedback}]
  trainer: {}
  evaluation: {prompts: 2, max_new_tokens: 4, batch_size: 2, text_metrics: false}
arms:
  - {name: stated, set: {method_settings.profile: stated}}
  - {name: plain, set: {method_settings.profile: none}}
seeds: [0, 1]
seed_key: users.seed
scales:
  smoke: {max_concurrent: 1}
metrics: [win_rate, mean_utility]
claims:
  - {id: stated_beats_plain, claim: "stating the preferences wins more often", left: {arm: stated, metric: win_rate},
     op: ">", right: {arm: plain, metric: win_rate}}
"""


def test_a_sweep_killed_before_tune_saved_its_state_starts_over(tmp_path):
    """Tune writes tune/tuner.pkl, then its experiment state: a kill in between (seen: an empty tuner.pkl) left a
    benchmark arm that --resume could not restore and a rerun without it refused."""
    from experiments.sweep import prepare_resume

    unsaved = tmp_path / "unsaved"
    (unsaved / "tune").mkdir(parents=True)
    (unsaved / "tune" / "tuner.pkl").write_bytes(b"")
    (unsaved / "trials" / "t_00000").mkdir(parents=True)
    assert prepare_resume(unsaved) is False
    assert not (unsaved / "tune").exists() and not list((unsaved / "trials").iterdir())  # the way is clear...
    assert (unsaved / "interrupted" / "tune-1" / "tuner.pkl").is_file()  # ...and nothing is deleted
    assert (unsaved / "interrupted" / "t_00000-1").is_dir()

    saved = tmp_path / "saved"
    (saved / "tune").mkdir(parents=True)
    (saved / "tune" / "tuner.pkl").write_bytes(b"state")
    (saved / "tune" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert prepare_resume(saved) is True and (saved / "tune" / "tuner.pkl").read_bytes() == b"state"
    assert not (saved / "interrupted").exists()


def _run_until(args, env, done, deadline_s=600):
    """Start ``attune benchmark`` in its own process group and SIGKILL the whole group once ``done()``."""
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env,
                               start_new_session=True)
    deadline = time.time() + deadline_s
    try:
        while time.time() < deadline and not done() and process.poll() is None:
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode


@pytest.mark.slow
def test_killed_benchmark_resumes_running_every_trial_exactly_once(attune_cli, tmp_path):
    import os
    import subprocess

    spec = tmp_path / "resume.yaml"
    spec.write_text(RESUME_BENCHMARK)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_TMPDIR": f"/tmp/ray-bres-{os.getpid()}"}
    args = [attune_cli, "benchmark", str(spec), "--scale", "smoke", f"tracking.runs_dir={tmp_path / 'runs'}"]
    folder = tmp_path / "runs" / "benchmark-resume-smoke"
    arms = folder / "arms"

    # 1. Killed as the first arm's Tune folder appears (before or just after Tune saved its state).
    assert _run_until(args, env, lambda: (arms / "stated" / "tune").exists()) == -9
    assert not list(arms.glob("*/trials/*/eval.json"))
    # 2. Resumed, and killed the moment the second arm's first trial has written its results: the first arm
    # has ended, the second is half-way (its finished trial not yet known to Tune, its other trial not started).
    assert _run_until(args + ["--resume"], env, lambda: bool(list(arms.glob("plain/trials/*/eval.json")))) == -9
    finished = {p.parent.relative_to(arms): p.stat().st_mtime_ns for p in arms.glob("*/trials/*/eval.json")}
    assert sorted(str(p.parent) for p in finished) == ["plain/trials", "stated/trials", "stated/trials"], finished
    assert not (folder / "benchmark.json").exists()

    refused = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (f"config error: benchmark: {folder} exists; continue it with --resume, "
                                            "or set tracking.name=... to start another"), lines

    # 3. Resumed to the end.
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((folder / "benchmark.json").read_text())
    trials = data["trials"]
    assert sorted((t["arm"], t["seed"]) for t in trials) == [("plain", 0), ("plain", 1), ("stated", 0), ("stated", 1)]
    assert all(t["status"] == "done" and set(t["metrics"]) == {"win_rate", "mean_utility"} for t in trials), trials
    for arm in ("stated", "plain"):
        folders = sorted(p.name for p in (arms / arm / "trials").iterdir())
        assert folders == sorted(Path(t["run_dir"]).name for t in trials if t["arm"] == arm)  # no reruns elsewhere
        cut_short = [p.name for p in (arms / arm).glob("interrupted/*") if not p.name.startswith("tune-")]
        assert cut_short == []  # every kill came between trials: none was started over
        for name in folders:
            assert len(list((arms / arm / "trials" / name / "wandb").glob("offline-run-*"))) == 1
        assert len(list((arms / arm / "wandb").glob("offline-run-*"))) == 1  # the arm's summary, logged once
    for path, mtime in finished.items():
        assert (arms / path / "eval.json").stat().st_mtime_ns == mtime  # a finished trial never ran again
    (claim,) = data["claims"]
    assert claim["id"] == "stated_beats_plain" and claim["status"] in ("held", "not held") and claim["numbers"]
    text = (folder / "benchmark.md").read_text()
    assert "4 trials (4 finished; " in text and ": arms stated, plain x seeds [0, 1]." in text  # no factors here
    assert f"| stating the preferences wins more often | **{claim['status']}** |" in text


def test_a_partial_report_summarizes_the_finished_trials_and_runs_nothing(tmp_path):
    """--partial on a benchmark with 3 of its 4 trials finished (hand-made run folders, one half-written):
    benchmark.md says so, the cells count their finished seeds, the claim is evaluated on them; no Ray, no run."""
    import yaml
    from typer.testing import CliRunner

    from experiments.cli import app

    spec = tmp_path / "resume.yaml"
    spec.write_text(RESUME_BENCHMARK)
    folder = tmp_path / "runs" / "benchmark-resume-smoke"
    finished = {("stated", 0): 0.7, ("stated", 1): 0.5, ("plain", 0): 0.4}
    for (arm, seed), win_rate in finished.items():
        run = folder / "arms" / arm / "trials" / f"_trainable_{arm}_{seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "users": {"n_users": 20, "seed": seed}}))
        (run / "eval.json").write_text(json.dumps({"after": {"mean_utility": -win_rate},
                                                   "comparison": {"win_rate": win_rate}}))
    unfinished = folder / "arms" / "plain" / "trials" / "_trainable_plain_1"  # killed before its evaluation
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text(yaml.safe_dump({"users": {"seed": 1}}))

    args = ["benchmark", str(spec), "--scale", "smoke", "--partial", f"tracking.runs_dir={tmp_path / 'runs'}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((folder / "benchmark.json").read_text())
    assert data["partial"] == {"finished": 3, "expected": 4}
    assert sorted((t["arm"], t["seed"]) for t in data["trials"]) == sorted(finished)
    stated = next(c for c in data["cells"] if c["arm"] == "stated" and c["metric"] == "win_rate")
    assert stated["n"] == 2 and stated["mean"] == pytest.approx(0.6) and stated["seeds"] == [0, 1]
    claim = data["claims"][0]
    assert claim["status"] == "held" and "0.6" in claim["numbers"] and "0.4" in claim["numbers"]
    text = (folder / "benchmark.md").read_text()
    assert "**Partial report**: 3 of 4 trials have finished" in text
    assert "attune benchmark" in text and "--partial" not in text.split("Rerun with:")[1].splitlines()[2]
    assert not (folder / "arms" / "stated" / "tune").exists()  # nothing ran

    refused = CliRunner().invoke(app, args + ["--resume"])
    assert refused.exit_code == 2 and "--partial runs nothing" in " ".join(refused.output.split())
    empty = CliRunner().invoke(app, ["benchmark", str(spec), "--scale", "smoke", "--partial",
                                     f"tracking.runs_dir={tmp_path / 'elsewhere'}"])
    assert empty.exit_code == 2 and "has no trials yet" in " ".join(empty.output.split())
