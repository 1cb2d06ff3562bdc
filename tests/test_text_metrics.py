"""The text metrics (evaluation.text_metrics): distinct-n by hand, the model scores against direct computations
with the model, the KL to the base policy, and a tiny run whose eval.json and report.md carry them."""

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import agents.policy
from agents import TrainedPolicy
from agents.policy import SampledReply, chat_prompt_ids, generate_replies, load_policy
from envs.population import UserPopulation
from experiments import evaluate, metrics, stats, text_metrics
from experiments.evaluate import EpisodeResult

TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "tiny.yaml"
TEXT_KEYS = ("reply_perplexity", "kl_to_base", "user_text_perplexity", "bleu", "chrf")


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer, _ = load_policy("tiny-random")
    return model, tokenizer


@pytest.fixture(scope="module")
def population():
    return UserPopulation("writing", n_users=10, held_out_fraction=0.3, seed=0)


def played(user_id: str, turns: list[tuple[str, str]]) -> EpisodeResult:
    """An episode with literal (user message, reply) turns, as run_episodes records it."""
    messages = [m for message, reply in turns for m in ({"role": "user", "content": message},
                                                          {"role": "assistant", "content": reply})]
    return EpisodeResult(user_id, "g", "t", [reply for _, reply in turns], [0.0] * len(turns), [0.0] * len(turns),
                         False, messages=messages)


def direct_logprob(model, tokenizer, conversation, text, system=None) -> tuple[float, int]:
    """log p(text | conversation) by one unbatched forward pass: the sum over the text's tokens, and their count."""
    context = ([{"role": "system", "content": system}] if system else []) + conversation
    prompt = chat_prompt_ids(tokenizer, context)
    target = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return float(sum(logprobs[len(prompt) - 1 + k, token] for k, token in enumerate(target))), len(target)


def test_distinct_n_by_hand():
    results = [played("u1", [("hi", "The cat sat")]), played("u2", [("hi", "the cat ran!")])]
    # Words: the cat sat | the cat ran ! -> 7 words, 5 distinct; bigrams: the-cat, cat-sat | the-cat, cat-ran,
    # ran-! -> 5, 4 distinct ("sat the" spans two replies and is not a bigram).
    summary = evaluate.summarize(results)
    assert summary["distinct_1"] == pytest.approx(5 / 7) and summary["distinct_2"] == pytest.approx(4 / 5)
    assert text_metrics.distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert math.isnan(text_metrics.distinct_n(["one"], 2))


def test_unscored_episodes_have_no_text_metrics_fields_and_no_rows():
    summary = evaluate.summarize([played("u1", [("hi", "a reply")]), played("u2", [("hi", "another")])])
    assert not any(key.startswith(TEXT_KEYS) for key in summary)
    report = {"before": summary, "after": summary, "comparison": {"n": 2}}
    labels = [row["metric"] for row in metrics.evaluation_table(report).rows]
    assert "KL to the base policy (nats per reply)" not in labels and "distinct-1 (unique words / words)" in labels


