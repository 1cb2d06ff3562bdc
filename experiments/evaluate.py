"""Before/after evaluation on held-out users: the same users, prompts and sampling seeds for both policies.

Scores are the users' noise-free hidden utility (the quantity training is meant to raise), averaged over
the policy's turns in an episode. Reported (see :mod:`experiments.stats`), each with its n and the name of
its interval:

- the mean score with a 95 % Student-t interval, overall and per user group (for fairness);
- the mean episode return of the feedback channel (the sum of the env's per-turn rewards: what training
  maximizes; with ``reward_mode: episode_end`` it is the single end-of-episode reward);
- the paired improvement (after minus before, conversation by conversation) with a paired t interval;
- the win rate of the trained policy over the base policy by the users' own pairwise choices
  (Bradley-Terry): the headline is the expected win probability, averaged over conversations with a t
  interval; the wins actually sampled from those probabilities (seeded) come with a Wilson interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.policy import generate_replies
from agents.rollouts import build_prompt_dataset
from envs.seeding import derive_seed, seed_sequence
from envs.population import UserPopulation
from experiments import stats


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % Student-t confidence interval (NaN half-width for n < 2)."""
    estimate = stats.mean_interval(values)
    return estimate.value, estimate.half_width


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
    terms: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """Each turn's noise-free utility terms (one per preference dimension, relevance, safety)."""

    @property
    def score(self) -> float:
        return float(np.mean(self.expected_utilities))

    def mean_terms(self) -> dict[str, float]:
        """The episode's utility terms averaged over its turns (they sum to :attr:`score`)."""
        names = self.terms[0] if self.terms else {}
        return {name: float(np.mean([turn[name] for turn in self.terms])) for name in names}

    @property
    def feedback_return(self) -> float:
        """The episode's return on the feedback channel: the sum of its per-turn rewards."""
        return float(np.sum(self.rewards))


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
    show_progress: bool = True,
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
        _, info = env.reset(seed=derive_seed(seed, "episode", i), options={"user_id": row["user_id"], "task_id": row["task_id"]})
        result = EpisodeResult(row["user_id"], row["group"], row["task_id"], [], [], [], False)
        conversation = policy.conversation(row["user_id"], info["messages"])
        if conversation and conversation[0]["role"] == "system":
            result.system_prompt = conversation[0]["content"]
        live.append({"env": env, "messages": info["messages"], "done": False, "result": result})
    max_turns = live[0]["env"].max_turns if live else 0
    # Off inside a training loop, whose progress bar is the live display then.
    with Progress(transient=True, disable=not show_progress) as progress:
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
                    seed=derive_seed(seed, "generate", turn, k),
                    progress=lambda n: progress.advance(task, n),
                )
                for episode, reply in zip(episodes, replies):
                    _, reward, terminated, truncated, info = episode["env"].step(reply)
                    result: EpisodeResult = episode["result"]
                    result.replies.append(reply)
                    result.rewards.append(float(reward))
                    result.expected_utilities.append(float(info["expected_utility"]))
                    result.terms.append({name: float(value) for name, value in info["terms"].items()})
                    result.satisfied = bool(info["satisfied"])
                    episode["messages"] = info["messages"]
                    episode["done"] = terminated or truncated
        progress.update(task, completed=len(rows) * max_turns)
    return [e["result"] for e in live]


