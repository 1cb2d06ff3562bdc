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
  of each user's own writing samples (style fit), and the distinct-1/2 diversity of the replies. The model
  scores behind them are computed per episode by :func:`score_texts` right after the episodes are played and
  stored on each :class:`EpisodeResult`; declared metrics aggregate them like every other number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from envs.population import UserPopulation
from envs.seeding import derive_seed, seed_sequence
from experiments import metrics, stats
from experiments.metrics import describe_intervals  # noqa: F401  (callers import it from here)


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


def build_eval_set(env: Any, n_prompts: int, seed: int, balance_groups: bool = False) -> list[dict[str, Any]]:
    """Opening turns of held-out users; ``env`` must draw from the ``held_out`` split.

    ``balance_groups`` gives every user group an equal share of the conversations (the first groups one
    more where they do not divide evenly), so a 10:1 minority is measured on as many as the majority.
    """
    from agents.rollouts import build_prompt_dataset

    if getattr(env, "split", "held_out") != "held_out":
        raise ValueError("evaluation must use an environment on the held-out split")
    quotas = None
    if balance_groups:
        population = env.unwrapped.population
        names = [g.name for g in population.groups if any(u.group == g.name for u in population.held_out_users)]
        quotas = {name: n_prompts // len(names) + (i < n_prompts % len(names)) for i, name in enumerate(names)}
    return build_prompt_dataset(env, n_prompts, seed=seed, quotas=quotas)


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
    from agents.policy import generate_replies

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
                    ),
                    [e["result"].user_id for e in episodes],
                    [policy.conversation(e["result"].user_id, e["messages"]) for e in episodes],
                )
                for episode, reply in zip(episodes, replies):
                    _, reward, terminated, truncated, info = episode["env"].step(reply)
                    result: EpisodeResult = episode["result"]
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


# Scoring the text with the models: what the text metrics below are computed from. Every forward pass runs in
# eval mode under torch.no_grad and draws no random numbers, so scoring changes none of the other numbers.


def continuation_logprobs(model: Any, tokenizer: Any, prompts: list[list[int]], continuations: list[list[int]], *,
                          batch_size: int = 8, temperatures: Sequence[float] = (1.0,)) -> list[np.ndarray]:
    """Per (prompt, continuation) pair of token-id lists: the log-probability of each continuation token given
    everything before it, one row per temperature (``log_softmax(logits / temperature)``): ``(len(temperatures),
    len(continuation))`` arrays.

    Batched with left padding (position ids from the attention mask, as generation numbers them), so every
    continuation ends its row and only the last positions go through the output layer: with a 49k-token
    vocabulary that layer, not the model, is most of the cost of scoring a short text.
    """
    import torch

    from agents.policy import left_pad

    if len(prompts) != len(continuations):
        raise ValueError("one continuation per prompt")
    if any(not prompt for prompt in prompts):
        raise ValueError("a continuation needs a prompt of at least one token to be scored after")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Batches of similar lengths waste little on padding; the results go back in the order given.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(continuations[i]))
    scored: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                pairs = [(prompts[i], continuations[i]) for i in order[start:start + batch_size]]
                padded = left_pad(tokenizer, [list(p) + list(c) for p, c in pairs])
                attention = padded["attention_mask"]
                positions = (attention.cumsum(-1) - 1).clamp(min=0)
                # Position k's logits predict token k + 1: a continuation of n tokens is predicted from the n
                # positions before the row's last one.
                keep = max(len(c) for _, c in pairs) + 1
                logits = model(input_ids=padded["input_ids"].to(device), attention_mask=attention.to(device),
                               position_ids=positions.to(device), logits_to_keep=keep).logits
                for i, (_, continuation) in enumerate(pairs):
                    if not continuation:
                        scored.append(np.zeros((len(temperatures), 0)))
                        continue
                    rows = logits[i, keep - 1 - len(continuation):keep - 1].float()
                    target = torch.tensor(list(continuation), dtype=torch.long, device=rows.device)[:, None]
                    scored.append(np.stack([
                        torch.log_softmax(rows / t, dim=-1).gather(-1, target).squeeze(-1).cpu().numpy()
                        for t in temperatures
                    ]).astype(np.float64))
    finally:
        model.train(was_training)
    in_order: list[np.ndarray] = [np.zeros((len(temperatures), 0))] * len(prompts)
    for i, row in zip(order, scored):
        in_order[i] = row
    return in_order


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """A reply or writing sample as scored: its text as the tokenizer encodes it, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _policy_logprobs(policy: Any, tokenizer: Any, items: list[tuple[str, list[dict[str, str]], list[int]]], *,
                     batch_size: int, temperatures: Sequence[float]) -> list[np.ndarray]:
    """``(user_id, messages, continuation ids)`` scored by the policy as it talks to that user: its system prompt
    before the messages and that user's adapter active, as when it generated."""
    from agents.policy import chat_prompt_ids

    by_adapter: dict[Any, list[int]] = {}
    for i, (user_id, _, _) in enumerate(items):
        by_adapter.setdefault(policy.adapter_for(user_id) if policy.adapter_for is not None else None, []).append(i)
    scored: list[np.ndarray] = [np.zeros((len(temperatures), 0))] * len(items)
    for _, indices in sorted(by_adapter.items(), key=lambda item: str(item[0])):
        policy.activate(items[indices[0]][0])
        prompts = [chat_prompt_ids(tokenizer, policy.conversation(items[i][0], items[i][1])) for i in indices]
        logprobs = continuation_logprobs(policy.model, tokenizer, prompts, [items[i][2] for i in indices],
                                         batch_size=batch_size, temperatures=temperatures)
        for i, row in zip(indices, logprobs):
            scored[i] = row
    return scored