def test_perplexities_match_the_model_computed_directly(tiny, population):
    model, tokenizer = tiny
    user = population.held_out_users[0]
    episode = played(user.user_id, [("Write about tea.", "Tea is a warm drink."), ("Shorter, please.", "Tea: warm.")])
    text_metrics.score_texts(model, tokenizer, [episode], population, batch_size=4)

    # Each reply after the conversation before it (the second one after three messages).
    first = direct_logprob(model, tokenizer, episode.messages[:1], "Tea is a warm drink.")
    second = direct_logprob(model, tokenizer, episode.messages[:3], "Tea: warm.")
    assert episode.reply_tokens == [first[1], second[1]]
    assert episode.reply_base_logprob == pytest.approx([first[0], second[0]], rel=1e-5)
    summary = evaluate.summarize([episode])
    assert summary["reply_perplexity"] == pytest.approx(math.exp(-(first[0] + second[0]) / (first[1] + second[1])),
                                                        rel=1e-5)
    # The user's writing samples, each after its request: exp of the mean token NLL.
    scored = [direct_logprob(model, tokenizer, [{"role": "user", "content": request}], sample)
              for request, sample in user.request_sample_pairs()]
    nll, tokens = -sum(s[0] for s in scored), sum(s[1] for s in scored)
    assert (episode.user_text_nll, episode.user_text_tokens) == (pytest.approx(nll, rel=1e-5), tokens)
    assert summary["user_text_perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert summary["user_text_perplexity_n"] == 1
    # The base policy itself: its log-ratios are 0 exactly, and so is its KL.
    assert episode.reply_log_ratio == [0.0, 0.0] and summary["kl_to_base"] == 0.0


def test_bleu_and_chrf_are_sacrebleus_sentence_scores_against_the_users_writing_samples(tiny, population):
    import sacrebleu

    model, tokenizer = tiny
    first, second = population.held_out_users[:2]
    samples = [sample for _, sample in first.request_sample_pairs()]
    # One reply copies a writing sample (100 on both), one shares no character n-gram with any (0 on both), one
    # in between; the second user's episode is scored against the second user's samples only.
    copied, unrelated, partial = samples[0], "ZQZQ ZZXQ", samples[1].split("\n")[0] + " Thanks."
    episodes = [played(first.user_id, [("Write.", copied), ("Again.", unrelated)]),
                played(first.user_id, [("Write.", partial)]),
                played(second.user_id, [("Write.", partial)])]
    text_metrics.score_texts(model, tokenizer, episodes, population, batch_size=4)

    assert episodes[0].reply_bleu == pytest.approx([100.0, 0.0]) and episodes[0].reply_chrf == pytest.approx([100.0, 0.0])
    for episode, user in zip(episodes[1:], (first, second)):
        references = [sample for _, sample in user.request_sample_pairs()]
        assert episode.reply_bleu == [pytest.approx(sacrebleu.sentence_bleu(partial, references).score)]
        assert episode.reply_chrf == [pytest.approx(sacrebleu.sentence_chrf(partial, references).score)]
    assert 0 < episodes[1].reply_bleu[0] < 100 and episodes[1].reply_bleu != episodes[2].reply_bleu

    # Per conversation the mean of its replies, then the mean over conversations with its t interval.
    summary = evaluate.summarize(episodes)
    for key in ("bleu", "chrf"):
        per_conversation = [np.mean(getattr(e, f"reply_{key}")) for e in episodes]
        expected = stats.mean_interval(per_conversation)
        assert summary[key] == pytest.approx(expected.value) and summary[f"{key}_n"] == 3
        assert summary[f"{key}_ci95"] == pytest.approx(expected.half_width)
        assert summary[f"{key}_ci_low"] == pytest.approx(max(expected.low, 0.0))


def test_kl_to_base_is_zero_for_an_identical_model_and_positive_after_perturbing(tiny, population):
    model, tokenizer = tiny
    users = [u.user_id for u in population.held_out_users]
    requests = [f"Please write a note about topic {k}." for k in range(8)]
    # The policy's own replies, sampled at the temperature the KL is scored at.
    replies = generate_replies(model, tokenizer, [[{"role": "user", "content": r}] for r in requests],
                               max_new_tokens=8, temperature=1.0, seed=0)
    episodes = [played(users[k % len(users)], [(r, reply)]) for k, (r, reply) in enumerate(zip(requests, replies))]

    text_metrics.score_texts(model, tokenizer, episodes, population, base=copy.deepcopy(model), temperature=1.0)
    assert all(r.reply_log_ratio == pytest.approx([0.0], abs=1e-4) for r in episodes)
    assert evaluate.summarize(episodes)["kl_to_base"] == pytest.approx(0.0, abs=1e-4)

    perturbed = copy.deepcopy(model)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        head = perturbed.get_output_embeddings().weight
        head.add_(torch.randn_like(head) * 3.0)
    text_metrics.score_texts(model, tokenizer, episodes, population, base=perturbed, temperature=1.0)
    for r in episodes:  # the sum over the reply's tokens of log pi_policy - log pi_base, computed directly
        message, reply = r.messages[0], r.replies[0]
        expected = (direct_logprob(model, tokenizer, [message], reply)[0]
                    - direct_logprob(perturbed, tokenizer, [message], reply)[0])
        assert r.reply_log_ratio == [pytest.approx(expected, rel=1e-4, abs=1e-4)]
    summary = evaluate.summarize(episodes)
    assert summary["kl_to_base"] > 0 and summary["kl_to_base_ci_low"] > 0
    tokens = sum(r.reply_tokens[0] for r in episodes)
    assert summary["kl_to_base_per_token"] == pytest.approx(sum(r.reply_log_ratio[0] for r in episodes) / tokens)


def test_the_policy_scores_with_its_system_prompt_and_the_base_without(tiny, population):
    model, tokenizer = tiny
    user = population.held_out_users[0].user_id
    system = "You are terse."
    prompting = TrainedPolicy(model, system_prompt_for=lambda user_id, messages: system, save_model=False)
    episode = played(user, [("Write about tea.", "Tea is a warm drink.")])
    with text_metrics.base_model(prompting, load=lambda: pytest.fail("unchanged weights need no reload")) as base:
        assert base is model
    text_metrics.score_texts(prompting, tokenizer, [episode], population,
                         base=text_metrics.base_model(prompting, load=lambda: None))
    with_prompt = direct_logprob(model, tokenizer, episode.messages[:1], episode.replies[0], system=system)[0]
    without = direct_logprob(model, tokenizer, episode.messages[:1], episode.replies[0])[0]
    assert episode.reply_base_logprob == [pytest.approx(without, rel=1e-5)]
    assert episode.reply_log_ratio == [pytest.approx(with_prompt - without, rel=1e-4, abs=1e-4)]


def test_a_lora_policy_is_scored_against_its_own_weights_with_the_adapters_disabled(tiny, population):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    plain = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # init_lora_weights=False: random B, so the adapter changes the replies' scores
        lora = get_peft_model(copy.deepcopy(model), LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear",
                                                               init_lora_weights=False))
    episode = played(population.held_out_users[0].user_id, [("Write about tea.", "Tea is a warm drink.")])
    text_metrics.score_texts(lora, tokenizer, [episode], population,
                         base=text_metrics.base_model(lora, load=lambda: pytest.fail("LoRA needs no reload")))
    base_only = direct_logprob(plain, tokenizer, episode.messages[:1], episode.replies[0])[0]
    adapted = direct_logprob(lora, tokenizer, episode.messages[:1], episode.replies[0])[0]
    assert abs(adapted - base_only) > 1e-3
    assert episode.reply_base_logprob == [pytest.approx(base_only, rel=1e-5)]
    assert episode.reply_log_ratio == [pytest.approx(adapted - base_only, rel=1e-4, abs=1e-4)]


