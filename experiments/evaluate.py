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
  interval; the wins actually sampled from those probabilities (seeded) come with a Wilson interval;
- the text metrics (``evaluation.text_metrics``, on by default): the base model's perplexity of the replies
  (fluency), the Monte-Carlo KL of the policy to the base policy on its own replies, the policy's perplexity
  of each user's own writing samples (style fit), BLEU and chrF of the replies against those samples, and the
  distinct-1/2 diversity of the replies. The model
  scores behind them are computed per episode by :func:`experiments.text_metrics.score_texts` right after the
  episodes are played and stored on each :class:`EpisodeResult`; declared metrics aggregate them like every
  other number.

Why one module over 300 lines: playing the episodes, the per-episode record and the core metrics declared
on it change together (a new field on :class:`EpisodeResult` and the metric that reads it); the model-scored
text metrics are in :mod:`experiments.text_metrics`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.population import UserPopulation
from envs.seeding import derive_seed, seed_sequence
from experiments import metrics, stats


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
    messages: list[dict[str, str]] | None = None
    """The whole conversation, user and assistant turns (no system prompt): the context of every reply."""
    # Model scores of the text, filled in by score_texts (None: not scored, e.g. evaluation.text_metrics: false).
    reply_tokens: list[int] | None = None
    """Each reply's length in tokens (its text as the tokenizer encodes it, no end-of-turn token)."""
    reply_base_logprob: list[float] | None = None
    """Each reply's log-probability (sum over its tokens) under the base model, given the conversation so far."""
    reply_log_ratio: list[float] | None = None
    """Each reply's log π_policy - log π_base (sum over its tokens, at the sampling temperature): 0 for the base."""
    user_text_nll: float | None = None
    """The policy's negative log-likelihood (sum over tokens) of the user's own writing samples, each after its
    request: the same for every episode of a user."""
    user_text_tokens: int | None = None
    reply_bleu: list[float] | None = None
    """Each reply's sentence BLEU (sacrebleu, 0-100) against the user's own writing samples as references."""
    reply_chrf: list[float] | None = None
    """Each reply's sentence chrF (sacrebleu, 0-100) against the user's own writing samples as references."""
    sampled: list[Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    """Per reply, how it was sampled (an :class:`agents.policy.SampledReply`, or None): kept by
    :func:`run_episodes` with ``logprob_temperatures`` for :func:`~experiments.text_metrics.score_texts`, which
    uses and drops them; never written to a file."""

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


def build_eval_set(env: Any, prompts: int, seed: int, balance_groups: bool = False) -> list[dict[str, Any]]:
    """Opening turns of held-out users; ``env`` must draw from the ``held_out`` split.

    ``balance_groups`` gives every user group an equal share of the conversations (the first groups one
    more where they do not divide evenly), so a 10:1 minority is measured on as many as the majority.
    """
    from agents.rollouts import build_prompt_dataset

    if getattr(env, "split", "held_out") != "held_out":
        raise ValueError("evaluation must use an environment on the held-out split")
    return build_prompt_dataset(env, prompts, seed=seed, balance_groups=balance_groups)


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
    logprob_temperatures: tuple[float, ...] = (),
) -> list[EpisodeResult]:
    """Play one episode per row with the policy; all rows advance turn by turn in batches.

    ``policy`` is a model or a :class:`~agents.TrainedPolicy` (per-user system prompt or adapter). With
    ``logprob_temperatures`` each episode keeps, in ``sampled``, its replies' token log-probabilities under the
    policy at those temperatures, from the sampling itself (the text metrics' policy scores, for free); the
    replies, rewards and everything else are the same either way.
    """
    from rich.progress import Progress

    from agents import as_policy
    from agents.policy import SampledReply, generate_replies

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
                replies = policy.replies(  # a reranking policy samples several and picks one
                    lambda conversations, k=k: generate_replies(
                        policy.model,
                        tokenizer,
                        conversations,
                        max_new_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        batch_size=batch_size,
                        seed=derive_seed(seed, "generate", turn, k),
                        progress=lambda n: progress.advance(task, n),
                        logprob_temperatures=logprob_temperatures,
                    ),
                    [e["result"].user_id for e in episodes],
                    [policy.conversation(e["result"].user_id, e["messages"]) for e in episodes],
                )
                for episode, reply in zip(episodes, replies):
                    result: EpisodeResult = episode["result"]
                    if logprob_temperatures:
                        result.sampled = (result.sampled or []) + [reply if isinstance(reply, SampledReply) else None]
                    reply = str(reply)  # the environment, the files and the reports get plain text
                    _, reward, terminated, truncated, info = episode["env"].step(reply)
                    result.replies.append(reply)
                    result.rewards.append(float(reward))
                    result.expected_utilities.append(float(info["expected_utility"]))
                    result.terms.append({name: float(value) for name, value in info["terms"].items()})
                    result.satisfied = bool(info["satisfied"])
                    result.messages = info["messages"]
                    episode["messages"] = info["messages"]
                    episode["done"] = terminated or truncated
        progress.update(task, completed=len(rows) * max_turns)
    return [e["result"] for e in live]