def reply_contexts(result: EpisodeResult) -> list[list[dict[str, str]]]:
    """The conversation before each of the episode's replies (what the policy answered), from its messages."""
    if result.messages is None:
        raise ValueError(f"episode of user {result.user_id} has no messages to score its replies in; play it with "
                         "run_episodes")
    contexts = [result.messages[:k] for k, m in enumerate(result.messages) if m["role"] == "assistant"]
    if len(contexts) != len(result.replies):
        raise ValueError(f"episode of user {result.user_id}: {len(result.replies)} replies but "
                         f"{len(contexts)} assistant turns in its messages")
    return contexts


def score_texts(policy: Any, tokenizer: Any, results: list[EpisodeResult], population: Any, *,
                base: Any = None, temperature: float = 1.0, batch_size: int = 8) -> None:
    """Score the episodes' text with the models, in place: each :class:`EpisodeResult`'s ``reply_tokens``,
    ``reply_base_logprob``, ``reply_log_ratio``, ``user_text_nll`` and ``user_text_tokens``.

    ``policy`` (a model or a :class:`~agents.TrainedPolicy`) played the episodes; ``base`` is the base model (or a
    context manager giving it, such as :func:`base_model`, entered once the policy's own scores are done), or
    None where the policy is the base itself (its log-ratios are then 0, exactly). Each reply is scored after the
    conversation before it: by the policy as it generated (its system prompt, the user's adapter), by the base
    model as the base policy would have (the plain conversation). ``reply_log_ratio`` uses log-probabilities at
    ``temperature``, the evaluation's sampling temperature, so that its mean over the policy's own replies is an
    unbiased Monte-Carlo estimate of KL(policy || base) between the distributions the replies were sampled from
    (exactly so with top_p = 1; greedy decoding, temperature 0, is scored at temperature 1). The users' writing
    samples (:meth:`envs.users.UserProfile.request_sample_pairs`) are scored by the policy, each after its request.
    """
    from agents import as_policy

    policy = as_policy(policy)
    temperature = temperature if temperature > 0 else 1.0
    replies = [(r.user_id, context, text_ids(tokenizer, reply))
               for r in results for context, reply in zip(reply_contexts(r), r.replies)]
    # Temperature 1 for the base's perplexity; the sampling temperature for the log-ratio.
    if base is None:
        base_rows = _policy_logprobs(policy, tokenizer, replies, batch_size=batch_size, temperatures=(1.0,))
        ratios = [0.0] * len(replies)
    else:
        from agents.policy import chat_prompt_ids

        policy_rows = _policy_logprobs(policy, tokenizer, replies, batch_size=batch_size, temperatures=(temperature,))
        # Entered only now: disabling a LoRA policy's adapters must not touch the policy's own scores above.
        with base if hasattr(base, "__enter__") else contextlib.nullcontext(base) as base_lm:
            base_rows = continuation_logprobs(base_lm, tokenizer, [chat_prompt_ids(tokenizer, c) for _, c, _ in replies],
                                              [ids for _, _, ids in replies], batch_size=batch_size,
                                              temperatures=(1.0, temperature))
        ratios = [float(p[0].sum() - b[-1].sum()) for p, b in zip(policy_rows, base_rows)]
    users = sorted({r.user_id for r in results})
    samples = [(user_id, [{"role": "user", "content": request}], text_ids(tokenizer, sample))
               for user_id in users for request, sample in population.user(user_id).request_sample_pairs()]
    sample_rows = _policy_logprobs(policy, tokenizer, samples, batch_size=batch_size, temperatures=(1.0,))
    user_nll = {user_id: [0.0, 0] for user_id in users}
    for (user_id, _, ids), row in zip(samples, sample_rows):
        user_nll[user_id][0] -= float(row[0].sum())
        user_nll[user_id][1] += len(ids)
    k = 0
    for r in results:
        n = len(r.replies)
        r.reply_tokens = [len(ids) for _, _, ids in replies[k:k + n]]
        r.reply_base_logprob = [float(row[0].sum()) for row in base_rows[k:k + n]]
        r.reply_log_ratio = ratios[k:k + n]
        r.user_text_nll, r.user_text_tokens = user_nll[r.user_id]
        k += n