def _mean_fields(estimate: stats.Estimate, prefix: str = "") -> dict[str, Any]:
    """``ci95`` (the t half-width, kept for older readers), ``ci_low``, ``ci_high``, ``interval``, ``n``."""
    return {f"{prefix}ci95": estimate.half_width, **estimate.as_dict(prefix), f"{prefix}n": estimate.n}


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Mean hidden utility (t interval), per group, feedback return, satisfaction and reply length."""
    utility = stats.mean_interval([r.score for r in results])
    by_group: dict[str, Any] = {}
    for group in sorted({r.group for r in results}):
        g = stats.mean_interval([r.score for r in results if r.group == group])
        by_group[group] = {"mean": g.value, **_mean_fields(g)}
    feedback = stats.mean_interval([r.feedback_return for r in results])
    return {
        "mean_utility": utility.value,
        **_mean_fields(utility),
        "by_group": by_group,
        "mean_feedback_return": feedback.value,
        **_mean_fields(feedback, "feedback_return_"),
        "terms": term_means(results),
        "satisfaction_rate": float(np.mean([r.satisfied for r in results])) if results else float("nan"),
        "mean_reply_words": float(np.mean([len(" ".join(r.replies).split()) for r in results])) if results else 0.0,
    }


def term_means(results: list[EpisodeResult]) -> dict[str, float]:
    """Mean of each utility term over the episodes: which preferences a policy meets and which it misses."""
    per_episode = [r.mean_terms() for r in results if r.terms]
    names = per_episode[0] if per_episode else {}
    return {name: float(np.mean([terms[name] for terms in per_episode])) for name in names}


def term_changes(before: list[EpisodeResult], after: list[EpisodeResult]) -> dict[str, dict[str, Any]]:
    """Paired change of each utility term, after minus before (95 % paired t interval): what training moved."""
    pairs = [(b.mean_terms(), a.mean_terms()) for b, a in zip(before, after) if b.terms and a.terms]
    names = pairs[0][0] if pairs else {}
    changes = {}
    for name in names:
        estimate = stats.paired_difference_interval([a[name] for _, a in pairs], [b[name] for b, _ in pairs])
        changes[name] = {"change": estimate.value, **_mean_fields(estimate)}
    return changes


def compare(
    before: list[EpisodeResult],
    after: list[EpisodeResult],
    population: UserPopulation,
    seed: int,
    noise: float,
) -> dict[str, Any]:
    """Paired improvement and win rate of ``after`` over ``before`` (rows in the same order).

    ``win_rate`` is the expected probability, by each user's Bradley-Terry choice model, that the user
    prefers the trained policy's first reply to the base policy's, averaged over conversations (t interval,
    clipped to [0, 1]; ``win_rate_ci95`` is its half-width before clipping). ``sampled_wins`` are choices
    drawn from those probabilities with ``seed``, their rate with a Wilson interval.
    """
    if len(before) != len(after):
        raise ValueError("before and after must score the same episodes")
    improvement = stats.paired_difference_interval([a.score for a in after], [b.score for b in before])
    rng = np.random.default_rng(seed_sequence(seed, "pairwise-choices"))
    wins, probabilities = [], []
    for b, a in zip(before, after):
        user = population.simulated_user(a.user_id, noise=noise)
        task = population.task(a.task_id)
        # The user compares the two policies' first replies to the same opening message.
        utility_after, utility_before = user.utility([a.replies[0], b.replies[0]], [task, task])
        probabilities.append(float(user.choice_probability(utility_after, utility_before)))
        wins.append(int(rng.random() < probabilities[-1]))
    # The mean of probabilities lies in [0, 1], so its interval is clipped there; ``win_rate_ci95`` stays
    # the t half-width before clipping, like every other ``ci95``.
    expected = stats.mean_interval(probabilities, bounds=(0.0, 1.0),
                                   what="over per-conversation Bradley-Terry win probabilities")
    expected_half_width = stats.mean_interval(probabilities).half_width
    sampled = stats.wilson_interval(sum(wins), len(wins))
    return {
        "n": len(after),
        "improvement": improvement.value,
        **_mean_fields(improvement, "improvement_"),
        "win_rate": expected.value,
        **_mean_fields(expected, "win_rate_"),
        "win_rate_ci95": expected_half_width,
        "expected_win_probability": expected.value,
        "term_changes": term_changes(before, after),
        "sampled_wins": int(sum(wins)),
        "sampled_win_rate": sampled.value,
        **sampled.as_dict("sampled_win_rate_"),
    }


def episode_records(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) | {"score": r.score} for r in results]


def describe_intervals(before: dict[str, Any], comparison: dict[str, Any] | None = None, seeds: int = 1,
                       per_variant: bool = False) -> str:
    """The caption every evaluation table carries: n, seeds and the kind of each interval shown.

    ``before`` is a :func:`summarize` result (``n``, ``interval``), ``comparison`` a :func:`compare` result
    (``improvement_interval``, ``win_rate_interval``, ``sampled_win_rate_interval``).
    """
    n = before["n"]
    parts = [
        f"n = {n} held-out conversation{'s' if n != 1 else ''}, {seeds} seed{'s' if seeds != 1 else ''}"
        + (" per variant" if per_variant else ""),
        f"± is the half-width of the {before['interval']} (per group over its own n)",
    ]
    if comparison is not None:
        parts += [
            f"improvement: {comparison['improvement_interval']}",
            "win rate: the users' Bradley-Terry expected probability of preferring the trained policy, "
            f"with its {comparison['win_rate_interval']} in brackets",
            f"sampled wins: choices drawn from those probabilities, with their {comparison['sampled_win_rate_interval']} "
            "in brackets",
        ]
    return "; ".join(parts) + "."