def _mean_fields(estimate: stats.Estimate, prefix: str = "") -> dict[str, Any]:
    """``ci95`` (the t half-width, kept for older readers), ``ci_low``, ``ci_high``, ``interval``, ``n``."""
    return {f"{prefix}ci95": estimate.half_width, **estimate.as_dict(prefix), f"{prefix}n": estimate.n}


# The reported metrics of one policy, in the order the tables show them: each is declared here, where it is
# computed, and from that alone lands in eval.json, the console table, report.md, W&B and `attune sweep`
# (see experiments.metrics). Adding one is adding a function like these.


@metrics.policy_metric("mean_utility", "mean user reward (hidden utility)", show="mean", prefix="")
def mean_utility(results: list[EpisodeResult]) -> stats.Estimate:
    """The users' noise-free hidden utility, the quantity training is meant to raise (t interval)."""
    return stats.mean_interval([r.score for r in results])


@metrics.policy_metric("mean_feedback_return", "mean feedback return (per episode)", show="mean",
                       prefix="feedback_return_", sweep=False)
def mean_feedback_return(results: list[EpisodeResult]) -> stats.Estimate:
    """What training maximizes: the feedback channel's episode return (t interval)."""
    return stats.mean_interval([r.feedback_return for r in results])


@metrics.policy_metric("satisfaction_rate", "satisfaction rate", format="{:.2f}", sweep=False)
def satisfaction_rate(results: list[EpisodeResult]) -> float:
    return float(np.mean([r.satisfied for r in results])) if results else float("nan")


@metrics.policy_metric("mean_reply_words", "mean reply length (words)", format="{:.1f}", sweep=False)
def mean_reply_words(results: list[EpisodeResult]) -> float:
    return float(np.mean([len(" ".join(r.replies).split()) for r in results])) if results else 0.0


# The text metrics are declared here, between the policy metrics above and the comparison metrics below, so
# that tables list them in this order (experiments/text_metrics.py computes and declares them).
from experiments import text_metrics  # noqa: E402,F401


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Every declared policy metric (mean hidden utility, feedback return, ...), per group and per utility term."""
    by_group: dict[str, Any] = {}
    for group in sorted({r.group for r in results}):
        g = stats.mean_interval([r.score for r in results if r.group == group])
        by_group[group] = {"mean": g.value, **_mean_fields(g)}
    return {**metrics.compute(metrics.POLICY, results), "by_group": by_group, "terms": term_means(results)}


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


@dataclasses.dataclass
class Paired:
    """The same held-out conversations played by the base policy (``before``) and the trained one (``after``),
    what every comparison metric is computed from."""

    before: list[EpisodeResult]
    after: list[EpisodeResult]
    population: Any
    seed: int
    noise: float

    @functools.cached_property
    def choice_probabilities(self) -> list[float]:
        """Per conversation: the user's Bradley-Terry probability of preferring the trained policy's first reply
        to the base policy's (both answer the same opening message)."""
        probabilities = []
        for b, a in zip(self.before, self.after):
            user = self.population.simulated_user(a.user_id, noise=self.noise)
            task = self.population.task(a.task_id)
            utility_after, utility_before = user.utility([a.replies[0], b.replies[0]], [task, task])
            probabilities.append(float(user.choice_probability(utility_after, utility_before)))
        return probabilities

    @functools.cached_property
    def sampled_choices(self) -> list[int]:
        """The users' choices drawn from :attr:`choice_probabilities` with ``seed`` (1: the trained reply won)."""
        rng = np.random.default_rng(seed_sequence(self.seed, "pairwise-choices"))
        return [int(rng.random() < p) for p in self.choice_probabilities]


# The reported comparisons of the trained policy with the base policy, declared where they are computed.


@metrics.comparison_metric("improvement", "improvement (paired)", show="mean", describe="improvement: {interval}")
def improvement(paired: Paired) -> stats.Estimate:
    """After minus before, conversation by conversation (paired t interval)."""
    return stats.paired_difference_interval([a.score for a in paired.after], [b.score for b in paired.before])