@contextlib.contextmanager
def base_model(policy: Any, load: Callable[[], Any]) -> Iterator[Any]:
    """The base model a trained policy is scored against, for :func:`score_texts`.

    LoRA: the same model with its adapters disabled (no second copy). Unchanged weights (prompting, whose
    ``save_model`` is False): the policy's own model. Full fine-tuning trained the weights in place, so the base
    weights are gone: ``load()`` reads them again from the model's files (for SmolLM2-135M well under a second and
    ~0.5 GB while scoring; keeping a copy through training instead would hold that memory all along).
    """
    import torch

    from agents import as_policy

    policy = as_policy(policy)
    model = policy.model
    try:
        from peft import PeftModel
    except ImportError:  # peft is optional: without it no policy has adapters
        PeftModel = ()  # noqa: N806
    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    elif not policy.save_model:
        yield model
    else:
        with torch.random.fork_rng(devices=[]):  # loading must not move the global RNG the rest of the run uses
            base = load()
        yield base.to(next(model.parameters()).device)


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


# The text metrics: model scores from score_texts (absent where evaluation.text_metrics is off) and the replies'
# diversity. Not sweep metrics (a trial with text_metrics off would not report them); eval.json has them.
# Perplexities are exp of a mean negative log-likelihood per token; their interval is the t interval of that
# mean log-perplexity, exponentiated (so it is asymmetric).


def _scored(results: list[EpisodeResult]) -> list[EpisodeResult]:
    return [r for r in results if r.reply_tokens is not None]


def _perplexity(log_perplexities: Sequence[float], what: str) -> stats.Estimate | None:
    values = [v for v in log_perplexities if math.isfinite(v)]
    if not values:
        return None
    estimate = stats.mean_interval(values, what=what)
    return stats.Estimate(math.exp(estimate.value), math.exp(estimate.low), math.exp(estimate.high), estimate.n,
                          estimate.interval)


@metrics.policy_metric(
    "reply_perplexity", "base model's perplexity of the replies", show="interval", higher_is_better=False,
    sweep=False)
