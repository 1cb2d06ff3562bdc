"""The seed document's text metrics, scored with the models: fluency, drift from the base policy, style fit, diversity.

- the base model's perplexity of the replies (fluency);
- the Monte-Carlo KL of the policy to the base policy on its own replies (nats per reply and per token);
- the policy's perplexity of each user's own writing samples (style fit, meaningful after SFT);
- BLEU and chrF (sacrebleu) of the replies against the user's own writing samples (surface overlap with how
  the user writes);
- distinct-1/2 diversity of the replies.

:func:`score_texts` computes the model scores per episode right after the episodes are played (the runner
calls it for the base and the trained policy, ``evaluation.text_metrics``) and stores them on each
:class:`~experiments.evaluate.EpisodeResult`; the metrics declared here aggregate them like every other
number, with intervals from :mod:`experiments.stats`. :mod:`experiments.evaluate` imports this module
between its policy and comparison metrics, which fixes their order in tables.

Why one module over 300 lines: every model-based score of an evaluation (perplexities, KL, BLEU/chrF,
distinct-n) shares one batching and token-accounting path; split, each metric would repeat it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments import metrics, stats

if TYPE_CHECKING:
    from experiments.evaluate import EpisodeResult


# Scoring the text with the models: what the text metrics below are computed from. Every forward pass runs in
# eval mode under torch.no_grad and draws no random numbers, so scoring changes none of the other numbers.


def continuation_logprobs(model: Any, tokenizer: Any, prompts: list[list[int]], continuations: list[list[int]], *,
                          batch_size: int = 8, temperatures: Sequence[float] = (1.0,)) -> list[np.ndarray]:
    """Per (prompt, continuation) pair of token-id lists: the log-probability of each continuation token given
    everything before it, one row per temperature (``log_softmax(logits / temperature)``): ``(len(temperatures),
    len(continuation))`` arrays.

    Batched with left padding (position ids from the attention mask, as generation numbers them), so every
    continuation ends its row and only the last positions go through the output layer: with a 49k-token
    vocabulary that layer, not the model, is most of the cost of scoring a short text. The tokens every prompt
    starts with (a chat template's system turn: a quarter of a scored reply's tokens with SmolLM2) go through the
    model once, their keys and values reused by every batch; the padding sits between them and each row's rest.
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
    # The prefix every prompt shares, less each prompt's last token (its logits predict the continuation's first).
    shared = len(os.path.commonprefix([list(p) for p in prompts])) if len(prompts) > 1 else 0
    shared = min(shared, min(len(p) for p in prompts) - 1)
    scored: list[np.ndarray] = []
    try:
        with torch.no_grad():
            prefix = None
            if shared >= SHARED_PREFIX_MIN:
                prefix = model(input_ids=torch.tensor([list(prompts[0][:shared])], device=device),
                               use_cache=True, logits_to_keep=1).cache
            for start in range(0, len(order), batch_size):
                pairs = [(prompts[i][shared if prefix is not None else 0:], continuations[i])
                         for i in order[start:start + batch_size]]
                padded = left_pad(tokenizer, [list(p) + list(c) for p, c in pairs])
                attention = padded["attention_mask"]
                inputs: dict[str, Any] = {}
                if prefix is not None:
                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(len(pairs))
                    attention = torch.cat([torch.ones(len(pairs), shared, dtype=attention.dtype), attention], dim=-1)
                    inputs["cache"] = cache
                positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, attention.shape[-1] - padded["input_ids"].shape[-1]:]
                # Position k's logits predict token k + 1: a continuation of n tokens is predicted from the n
                # positions before the row's last one.
                keep = max(len(c) for _, c in pairs) + 1
                logits = model(input_ids=padded["input_ids"].to(device), attention_mask=attention.to(device),
                               position_ids=positions.to(device), logits_to_keep=keep, **inputs).logits
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


