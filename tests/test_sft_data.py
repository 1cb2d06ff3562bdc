"""SFT's ``data: chosen``: the prompt's own user picks the best of the sampled replies by a knockout."""

import pytest
from transformers import AutoTokenizer

import agents.sft
from agents.judging import pairwise_judge
from agents.policy import chat_prompt_ids, resolve_model
from envs.population import UserPopulation
from envs.scenarios import UserGroup

# Both answer the task (the users weigh style only in replies that do); one says it warmly.
WARM = ("Thanks so much for asking, I hope this helps! The project deadline moves to Friday because of the "
        "delay, so please let your colleague know.")
COLD = "The project deadline moves to Friday because of the delay. Let your colleague know."


def test_knockout_keeps_the_survivor_of_pairwise_choices():
    calls = []

    def prefers_longer(row, a, b):
        calls.append((a, b))
        return None if len(a) == len(b) else len(a) > len(b)

    assert agents.sft.knockout({}, ["bb", "a", "cccc", "dd", "eee"], prefers_longer) == "cccc"
    # the current best meets the next candidate in turn
    assert calls == [("bb", "a"), ("bb", "cccc"), ("cccc", "dd"), ("cccc", "eee")]
    assert agents.sft.knockout({}, ["bb", "dd"], prefers_longer) == "bb"  # a tie keeps the current best
    assert agents.sft.knockout({}, ["x", "x", "x"], prefers_longer) == "x"  # identical replies: nothing to judge


def test_the_users_own_choices_pick_the_reply_they_prefer_and_its_tokens_are_trained_on(monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random"))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    population = UserPopulation("writing", n_users=4, seed=0, groups=[UserGroup("warm", 1.0, {"warmth": 1.0}, spread=0.0)])
    # 4 candidates per prompt, the warm one anywhere; the first prompt's warm reply was cut off (no end of turn)
    sampled = [[COLD, True], [WARM, False], [COLD, True], [COLD, True]] + [[WARM, True], [COLD, True], [COLD, True], [COLD, False]]
    replies = [tokenizer.encode(text) + ([end] if ended else []) for text, ended in sampled]
    monkeypatch.setattr(agents.sft, "sample_continuations", lambda model, tokenizer, prompt_ids, **kw: replies)
    rows = [{"prompt": [{"role": "user", "content": f"request {i}"}], "user_id": u.user_id, "task_id": "write-000"}
            for i, u in enumerate(population.users[:2])]
    prefer = pairwise_judge("users", population=population, noise=0.0, seed=0)
    kept, stats = agents.sft.chosen_replies(None, tokenizer, rows, population, candidates=4, max_new_tokens=8,
                                            temperature=1.0, seed=0, prefer=prefer)
    assert [r["chosen"] for r in kept] == [WARM, WARM]
    for row, chosen_ids in zip(kept, (replies[1], replies[4])):
        prompt_ids = chat_prompt_ids(tokenizer, row["prompt"])
        assert row["input_ids"] == prompt_ids + chosen_ids  # the sampled tokens: a cut-off reply stays open
        assert row["labels"] == [-100] * len(prompt_ids) + chosen_ids  # the prompt is not trained on
    user, task = population.simulated_user(rows[0]["user_id"], noise=0.0), population.task("write-000")
    warm, cold = (float(user.utility([text], [task])[0]) for text in (WARM, COLD))
    assert warm - cold > 0.5  # the case is what it says: the warm user clearly prefers the warm answer
    assert stats == {"examples": 2.0, "chosen_utility": pytest.approx(warm),
                     "candidate_utility": pytest.approx((warm + 3 * cold) / 4)}
