"""One seed source per run: named SeedSequence children, no collisions, no global-RNG leaks, same numbers
alone and inside ``variants:``, and rollouts that do not replay their seeds after a resume."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from envs.seeding import derive_seed, derive_seeds, seed_sequence, torch_seeded

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "configs" / "tiny.yaml")


def test_derived_seeds_are_named_children_of_the_run_seed():
    assert derive_seed(7, "evaluation", 3) == derive_seed(7, "evaluation", 3)
    # The same as SeedSequence.spawn would build: the root's entropy with a spawn key.
    child = np.random.SeedSequence(7, spawn_key=(3,))
    assert derive_seed(7, 3) == int(child.generate_state(1, dtype=np.uint32)[0] >> 1)
    assert seed_sequence(7, "a").entropy == 7
    assert 0 <= derive_seed(2**40, "x") < 2**31


def test_offset_schemes_collided_named_streams_do_not():
    # The old schemes: DPO round r sampled with seed + r, its prompts came from seed + 1000 * r + attempt.
    seed = 0
    old_sampling = {seed + r for r in range(3)}
    old_prompts = {seed + 1000 * r + attempt for r in range(3) for attempt in range(64)}
    assert old_sampling & old_prompts  # the collision the issue reported
    sampling = {derive_seed(seed, "dpo-sampling", r) for r in range(3)}
    prompts = {derive_seed(derive_seed(seed, "dpo-prompts", r), "prompt", attempt) for r in range(3) for attempt in range(64)}
    assert not sampling & prompts
    assert len(prompts) == 3 * 64
    assert len(set(derive_seeds(seed, 1000, "episode"))) == 1000


@pytest.mark.parametrize("bad_root", [-1, 1.5, "0", True])
def test_a_bad_root_is_refused(bad_root):
    with pytest.raises(ValueError, match="a run's seed is an integer >= 0"):
        derive_seed(bad_root, "x")


@pytest.mark.parametrize("bad_key", [-1, 1.5, None])
def test_a_bad_key_part_is_refused(bad_key):
    with pytest.raises(ValueError, match="seed key parts are names or integers >= 0"):
        derive_seed(0, "x", bad_key)


def test_torch_seeded_block_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch_seeded(5):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with torch_seeded(5):
        assert torch.equal(torch.rand(3), inside)


def test_generation_is_seeded_per_batch_and_leaves_the_global_rng_alone():
    from agents.policy import generate_replies, load_policy

    model, tokenizer, _ = load_policy("tiny-random")
    conversations = [[{"role": "user", "content": f"write a note number {i}"}] for i in range(3)]

    def sample(seed):
        return generate_replies(model, tokenizer, conversations, max_new_tokens=6, temperature=1.0, top_p=1.0,
                                batch_size=2, seed=seed)

    torch.manual_seed(0)
    expected_next = torch.rand(2)
    torch.manual_seed(0)
    first = sample(11)
    assert torch.equal(torch.rand(2), expected_next), "generation changed the global torch RNG"
    assert sample(11) == first
    assert sample(12) != first


def test_multi_turn_rollout_seeds_follow_the_trainer_step_not_a_counter(monkeypatch):
    import agents.rollouts as rollouts
    from agents.policy import load_policy

    _, tokenizer, _ = load_policy("tiny-random")
    reset_seeds = []

    class RecordingEnv:
        def reset(self, *, seed=None, options=None):
            reset_seeds.append(seed)
            return "", {}

        def step(self, text):
            return "", 1.0, True, False, {"terms": {"relevance": 1.0}, "messages": []}

    reply = tokenizer("hello", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(rollouts, "sample_continuations", lambda model, tok, prompts, **kw: [reply for _ in prompts])
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "user_id": f"u{i}", "task_id": "t"} for i in range(2)]

    def trainer_at(step):
        return SimpleNamespace(
            args=SimpleNamespace(max_completion_length=4, temperature=1.0, top_p=1.0), processing_class=tokenizer,
            accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=None, state=SimpleNamespace(global_step=step),
        )

    prompts = [r["prompt"] for r in rows]
    rollout = rollouts.make_multi_turn_rollout(RecordingEnv, rows, max_turns=1, seed=3)
    for step in (0, 0, 1, 2):
        rollout(prompts, trainer_at(step))
    before_kill = list(reset_seeds)
    assert len(set(before_kill)) == len(before_kill), "every episode gets its own seed"

    # A resumed run builds a fresh rollout function and continues at step 2: it plays step 2's seeds again
    # (that step was not checkpointed), never step 0's.
    reset_seeds.clear()
    resumed = rollouts.make_multi_turn_rollout(RecordingEnv, rows, max_turns=1, seed=3)
    resumed(prompts, trainer_at(2))
    assert reset_seeds == before_kill[-2:]
    assert not set(reset_seeds) & set(before_kill[:-2])


def _evaluation(run_dir: Path) -> dict:
    data = json.loads((run_dir / "eval.json").read_text())
    return {key: data[key] for key in ("before", "after", "comparison")}


def test_a_config_gives_the_same_evaluation_alone_and_as_a_variant(attune_cli, tmp_path):
    """PPO's new value head used to start from whatever the global torch RNG held after earlier variants."""
    common = [TINY, "evaluation.prompts=2", "method=ppo", "trainer={per_device_train_batch_size: 8}"]
    alone = subprocess.run([attune_cli, "run", *common, f"tracking.runs_dir={tmp_path / 'alone'}"],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    variants = ("variants=[{name: first, method: rloo, trainer: {max_steps: 2, per_device_train_batch_size: 4, "
                "num_generations: 2, max_completion_length: 8}}, {name: ppo, method: ppo, trainer: {per_device_train_batch_size: 8}}]")
    both = subprocess.run([attune_cli, "run", *common, f"tracking.runs_dir={tmp_path / 'variants'}", variants],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert both.returncode == 0, both.stdout[-3000:] + both.stderr[-3000:]
    (alone_dir,) = (tmp_path / "alone").iterdir()
    (parent,) = (tmp_path / "variants").iterdir()
    assert _evaluation(parent / "variants" / "ppo") == _evaluation(alone_dir)
