"""Every training method LEARNS on a case whose optimum is obvious (Stable-Baselines3's identity-env idea).

The identity case. The reward pays for one marker word: the share of a reply's words that are ``thanks``
(as the issue asks: a reward that pays for one token). The users' own utility cannot play this part for a
random model: it rewards style only in replies that answer the task, which four frequent words never do.
The policy is the tiny random Llama in which four words are made frequent, as a pretrained model's common
words are: ``thanks`` (the marker) and ``river``, ``table``, ``stone`` (neutral) make up nearly every
sampled token, about a quarter each. (On the plain random model no word has a probability above ~1e-4: a
reward for any word would never be sampled.) A method learns when, after a few steps through its own
adapter (``agents.<method>.train`` with a :class:`agents.TrainingJob` as the runner builds it), its sampled
replies to held-out users say ``thanks`` clearly more often than the untrained model's do.

The margin comes from the untrained model itself: its share of ``thanks`` in replies to 32 held-out prompts,
under each of ``N_SEEDS`` sampling seeds, gives a mean and a seed-to-seed standard deviation ``sd`` (about
0.05 around a mean of about 0.25). The trained model's mean share over the same seeds must exceed the
untrained mean by ``SIGMA_MARGIN`` standard errors of a difference of two such means
(``sd * sqrt(2 / N_SEEDS)``), and by at least ``MIN_GAIN`` absolute, whichever is larger. A broken adapter
(rewards not reaching the trainer, a flipped sign) leaves the share where it was or lowers it, and fails.
DPO judges its pairs with the same reward (``method_settings.judge: rewards``) and is compared with its own
run under the opposite reward, since training on its own samples lets the share drift. (Whether replies
are scored against the right rows is tested directly: test_reward_models.py, PPO, and test_rollouts.py,
multi-turn GRPO.)

PPO's run is reproducible only because ``agents/ppo.py`` seeds numpy's global RNG for training: TRL 1.12's
PPOTrainer shuffles minibatches with it and never seeds it, so before that fix the same config learned
(0.55) or collapsed (0.00) depending on the process.

SFT learns from data, not from a reward. With ``data: chosen`` (its default) the data are the replies its
judge picked among sampled candidates (rejection sampling): judged by the marker reward, the chosen replies
say ``thanks`` more often than the candidates do, and so must the fine-tuned model; judged by the opposite
reward, they say it less, so the two runs must end far apart. With ``data: writing_samples`` it learns from
the users' own texts: two groups whose texts open differently ("I hope you are well..." from warm users,
"Dear reader..." from formal ones); each group's adapter must start its reply to held-out users of that group
with the group's own opening word.

Prompting is left out: it trains nothing, and the tiny random model cannot follow an instruction, so
whether a stated preference changes the replies is a question for the SmolLM2 runs, not for this file.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch

import agents
from agents.policy import chat_prompt_ids, load_policy, sample_continuations
from agents.rollouts import build_prompt_dataset, make_env
from envs.population import UserPopulation
from envs.scenarios import UserGroup

ENV_ID = "attune/WritingAssistant-v1"
MARKER = "thanks"
NEUTRAL = ("river", "table", "stone")
REPLY_TOKENS = 8
N_SEEDS = 8
SIGMA_MARGIN = 4.0
MIN_GAIN = 0.12


# ---- the identity case ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm_users():
    return UserPopulation("writing", n_users=20, seed=0, groups=[UserGroup("warm", 1.0, {"warmth": 1.0}, spread=0.0)])


@pytest.fixture(scope="module")
def frequent_words_model(tmp_path_factory, warm_users):
    """tiny-random with the marker and three neutral words made frequent, saved where trainers can reload it.

    The output layer is untied from the input embeddings, and each chosen word's output row gets the mean
    direction of the model's final hidden states: every context then scores those words high.
    """
    model, tokenizer, _ = load_policy("tiny-random")
    rows = build_prompt_dataset(make_env(ENV_ID, population=warm_users, split="train"), 16, seed=0)
    prompts = [chat_prompt_ids(tokenizer, row["prompt"]) for row in rows]
    replies = sample_continuations(model, tokenizer, prompts, max_new_tokens=REPLY_TOKENS, temperature=1.0, seed=0)
    with torch.no_grad():
        hidden = torch.cat([
            model(torch.tensor([p + r]), output_hidden_states=True).hidden_states[-1][0, len(p) - 1 :]
            for p, r in zip(prompts, replies)
        ])
        direction = hidden.mean(0) / hidden.mean(0).norm()
        head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=False)
        head.weight.copy_(model.get_input_embeddings().weight)
        for word in (MARKER, *NEUTRAL):
            (token,) = tokenizer.encode(" " + word)
            head.weight[token] += 2.0 * direction
    model.config.tie_word_embeddings = False
    model.lm_head = head
    folder = tmp_path_factory.mktemp("frequent-words-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def held_out_prompts(frequent_words_model, warm_users):
    _, tokenizer, _ = load_policy(frequent_words_model)
    rows = build_prompt_dataset(make_env(ENV_ID, population=warm_users, split="held_out"), 32, seed=123)
    return [chat_prompt_ids(tokenizer, row["prompt"]) for row in rows]


def marker_shares(model, tokenizer, prompts) -> list[float]:
    """Per sampling seed: the share of the words in replies to ``prompts`` that are the marker."""
    shares = []
    for seed in range(N_SEEDS):
        replies = sample_continuations(model, tokenizer, prompts, max_new_tokens=REPLY_TOKENS, temperature=1.0,
                                       batch_size=len(prompts), seed=10_000 + seed)
        words = [w for r in replies for w in tokenizer.decode(r, skip_special_tokens=True).split()]
        shares.append(sum(w == MARKER for w in words) / max(1, len(words)))
    return shares


@pytest.fixture(scope="module")
def untrained(frequent_words_model, held_out_prompts):
    model, tokenizer, _ = load_policy(frequent_words_model)
    shares = marker_shares(model, tokenizer, held_out_prompts)
    mean, spread = statistics.mean(shares), statistics.stdev(shares)
    # The case must be what the docstring says: the marker is common, and not yet preferred.
    assert 0.15 < mean < 0.35 and spread > 0, shares
    gain = max(SIGMA_MARGIN * spread * math.sqrt(2 / N_SEEDS), MIN_GAIN)
    return {"mean": mean, "sd": spread, "bar": mean + gain, "shares": shares}


def pays_for_the_marker(prompts, completions, **kwargs):
    """The identity case's reward: the share of the reply's words that are the marker."""
    texts = [completion[0]["content"].split() for completion in completions]
    return [sum(w == MARKER for w in words) / max(1, len(words)) for words in texts]


def penalizes_the_marker(prompts, completions, **kwargs):
    return [-r for r in pays_for_the_marker(prompts, completions)]


def train(method, model_name, population, tmp_path, trainer, method_settings=None, reward=pays_for_the_marker,
          log=None, prompts=8):
    """Train through the method's own adapter, with the job the runner would build."""
    model, tokenizer, peft_config = load_policy(model_name)
    job = agents.TrainingJob(
        model=model,
        tokenizer=tokenizer,
        peft_config=peft_config,
        env_id=ENV_ID,
        env_kwargs={"population": population, "split": "train"},
        max_turns=1,
        reward_functions=[reward],
        reward_weights=[1.0],
        trainer_settings=trainer,
        output_dir=tmp_path / "checkpoints",
        seed=0,
        prompts=prompts,
        population=population,
        method_settings=method_settings or {},
        log=log,
    )
    torch.manual_seed(0)  # adapters (LoRA) are initialized before any trainer seeds torch
    return agents.as_policy(agents.get_method(method).train(job)), tokenizer