def reply_perplexity(results: list[EpisodeResult]) -> stats.Estimate | None:
    """Fluency: the base model's perplexity of the policy's replies given the conversation, per conversation
    (exp of its mean token NLL over all its replies); the value is their geometric mean."""
    scored = [r for r in _scored(results) if sum(r.reply_tokens)]
    return _perplexity([-sum(r.reply_base_logprob) / sum(r.reply_tokens) for r in scored],
                       "of the mean log-perplexity per conversation, exponentiated")


@metrics.policy_metric("kl_to_base", "KL to the base policy (nats per reply)", show="mean", higher_is_better=False,
                       sweep=False)
def kl_to_base(results: list[EpisodeResult]) -> dict[str, Any] | None:
    """A Monte-Carlo estimate of KL(policy || base) on the policy's own sampled replies: the mean over replies of
    the sum over their tokens of log π_policy - log π_base (t interval over conversations, each contributing
    its replies' mean); ``kl_to_base_per_token`` divides by the replies' tokens instead. 0 for the base itself.
    A single reply's term can be negative; their mean estimates a KL, which is not."""
    scored = _scored(results)
    if not scored:
        return None
    estimate = stats.mean_interval([float(np.mean(r.reply_log_ratio)) for r in scored])
    tokens = sum(sum(r.reply_tokens) for r in scored)
    per_token = sum(sum(r.reply_log_ratio) for r in scored) / tokens if tokens else math.nan
    return {"kl_to_base": estimate.value, **_mean_fields(estimate, "kl_to_base_"), "kl_to_base_per_token": per_token}


@metrics.policy_metric("user_text_perplexity", "perplexity of the users' own texts", show="interval",
                       higher_is_better=False, sweep=False)
def user_text_perplexity(results: list[EpisodeResult]) -> stats.Estimate | None:
    """Style fit: the policy's perplexity of each held-out user's own writing samples (after their requests),
    per user (exp of the mean token NLL over their samples); the value is their geometric mean, n counts users.
    Meaningful after SFT on users' texts; with ``sft`` ``per: user`` these texts were its training data."""
    per_user = {r.user_id: (r.user_text_nll, r.user_text_tokens) for r in _scored(results) if r.user_text_tokens}
    return _perplexity([nll / tokens for nll, tokens in per_user.values()], "of the mean log-perplexity per user, exponentiated")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the tokens distinct-n counts."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): the distinct n-grams over all replies divided by all their n-grams (n-grams
    never span two replies); NaN where the replies have none."""
    grams = [tuple(tokens[i:i + n]) for tokens in map(words, replies) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


@metrics.policy_metric("distinct_1", "distinct-1 (unique words / words)", format="{:.3f}", sweep=False)
def distinct_1(results: list[EpisodeResult]) -> float:
    """Diversity of the replies: how many of all their words are distinct."""
    return distinct_n([reply for r in results for reply in r.replies], 1)


@metrics.policy_metric("distinct_2", "distinct-2 (unique bigrams / bigrams)", format="{:.3f}", sweep=False)
def distinct_2(results: list[EpisodeResult]) -> float:
    """Diversity of the replies: how many of all their word bigrams are distinct."""
    return distinct_n([reply for r in results for reply in r.replies], 2)


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


def compare(
    before: list[EpisodeResult],
    after: list[EpisodeResult],
    population: UserPopulation,
    seed: int,
    noise: float,
) -> dict[str, Any]:
    """Every declared comparison metric of ``after`` over ``before`` (rows in the same order), and the terms' changes.

    ``win_rate`` is the expected probability, by each user's Bradley-Terry choice model, that the user
    prefers the trained policy's first reply to the base policy's, averaged over conversations (t interval,
    clipped to [0, 1]; ``win_rate_ci95`` is its half-width before clipping). ``sampled_wins`` are choices
    drawn from those probabilities with ``seed``, their rate with a Wilson interval.
    """
    if len(before) != len(after):
        raise ValueError("before and after must score the same episodes")
    paired = Paired(before, after, population, seed, noise)
    return {"n": len(after), **metrics.compute(metrics.COMPARISON, paired), "term_changes": term_changes(before, after)}


def episode_records(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) | {"score": r.score} for r in results]