def test_full_fine_tuning_reloads_the_base_weights_without_moving_the_rng(tiny):
    model, _ = tiny
    reloaded = copy.deepcopy(model)

    def load():
        torch.rand(3)  # whatever loading draws stays out of the run's random stream
        return reloaded

    state = torch.random.get_rng_state()
    with text_metrics.base_model(model, load) as base:
        assert base is reloaded
    assert torch.equal(state, torch.random.get_rng_state())


def test_scoring_changes_neither_the_model_nor_the_random_stream(tiny, population):
    model, tokenizer = tiny
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    state = torch.random.get_rng_state()
    text_metrics.score_texts(model, tokenizer, [played(population.held_out_users[0].user_id, [("hi", "hello there")])],
                         population, base=copy.deepcopy(model))
    assert torch.equal(state, torch.random.get_rng_state()) and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_a_tiny_run_reports_the_text_metrics_and_keeps_every_other_number(tmp_path):
    """On: the metrics in eval.json, episodes.json and report.md; off: none of them, and every other number equal."""
    from rich.console import Console

    from experiments import eval_cache
    from experiments.config_files import load_config
    from experiments.runner import run

    reports, episodes = {}, {}
    for text_metrics in (True, False):
        config = load_config(TINY, ["trainer.max_steps=1", "evaluation.prompts=4", "tracking.wandb=disabled",
                                    f"evaluation.text_metrics={str(text_metrics).lower()}",
                                    f"tracking.runs_dir={tmp_path / str(text_metrics)}"])
        result = run(config, Console(file=io.StringIO(), width=200))
        reports[text_metrics] = json.loads((result.run_dir / "eval.json").read_text())
        episodes[text_metrics] = json.loads((result.run_dir / "episodes.json").read_text())
        if text_metrics:
            markdown = (result.run_dir / "report.md").read_text()
            # The base policy's scores are cached with its evaluation: a run that reuses it reports them too.
            cached = eval_cache.load(eval_cache.cache_key(config))
            assert [e["reply_base_logprob"] for e in cached["episodes"]] == [
                e["reply_base_logprob"] for e in episodes[True]["before"]]
            assert all(e["reply_base_logprob"] is not None for e in cached["episodes"])
    on, off = reports[True], reports[False]
    for side in ("before", "after"):
        assert all(key in on[side] for key in (*TEXT_KEYS, "distinct_1", "distinct_2", "kl_to_base_per_token"))
        assert not any(key.startswith(TEXT_KEYS) for key in off[side])
        # The numbers a run reported before the text metrics existed are unchanged, to the last digit.
        assert {k: v for k, v in on[side].items() if not k.startswith(TEXT_KEYS)} == off[side]
        assert [e["replies"] for e in episodes[True][side]] == [e["replies"] for e in episodes[False][side]]
        tokens = [sum(e["reply_tokens"]) for e in episodes[True][side]]
        nll = [-sum(e["reply_base_logprob"]) / n for e, n in zip(episodes[True][side], tokens)]
        assert on[side]["reply_perplexity"] == pytest.approx(math.exp(np.mean(nll)))
    assert on["before"]["kl_to_base"] == 0.0
    assert on["after"]["kl_to_base"] == pytest.approx(np.mean([np.mean(e["reply_log_ratio"])
                                                              for e in episodes[True]["after"]]))
    # BLEU and chrF recomputed with sacrebleu from the replies and the users' own writing samples.
    import sacrebleu

    from experiments.runner import prepare

    population = prepare(config)["population"]
    for side in ("before", "after"):
        for key, score in (("bleu", sacrebleu.sentence_bleu), ("chrf", sacrebleu.sentence_chrf)):
            per_conversation = [np.mean([score(reply, [s for _, s in population.user(e["user_id"]).request_sample_pairs()]).score
                                         for reply in e["replies"]]) for e in episodes[True][side]]
            assert on[side][key] == pytest.approx(np.mean(per_conversation))
    assert on["comparison"] == off["comparison"]
    assert on["text_metrics_seconds"] > 0 and "text_metrics_seconds" not in off
    for label in ("base model's perplexity of the replies", "KL to the base policy (nats per reply)",
                  "perplexity of the users' own texts", "distinct-2 (unique bigrams / bigrams)",
                  "BLEU vs the user's own texts (sentence, 0-100)", "chrF vs the user's own texts (sentence, 0-100)"):
        assert f"| {label} |" in markdown