# trainer settings per method: a few steps at a learning rate the tiny model needs (its weights are ~0.02).
REWARD_METHODS = {
    "grpo": ({"max_steps": 8, "per_device_train_batch_size": 8, "num_generations": 4,
              "max_completion_length": REPLY_TOKENS, "learning_rate": 3e-3}, None),
    "rloo": ({"max_steps": 8, "per_device_train_batch_size": 8, "num_generations": 4,
              "max_completion_length": REPLY_TOKENS, "learning_rate": 3e-3}, None),
    "online_dpo": ({"max_steps": 8, "per_device_train_batch_size": 4, "max_new_tokens": REPLY_TOKENS,
                    "learning_rate": 5e-3}, None),
    "ppo": ({"max_steps": 20, "per_device_train_batch_size": 8, "response_length": REPLY_TOKENS,
             "learning_rate": 1e-3}, None),
}


@pytest.mark.parametrize("method", list(REWARD_METHODS))
def test_method_learns_what_the_users_reward(method, frequent_words_model, warm_users, held_out_prompts, untrained,
                                             tmp_path):
    trainer, method_settings = REWARD_METHODS[method]
    started = time.process_time()
    policy, tokenizer = train(method, frequent_words_model, warm_users, tmp_path, trainer, method_settings)
    cpu_seconds = time.process_time() - started
    shares = marker_shares(policy.model, tokenizer, held_out_prompts)
    print(f"{method}: share of '{MARKER}' {untrained['mean']:.3f} (sd {untrained['sd']:.3f}) -> "
          f"{statistics.mean(shares):.3f}; bar {untrained['bar']:.3f}; training {cpu_seconds:.1f} CPU s")
    assert statistics.mean(shares) > untrained["bar"], (shares, untrained)