SHARED_PREFIX_MIN = 4
"""Fewer tokens shared by every prompt than this are scored with each row (a cache costs more than it saves)."""


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """A reply or writing sample as scored: its text as the tokenizer encodes it, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _policy_logprobs(policy: Any, tokenizer: Any, items: list[tuple[str, list[dict[str, str]], list[int]]], *,
                     batch_size: int, temperatures: Sequence[float], sampled: Sequence[Any] = ()) -> list[np.ndarray]:
    """``(user_id, messages, continuation ids)`` scored by the policy as it talks to that user: its system prompt
    before the messages and that user's adapter active, as when it generated.

    ``sampled`` (one per item, or empty): a :class:`~agents.policy.SampledReply` the policy sampled that item's
    continuation as, whose log-probabilities are taken as they are when its prompt and tokens are the ones to be
    scored and it has every temperature asked for (what a forward pass here would give, up to float rounding);
    the other items are scored.
    """
    from agents.policy import chat_prompt_ids

    scored: list[np.ndarray] = [np.zeros((len(temperatures), 0))] * len(items)
    by_adapter: dict[Any, list[int]] = {}
    for i, (user_id, messages, ids) in enumerate(items):
        reply = sampled[i] if sampled else None
        if (reply is not None and all(t in reply.logprobs for t in temperatures) and reply.token_ids == tuple(ids)
                and reply.prompt_ids == tuple(chat_prompt_ids(tokenizer, policy.conversation(user_id, messages)))):
            scored[i] = np.stack([reply.logprobs[t] for t in temperatures])
            continue
        by_adapter.setdefault(policy.adapter_for(user_id) if policy.adapter_for is not None else None, []).append(i)
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


def sentence_overlap(replies: Sequence[str], references: Sequence[str]) -> tuple[list[float], list[float]]:
    """Each reply's sentence-level BLEU and chrF (sacrebleu's own scorers, 0-100) against all ``references`` at
    once (multi-reference: n-grams match any of them; the brevity penalty uses the closest reference length).

    BLEU is sacrebleu's recommended sentence-level setting (:data:`BLEU_SETTINGS`: exponential smoothing,
    effective order, so a reply shorter than four words is not zero by construction); chrF its defaults
    (character 6-grams, β = 2). Both tokenize with sacrebleu's standard tokenizers, not the model's.
    """
    bleu, chrf = overlap_scorers()
    return ([float(bleu.sentence_score(reply, list(references)).score) for reply in replies],
            [float(chrf.sentence_score(reply, list(references)).score) for reply in replies])


BLEU_SETTINGS: dict[str, Any] = {"effective_order": True}
"""sacrebleu ``BLEU(...)`` arguments for sentence-level BLEU (the rest are its defaults: 13a tokenizer, exp smoothing)."""


def overlap_scorers() -> tuple[Any, Any]:
    """sacrebleu's BLEU and chrF scorers as :func:`sentence_overlap` uses them."""
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(**BLEU_SETTINGS), CHRF()


SCORING_BATCH_SIZE = 8
"""Sequences a forward pass of :func:`score_texts` scores: on one core (the quickstart's trained SmolLM2, its 32
held-out replies and the users' texts, two repeats while other work ran) 8 took 28-31 s, 16 30-33 s, 32 35-37 s,
whatever the evaluation's generation batch size (``evaluation.batch_size``: sampling, unlike scoring, gains from
larger batches). Scoring draws no random numbers, so the batch size changes no number beyond float rounding."""