@metrics.comparison_metric(
    "win_rate", "win rate vs base (users' choices, expected)", show="interval",
    describe="win rate: the users' Bradley-Terry expected probability of preferring the trained policy, with its "
             "{interval} in brackets")
def win_rate(paired: Paired) -> dict[str, Any]:
    """The mean of the users' win probabilities; its t interval clipped to [0, 1] (``win_rate_ci95`` stays the
    t half-width before clipping, like every other ``ci95``)."""
    probabilities = paired.choice_probabilities
    expected = stats.mean_interval(probabilities, bounds=(0.0, 1.0),
                                   what="over per-conversation Bradley-Terry win probabilities")
    return {"win_rate": expected.value, **_mean_fields(expected, "win_rate_"),
            "win_rate_ci95": stats.mean_interval(probabilities).half_width,
            "expected_win_probability": expected.value}


@metrics.comparison_metric(
    "sampled_win_rate", "sampled wins vs base", show="count", count_key="sampled_wins", sweep=False,
    describe="sampled wins: choices drawn from those probabilities, with their {interval} in brackets")
def sampled_win_rate(paired: Paired) -> dict[str, Any]:
    """Wins actually drawn from the users' probabilities (seeded), their rate with a Wilson interval."""
    wins = paired.sampled_choices
    sampled = stats.wilson_interval(sum(wins), len(wins))
    return {"sampled_wins": int(sum(wins)), "sampled_win_rate": sampled.value, **sampled.as_dict("sampled_win_rate_")}


# The fairness metrics (worst-group utility, max-min gap, users made worse off) are declared in
# experiments/fairness.py, after the comparisons above, so that tables list them last.
from experiments import fairness  # noqa: E402


def compare(
    before: list[EpisodeResult],
    after: list[EpisodeResult],
    population: UserPopulation,
    seed: int,
    noise: float,
) -> dict[str, Any]:
    """Every declared comparison metric of ``after`` over ``before`` (rows in the same order), the terms' changes,
    and the fairness breakdown per group and trait (``fairness``, see :func:`experiments.fairness.fairness_section`).

    ``win_rate`` is the expected probability, by each user's Bradley-Terry choice model, that the user
    prefers the trained policy's first reply to the base policy's, averaged over conversations (t interval,
    clipped to [0, 1]; ``win_rate_ci95`` is its half-width before clipping). ``sampled_wins`` are choices
    drawn from those probabilities with ``seed``, their rate with a Wilson interval.
    """
    if len(before) != len(after):
        raise ValueError("before and after must score the same episodes")
    paired = Paired(before, after, population, seed, noise)
    return {"n": len(after), **metrics.compute(metrics.COMPARISON, paired), "term_changes": term_changes(before, after),
            "fairness": fairness.fairness_section(paired)}


def episode_records(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    return [{field.name: copy.deepcopy(getattr(r, field.name)) for field in dataclasses.fields(r) if field.name != "sampled"}
            | {"score": r.score} for r in results]


def also_evaluated(before: list[EpisodeResult], after: list[EpisodeResult], others: dict[str, list[EpisodeResult]],
                   label: str, population: Any, seed: int, noise: float) -> dict[str, Any]:
    """The further policies a method had scored (e.g. federated's personalized adapters) beside the trained one
    (called ``label``, e.g. ``global``), all on the same conversations.

    ``utility``: each policy's mean utility with its 95 % Student-t interval, the base policy's too;
    ``policies.<name>``: the policy's full summary (``after``), its comparison with the base policy
    (``comparison``) and its paired difference from the trained policy (``vs_<label>``, paired t interval).
    """
    def headline(results: list[EpisodeResult]) -> dict[str, Any]:
        estimate = stats.mean_interval([r.score for r in results])
        return {"mean_utility": estimate.value, **_mean_fields(estimate)}

    utility = {"base": headline(before), label: headline(after), **{name: headline(r) for name, r in others.items()}}
    policies = {}
    for name, results in others.items():
        if len(results) != len(after):
            raise ValueError(f"{name}: must score the same episodes as the trained policy")
        difference = stats.paired_difference_interval([r.score for r in results], [a.score for a in after])
        policies[name] = {"after": summarize(results), "comparison": compare(before, results, population, seed, noise),
                          f"vs_{label}": {"difference": difference.value, **_mean_fields(difference)}}
    return {"utility": utility, "policies": policies}