@pytest.mark.parametrize("adapters", [False, True], ids=["all-weights", "lora"])
def test_dpo_learns_what_its_judge_prefers(adapters, frequent_words_model, warm_users, held_out_prompts, untrained,
                                           tmp_path):
    """DPO's pairs are judged by the configured rewards here (``method_settings.judge: rewards``): the users'
    own choices need replies that answer the task, which a random tiny model never writes.

    Plain DPO on the random tiny model pushes both replies' likelihood down until the frequent words are
    gone (DPO's known likelihood displacement), so the loss here adds the SFT term on the chosen reply
    (RPO). Training on its own samples also lets the share drift: with users indifferent to every word
    (coin-flip choices) one run ended at 0.42. So DPO is compared with itself: the same run with users who
    dislike warmth must end far below. Choices that ignore the users give two equal runs and fail.

    With LoRA adapters (DPO's default) the displacement is stronger: the warm users' run ends above the untrained
    share but not above its 2-sd bar within 16 steps (0.34 vs 0.375 measured), while the cold users' falls to a
    third of it; the adapters are held to the contrast and to rising above the untrained share.
    """
    trainer = {"max_steps": 12 if adapters else 8, "per_device_train_batch_size": 4,
               "learning_rate": 1e-2 if adapters else 2e-3, "loss_type": ["sigmoid", "sft"]}
    rounds = {"rounds": 2, "samples_per_prompt": 4, "max_new_tokens": REPLY_TOKENS, "judge": "rewards",
              "adapters": adapters}
    shares = {}
    for name, reward in (("warm", pays_for_the_marker), ("cold", penalizes_the_marker)):
        policy, tokenizer = train("dpo", frequent_words_model, warm_users, tmp_path / name, trainer, rounds, reward)
        shares[name] = statistics.mean(marker_shares(policy.model, tokenizer, held_out_prompts))
    print(f"dpo: share of '{MARKER}' {untrained['mean']:.3f} -> warm users {shares['warm']:.3f}, "
          f"cold users {shares['cold']:.3f}; bar {untrained['bar']:.3f}")
    assert shares["warm"] > (untrained["mean"] if adapters else untrained["bar"]), shares
    assert shares["warm"] - shares["cold"] > untrained["bar"] - untrained["mean"], shares


