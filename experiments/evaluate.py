"""Before/after evaluation on held-out users: the same users, prompts and sampling seeds for both policies.

Scores are the users' noise-free hidden utility (the quantity training is meant to raise), averaged over
the policy's turns in an episode. Reported: mean with a 95 % confidence interval (normal approximation),
per-group means (for fairness), the paired improvement with its interval, and the trained policy's win
rate over the base policy by the users' own pairwise choices (Bradley-Terry, seeded).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.policy import generate_replies
from agents.rollouts import build_prompt_dataset
from envs.users import UserPopulation

Z_95 = 1.959963984540054


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (normal approximation; 0 for n < 2)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    if array.size < 2:
        return float(array.mean()), 0.0
    return float(array.mean()), float(Z_95 * array.std(ddof=1) / math.sqrt(array.size))


@dataclasses.dataclass
class EpisodeResult:
    user_id: str
    group: str
    task_id: str
    replies: list[str]
    rewards: list[float]
    expected_utilities: list[float]
    satisfied: bool
    system_prompt: str | None = None

    @property
    def score(self) -> float:
        return float(np.mean(self.expected_utilities))


def build_eval_set(env: Any, n_prompts: int, seed: int) -> list[dict[str, Any]]:
    """Opening turns of held-out users; ``env`` must draw from the ``held_out`` split."""
    if getattr(env, "split", "held_out") != "held_out":
        raise ValueError("evaluation must use an environment on the held-out split")
    return build_prompt_dataset(env, n_prompts, seed=seed)


def run_episodes(
    policy: Any,
    tokenizer: Any,
    env_factory: Callable[[], Any],
    rows: list[dict[str, Any]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    description: str = "evaluating",
) -> list[EpisodeResult]:
    """Play one episode per row with the policy; all rows advance turn by turn in batches.

    ``policy`` is a model or a :class:`~agents.TrainedPolicy` (per-user system prompt or adapter).
    """
    from rich.progress import Progress

    from agents import as_policy

    policy = as_policy(policy)
    live = []
    for i, row in enumerate(rows):
        env = env_factory()
        _, info = env.reset(seed=seed + i, options={"user_id": row["user_id"], "task_id": row["task_id"]})
        result = EpisodeResult(row["user_id"], row["group"], row["task_id"], [], [], [], False)
        conversation = policy.conversation(row["user_id"], info["messages"])
        if conversation and conversation[0]["role"] == "system":
            result.system_prompt = conversation[0]["content"]
        live.append({"env": env, "messages": info["messages"], "done": False, "result": result})
    max_turns = live[0]["env"].max_turns if live else 0
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=len(rows) * max_turns)
        for turn in range(max_turns):
            active = [e for e in live if not e["done"]]
            if not active:
                break
            # Episodes that need the same adapter generate together.
            by_adapter: dict[Any, list[dict[str, Any]]] = {}
            for episode in active:
                user_id = episode["result"].user_id
                key = policy.adapter_for(user_id) if policy.adapter_for is not None else None
                by_adapter.setdefault(key, []).append(episode)
            for k, (_, episodes) in enumerate(sorted(by_adapter.items(), key=lambda item: str(item[0]))):
                policy.activate(episodes[0]["result"].user_id)
                replies = generate_replies(
                    policy.model,
                    tokenizer,
                    [policy.conversation(e["result"].user_id, e["messages"]) for e in episodes],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    batch_size=batch_size,
                    seed=seed + 7919 * turn + 104729 * k,
                    progress=lambda n: progress.advance(task, n),
                )
                for episode, reply in zip(episodes, replies):
                    _, reward, terminated, truncated, info = episode["env"].step(reply)
                    result: EpisodeResult = episode["result"]
                    result.replies.append(reply)
                    result.rewards.append(float(reward))
                    result.expected_utilities.append(float(info["expected_utility"]))
                    result.satisfied = bool(info["satisfied"])
                    episode["messages"] = info["messages"]
                    episode["done"] = terminated or truncated
        progress.update(task, completed=len(rows) * max_turns)
    return [e["result"] for e in live]


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    scores = [r.score for r in results]
    mean, ci = mean_ci(scores)
    by_group: dict[str, Any] = {}
    for group in sorted({r.group for r in results}):
        g_mean, g_ci = mean_ci([r.score for r in results if r.group == group])
        by_group[group] = {"mean": g_mean, "ci95": g_ci, "n": sum(r.group == group for r in results)}
    feedback_mean, feedback_ci = mean_ci([float(np.mean(r.rewards)) for r in results])
    return {
        "n": len(results),
        "mean_utility": mean,
        "ci95": ci,
        "by_group": by_group,
        "mean_feedback_reward": feedback_mean,
        "feedback_ci95": feedback_ci,
        "satisfaction_rate": float(np.mean([r.satisfied for r in results])) if results else float("nan"),
        "mean_reply_words": float(np.mean([len(" ".join(r.replies).split()) for r in results])) if results else 0.0,
    }


def compare(
    before: list[EpisodeResult],
    after: list[EpisodeResult],
    population: UserPopulation,
    seed: int,
    noise: float,
) -> dict[str, Any]:
    """Paired improvement and pairwise win rate of ``after`` over ``before`` (rows in the same order)."""
    if len(before) != len(after):
        raise ValueError("before and after must score the same episodes")
    diffs = [a.score - b.score for a, b in zip(after, before)]
    diff_mean, diff_ci = mean_ci(diffs)
    rng = np.random.default_rng(seed)
    wins, probabilities = [], []
    for b, a in zip(before, after):
        user = population.simulated_user(a.user_id, noise=noise)
        task = population.task(a.task_id)
        # The user compares the two policies' first replies to the same opening message.
        utility_after, utility_before = user.utility([a.replies[0], b.replies[0]], [task, task])
        probabilities.append(float(user.choice_probability(utility_after, utility_before)))
        wins.append(int(rng.random() < probabilities[-1]))
    win_rate, win_ci = mean_ci(wins)
    return {
        "improvement": diff_mean,
        "improvement_ci95": diff_ci,
        "win_rate": win_rate,
        "win_rate_ci95": win_ci,
        "expected_win_probability": float(np.mean(probabilities)) if probabilities else float("nan"),
    }


def episode_records(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) | {"score": r.score} for r in results]