def test_the_shared_prompt_prefix_is_scored_once_with_the_same_result(tiny, monkeypatch):
    """continuation_logprobs runs the tokens every prompt starts with once, reusing their keys and values with
    padding in between; the scores are those of scoring each row whole, and of one unbatched forward pass."""
    model, tokenizer = tiny
    requests = ["Hi.", "Please write a long note about the quarterly launch plan for my team.", "Draft an email."]
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": r}]) for r in requests]
    continuations = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Sure thing.", "Ok", "Dear team, here it is")]
    shared = len(__import__("os").path.commonprefix(prompts))
    assert shared >= text_metrics.SHARED_PREFIX_MIN  # the chat template's system turn: the cached path runs

    calls = []
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    cached = text_metrics.continuation_logprobs(model, tokenizer, prompts, continuations, batch_size=2,
                                                temperatures=(1.0, 0.7))
    assert calls[0] == (1, shared) and all(shape[1] < shared + 30 for shape in calls[1:])  # no batch re-runs the prefix
    monkeypatch.setattr(text_metrics, "SHARED_PREFIX_MIN", 10**6)
    calls.clear()
    whole = text_metrics.continuation_logprobs(model, tokenizer, prompts, continuations, batch_size=2,
                                               temperatures=(1.0, 0.7))
    assert len(calls) == 2 and all(shape[1] > shared for shape in calls)
    for request, text, a, b in zip(requests, ("Sure thing.", "Ok", "Dear team, here it is"), cached, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert a[0].sum() == pytest.approx(direct_logprob(model, tokenizer, [{"role": "user", "content": request}], text)[0],
                                           rel=1e-5)


def test_replies_keep_the_log_probabilities_they_were_sampled_with(tiny, monkeypatch):
    """generate_replies with logprob_temperatures: the same replies as without, each carrying its tokens'
    log-probabilities at every temperature asked for, equal to scoring the reply again."""
    model, tokenizer = tiny
    conversations = [[{"role": "user", "content": f"write about {t}"}] for t in ("cats", "dogs", "tea")]
    plain = generate_replies(model, tokenizer, conversations, max_new_tokens=6, temperature=0.7, seed=3, batch_size=2)
    sampled = generate_replies(model, tokenizer, conversations, max_new_tokens=6, temperature=0.7, seed=3, batch_size=2,
                               logprob_temperatures=(1.0, 0.7))
    assert sampled == plain and all(isinstance(r, SampledReply) for r in sampled)
    for conversation, reply in zip(conversations, sampled):
        assert reply.prompt_ids == tuple(chat_prompt_ids(tokenizer, conversation))
        assert set(reply.logprobs) == {1.0, 0.7} and all(len(row) == len(reply.token_ids) for row in reply.logprobs.values())
        rescored = text_metrics.continuation_logprobs(model, tokenizer, [list(reply.prompt_ids)], [list(reply.token_ids)],
                                                      temperatures=(1.0, 0.7))[0]
        np.testing.assert_allclose(np.stack([reply.logprobs[1.0], reply.logprobs[0.7]]), rescored, rtol=1e-4, atol=1e-4)
        assert str(reply) == reply and type(str(reply)) is str
    # A batch whose logits would not fit the budget records nothing: plain replies, the same ones.
    monkeypatch.setattr(agents.policy, "LOGITS_BUDGET", 2 * 6 * model.config.vocab_size * 4 - 1)
    over = generate_replies(model, tokenizer, conversations, max_new_tokens=6, temperature=0.7, seed=3, batch_size=2,
                            logprob_temperatures=(1.0, 0.7))
    assert over == plain and [type(r) for r in over] == [str, str, SampledReply]  # the last batch holds one reply


def test_score_texts_takes_the_policys_scores_from_the_sampling(tiny, population, monkeypatch):
    """Episodes played with logprob_temperatures are scored by the policy no more (only the base and the users'
    texts are), with the numbers of scoring them again; the arrays are dropped once used, never written."""
    model, tokenizer = tiny
    from agents.rollouts import make_env

    def env():
        return make_env("attune/WritingAssistant-v1", population=population, split="held_out")

    rows = evaluate.build_eval_set(env(), 6, seed=0)

    def play(**kwargs):
        return evaluate.run_episodes(model, tokenizer, env, rows, max_new_tokens=6, temperature=0.7, top_p=1.0,
                                     batch_size=4, seed=0, show_progress=False, **kwargs)

    recorded, plain = play(logprob_temperatures=(0.7, 1.0)), play()
    assert [r.replies for r in recorded] == [r.replies for r in plain]
    assert all(len(r.sampled) == len(r.replies) for r in recorded) and all(r.sampled is None for r in plain)
    assert all(type(reply) is str for r in recorded for reply in r.replies)

    scored_rows = []
    original = text_metrics.continuation_logprobs

    def counting(model_, tokenizer_, prompts, continuations, **kwargs):
        scored_rows.append(len(prompts))
        return original(model_, tokenizer_, prompts, continuations, **kwargs)

    monkeypatch.setattr(text_metrics, "continuation_logprobs", counting)
    base = copy.deepcopy(model)
    text_metrics.score_texts(model, tokenizer, plain, population, base=base, temperature=0.7)
    calls_plain = list(scored_rows)
    scored_rows.clear()
    replies = sum(len(r.replies) for r in recorded)
    # A reply's recorded scores are used where its text encodes back to the tokens sampled (a random model's
    # replies often do not: those are scored again).
    reused = sum(tuple(text_metrics.text_ids(tokenizer, reply)) == sampled.token_ids
                 for r in recorded for reply, sampled in zip(r.replies, r.sampled))
    assert reused >= 1
    text_metrics.score_texts(model, tokenizer, recorded, population, base=base, temperature=0.7)
    assert calls_plain[0] == replies  # the policy's replies, then the base's scores of them, then the users' texts
    if reused < replies:
        assert scored_rows[0] == replies - reused and scored_rows[1:] == calls_plain[1:]
    else:
        assert scored_rows == calls_plain[1:]
    for a, b in zip(recorded, plain):
        assert a.reply_log_ratio == pytest.approx(b.reply_log_ratio, rel=1e-4, abs=1e-4)
        assert a.reply_base_logprob == pytest.approx(b.reply_base_logprob, rel=1e-5)
        assert a.sampled is None
    assert "sampled" not in evaluate.episode_records(recorded)[0]
