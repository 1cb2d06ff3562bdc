"""The README's examples run as written: in a folder of the user's own, outside the repo."""

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# What makes the README's SmolLM2-sized commands seconds-long here; everything else runs as written.
TINY = ["policy.model=tiny-random", "users.n_users=20", "prompts=8", "evaluation.prompts=2",
        "evaluation.max_new_tokens=8", "evaluation.noise_seeds=0",
        "trainer={max_steps: 2, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}"]


def section(heading: str) -> str:
    return README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def blocks(heading: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(heading), flags=re.S)


def attune_commands(heading: str) -> list[list[str]]:
    lines = [line.split("#")[0].strip() for block in blocks(heading, "bash") for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(".venv/bin/attune ")]


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]


@pytest.fixture
def user_folder(tmp_path):
    """A user's project outside the repo: the README's files (``# name.py`` blocks), the venv and configs."""
    folder = tmp_path / "project"
    (folder / "experiments").mkdir(parents=True)
    (folder / ".venv").symlink_to(REPO / ".venv")
    (folder / "experiments" / "configs").symlink_to(REPO / "experiments" / "configs")
    for heading in ("Compare rewards, and your own reward", "Write your own user or environment"):
        for code in blocks(heading, "python"):
            name = re.match(r"# (\w+\.py)\n", code)
            if name:
                (folder / name.group(1)).write_text(code)
    assert {p.name for p in folder.glob("*.py")} == {"my_envs.py", "my_rewards.py"}
    return folder


def run(folder: Path, command: list[str], *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*command, *extra], cwd=folder, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_your_own_environment_by_hand(user_folder):
    snippet = next(code for code in blocks("Write your own user or environment", "python") if "import my_envs" in code)
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", snippet], cwd=user_folder,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("User: ") and "recipe" in out.lower()
    assert "brevity" in out and ("quick_cooks" in out or "food_lovers" in out)


@pytest.mark.slow
def test_your_own_environment_and_reward_train_sweep_compare_and_rerun(user_folder):
    """The README's commands, verbatim but for a tiny model, on the user's env and reward, from their folder."""
    (run_command,) = attune_commands("Compare rewards, and your own reward")[-1:]
    env_commands = attune_commands("Write your own user or environment")
    assert [c[1] for c in env_commands] == ["run", "sweep", "compare-rewards"]
    env_args = ["env.module=my_envs", "env.id=my/RecipeAssistant-v0"]
    runs = user_folder / "runs"

    # attune run: the user's environment, trained with the user's own reward beside the users' feedback.
    run(user_folder, env_commands[0], *TINY, f"tracking.runs_dir={runs}",
        run_command[-1])  # the README's own-reward list: my_rewards:no_exclamations + user_feedback
    (run_dir,) = runs.iterdir()
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["before"]["n"] == 2
    metrics = (run_dir / "metrics.jsonl").read_text()
    assert "rewards/no_exclamations/mean" in metrics
    # Its saved config reruns as it is, from the same folder.
    saved = run_dir / "config.yaml"
    assert "module: my_envs" in saved.read_text()
    run(user_folder, [".venv/bin/attune", "run", str(saved), f"tracking.runs_dir={user_folder / 'rerun'}"])
    (rerun,) = (user_folder / "rerun").iterdir()
    assert json.loads((rerun / "eval.json").read_text())["before"] == report["before"]

    # attune sweep: two trials on Ray, each importing the user's module in its worker.
    run(user_folder, env_commands[1], *TINY, "sweep.space={}", "sweep.seeds=[0, 1]",
        f"tracking.runs_dir={user_folder / 'sweeps'}")
    results = json.loads(next((user_folder / "sweeps").glob("sweep-*/sweep_results.json")).read_text())
    rows = results if isinstance(results, list) else results["trials"]
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)

    # attune compare-rewards: the user's reward against the users' own feedback, on the user's env.
    variants = ("variants=[{name: users, rewards: [{name: user_feedback}]}, "
                "{name: mine, rewards: [{name: 'my_rewards:no_exclamations'}]}]")
    run(user_folder, env_commands[2], *TINY, variants, f"tracking.runs_dir={user_folder / 'compare'}")
    comparison = json.loads(next((user_folder / "compare").glob("*/reward_comparison.json")).read_text())
    assert len(comparison) == 2


def test_layout_section_names_every_top_level_folder():
    block = re.search(r"```\n(.*?)```", section("Layout"), flags=re.S).group(1)
    listed = {line.split("/")[0] for line in block.splitlines() if re.match(r"\w+/ ", line)}
    folders = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "runs"
               and any(p.rglob("*.py")) or p.name == "docs"}
    folders -= {"build", "wandb"} | {p.name for p in REPO.glob("*.egg-info")}
    assert listed == folders


def run_files_table() -> set[str]:
    """The top-level names the README's run-files table lists (``checkpoints/final/`` -> ``checkpoints``)."""
    cells = re.findall(r"^\| (`[^|]+`) \|", section("Running experiments"), flags=re.M)
    return {name.split("/")[0] for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def test_run_files_table_matches_a_real_run_folder(attune_cli, tmp_path):
    done = subprocess.run([attune_cli, "run", str(REPO / "experiments" / "configs" / "tiny.yaml"),
                           f"tracking.runs_dir={tmp_path}", "evaluation.prompts=2", "trainer.max_steps=1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    assert run_files_table() == {p.name for p in run_dir.iterdir()}