def score_texts(policy: Any, tokenizer: Any, results: list[EpisodeResult], population: Any, *,
                base: Any = None, temperature: float = 1.0, batch_size: int = SCORING_BATCH_SIZE) -> None:
    """Score the episodes' text with the models, in place: each :class:`EpisodeResult`'s ``reply_tokens``,
    ``reply_base_logprob``, ``reply_log_ratio``, ``user_text_nll`` and ``user_text_tokens``; and, with no model,
    ``reply_bleu`` and ``reply_chrf`` (:func:`sentence_overlap` against the user's writing samples).

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
    # How each reply was sampled (run_episodes' logprob_temperatures): the policy's own scores, already computed.
    sampled = [reply for r in results for reply in (r.sampled or [None] * len(r.replies))]
    # Temperature 1 for the base's perplexity; the sampling temperature for the log-ratio.
    if base is None:
        base_rows = _policy_logprobs(policy, tokenizer, replies, batch_size=batch_size, temperatures=(1.0,),
                                     sampled=sampled)
        ratios = [0.0] * len(replies)
    else:
        from agents.policy import chat_prompt_ids

        policy_rows = _policy_logprobs(policy, tokenizer, replies, batch_size=batch_size, temperatures=(temperature,),
                                       sampled=sampled)
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
    references = {user_id: [sample for _, sample in population.user(user_id).request_sample_pairs()]
                  for user_id in users}
    k = 0
    for r in results:
        n = len(r.replies)
        r.reply_tokens = [len(ids) for _, _, ids in replies[k:k + n]]
        r.reply_base_logprob = [float(row[0].sum()) for row in base_rows[k:k + n]]
        r.reply_log_ratio = ratios[k:k + n]
        r.user_text_nll, r.user_text_tokens = user_nll[r.user_id]
        if references[r.user_id]:
            r.reply_bleu, r.reply_chrf = sentence_overlap(r.replies, references[r.user_id])
        r.sampled = None  # used: the arrays are not kept with the episodes
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
    from experiments.evaluate import _mean_fields

    return {"kl_to_base": estimate.value, **_mean_fields(estimate, "kl_to_base_"), "kl_to_base_per_token": per_token}


@metrics.policy_metric("user_text_perplexity", "perplexity of the users' own texts", show="interval",
                       higher_is_better=False, sweep=False)
def user_text_perplexity(results: list[EpisodeResult]) -> stats.Estimate | None:
    """Style fit: the policy's perplexity of each held-out user's own writing samples (after their requests),
    per user (exp of the mean token NLL over their samples); the value is their geometric mean, n counts users.
    Meaningful after SFT on users' texts; with ``sft`` ``per: user`` these texts were its training data."""
    per_user = {r.user_id: (r.user_text_nll, r.user_text_tokens) for r in _scored(results) if r.user_text_tokens}
    return _perplexity([nll / tokens for nll, tokens in per_user.values()], "of the mean log-perplexity per user, exponentiated")


def _overlap(results: list[EpisodeResult], field: str, key: str) -> dict[str, Any] | None:
    """A sentence-level overlap score per conversation (its replies' mean), and their mean with a t interval
    clipped to [0, 100]."""
    per_conversation = [float(np.mean(getattr(r, field))) for r in results if getattr(r, field)]
    if not per_conversation:
        return None
    estimate = stats.mean_interval(per_conversation, bounds=(0.0, 100.0), what="over conversations")
    from experiments.evaluate import _mean_fields

    return {key: estimate.value, **_mean_fields(estimate, f"{key}_"),
            f"{key}_ci95": stats.mean_interval(per_conversation).half_width}  # before clipping, as win_rate's


@metrics.policy_metric("bleu", "BLEU vs the user's own texts (sentence, 0-100)", show="interval", sweep=False)
def bleu(results: list[EpisodeResult]) -> dict[str, Any] | None:
    """Sentence BLEU of each reply against its user's writing samples (all of them as references), averaged per
    conversation; the value is the mean over conversations with its t interval (``bleu_ci95`` is the half-width
    before clipping to [0, 100]). Sentence-level, not corpus-level: the unit is a conversation scored against
    its own user's texts, which gets an interval and pairs before/after like every other number here.
    sacrebleu's signature of the setting: ``nrefs:var|case:mixed|eff:yes|tok:13a|smooth:exp`` (chrF:
    ``case:mixed|eff:yes|nc:6|nw:0|space:no``), sacrebleu 2.6."""
    return _overlap(results, "reply_bleu", "bleu")


@metrics.policy_metric("chrf", "chrF vs the user's own texts (sentence, 0-100)", show="interval", sweep=False)
def chrf(results: list[EpisodeResult]) -> dict[str, Any] | None:
    """Sentence chrF of each reply against its user's writing samples, aggregated like :func:`bleu`."""
    return _overlap(results, "reply_chrf", "chrf")


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