# ---- SFT: the chosen replies, and the users' own texts -------------------------------------------------


def test_sft_on_chosen_replies_learns_what_its_judge_prefers(frequent_words_model, warm_users, held_out_prompts,
                                                             untrained, tmp_path):
    """Rejection sampling: of 16 sampled replies the judge (the configured rewards) keeps one per prompt.

    The chosen replies' share of the marker is about 0.64 (the candidates': 0.25). Trained on their text with
    an end-of-turn token after each (cut off at 8 tokens), the LoRA adapter spent itself on learning to stop
    and reached only 0.29-0.36 in 12-30 steps; on the sampled tokens themselves it reaches about 0.43.
    """
    trainer = {"max_steps": 12, "per_device_train_batch_size": 8, "learning_rate": 1e-2}
    settings = {"data": "chosen", "judge": "rewards", "candidates": 16, "max_new_tokens": REPLY_TOKENS, "temperature": 1.0}
    shares, logged = {}, {}
    for name, reward in (("warm", pays_for_the_marker), ("cold", penalizes_the_marker)):
        records = []
        policy, tokenizer = train("sft", frequent_words_model, warm_users, tmp_path / name, trainer, settings, reward,
                                  log=records.append, prompts=32)
        shares[name] = statistics.mean(marker_shares(policy.model, tokenizer, held_out_prompts))
        (logged[name],) = [r for r in records if "sft/chosen_utility" in r]
    print(f"sft (chosen): share of '{MARKER}' {untrained['mean']:.3f} -> warm judge {shares['warm']:.3f}, "
          f"cold judge {shares['cold']:.3f}; bar {untrained['bar']:.3f}; logged {logged}")
    assert shares["warm"] > untrained["bar"], shares
    assert shares["warm"] - shares["cold"] > untrained["bar"] - untrained["mean"], shares
    assert logged["warm"]["sft/examples"] == 32  # one chosen reply per prompt


def test_sft_adapters_write_like_their_group(tmp_path):
    groups = [UserGroup("warm", 0.5, {"warmth": 1.0}, spread=0.0), UserGroup("formal", 0.5, {"formality": 1.0}, spread=0.0)]
    population = UserPopulation("writing", n_users=20, seed=0, groups=groups)
    policy, tokenizer = train("sft", "tiny-random", population, tmp_path, {"max_steps": 20, "learning_rate": 1e-2},
                              {"data": "writing_samples", "per": "group"})

    def first_token(text: str) -> int:
        return tokenizer.encode(text)[0]

    openers = {u.group: first_token(u.request_sample_pairs()[0][1]) for u in population.users}
    assert len(set(openers.values())) == 2, "the groups' texts must open differently for this test to mean anything"
    cases = [(u, request) for u in population.held_out_users for request, _ in u.request_sample_pairs()]
    assert {u.group for u, _ in cases} == {"warm", "formal"}

    def greedy_first_tokens(adapter_on: bool) -> list[int]:
        picks = []
        for user, request in cases:
            prompt = torch.tensor([chat_prompt_ids(tokenizer, [{"role": "user", "content": request}])])
            with torch.no_grad():
                if adapter_on:
                    policy.activate(user.user_id)  # the evaluation's routing: user id -> their group's adapter
                    logits = policy.model(prompt).logits[0, -1]
                else:
                    with policy.model.disable_adapter():
                        logits = policy.model(prompt).logits[0, -1]
            picks.append(int(logits.argmax()))
        return picks

    # Chance that a given token is the argmax of an untrained 49k-token softmax: ~1/49152 per request.
    assert all(pick != openers[u.group] for pick, (u, _) in zip(greedy_first_tokens(False), cases))
    assert [openers[u.group] for u, _ in cases] == greedy_first_tokens(True)
