"""Rollouts against the simulated users: prompt datasets from env resets, and multi-turn episodes.

Shared by the training adapters: each method file decides what to do with the rollouts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gymnasium as gym

import envs  # noqa: F401  (registers the attune/* ids)
from agents.policy import chat_prompt_ids, sample_continuations
from envs.seeding import derive_seed


def make_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """The unwrapped environment: attune envs are plain text envs, no wrappers needed for rollouts."""
    return gym.make(env_id, **env_kwargs).unwrapped


def prompt_key(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def group_quotas(env: gym.Env, prompts: int) -> dict[str, int]:
    """An equal share of ``prompts`` for every user group of the env's split (the first groups one more where
    they do not divide evenly): a 10:1 minority gets as many rows as the majority."""
    unwrapped = env.unwrapped
    population = unwrapped.population
    present = {u.group for u in unwrapped.users}
    names = [g.name for g in population.groups if g.name in present]
    return {name: prompts // len(names) + (i < prompts % len(names)) for i, name in enumerate(names)}


def build_prompt_dataset(env: gym.Env, prompts: int, seed: int, quotas: dict[str, int] | None = None,
                         balance_groups: bool = False) -> list[dict[str, Any]]:
    """``prompts`` distinct opening turns from env resets seeded by ``seed``'s ``"prompt"`` stream, as TRL rows.

    Each row has ``prompt`` (chat messages), ``user_id``, ``task_id`` and ``group``. Prompts are unique,
    so a multi-turn rollout can find a prompt's user and task from the prompt alone. ``quotas`` (group ->
    rows, summing to ``prompts``) keeps drawing until every group has its share, however rare it is;
    ``balance_groups`` sets equal quotas (:func:`group_quotas`, the config's ``fairness.balanced_sampling``).
    """
    if balance_groups and quotas is None:
        quotas = group_quotas(env, prompts)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    left = dict(quotas) if quotas is not None else None
    attempt = 0
    limit = 50 * prompts * (max(1, len(left)) if left else 1)
    while len(rows) < prompts:
        if attempt >= limit:
            raise ValueError(
                f"could only draw {len(rows)} distinct prompts of the {prompts} asked for; "
                "lower the number of prompts or use more users"
            )
        _, info = env.reset(seed=derive_seed(seed, "prompt", attempt))
        attempt += 1
        key = prompt_key(info["messages"])
        if key in seen or (left is not None and left.get(info["group"], 0) <= 0):
            continue
        seen.add(key)
        if left is not None:
            left[info["group"]] -= 1
        rows.append(
            {"prompt": info["messages"], "user_id": info["user_id"], "task_id": info["task_id"], "group": info["group"]}
        )
    return rows


def make_multi_turn_rollout(
    env_factory: Callable[[], gym.Env],
    rows: list[dict[str, Any]],
    *,
    max_turns: int,
    seed: int,
) -> Callable[[list[Any], Any], dict[str, Any]]:
    """A GRPO ``rollout_func`` that plays whole conversations with the simulated users.

    For each prompt, the user of that dataset row is reset in a fresh env; the policy replies, the user
    reacts (critique or follow-up), and so on until the user is satisfied or ``max_turns`` replies.
    The completion is every token after the prompt; ``env_mask`` is 1 on the policy's own tokens and 0 on
    the user's, so the loss never trains the policy to write the user's turns. The episode's return (the
    sum of its per-turn rewards; with ``reward_mode: episode_end`` that is the one end-of-episode reward,
    whatever the episode's length) is returned as ``env_reward``, the per-turn mean of its utility terms
    (a diagnostic) as ``env_terms``, and the policy's turns as ``assistant_replies`` (all three reach the
    reward functions as columns).
    """
    by_prompt = {prompt_key(r["prompt"]): r for r in rows}
    calls_at_step: dict[int, int] = {}

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        args = trainer.args
        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        # Keyed by the trainer's step (restored on resume), so a resumed run never replays early episodes.
        step = int(trainer.state.global_step)
        call = calls_at_step[step] = calls_at_step.get(step, -1) + 1
        episodes = []
        for i, prompt in enumerate(prompts):
            row = by_prompt.get(prompt_key(prompt))
            if row is None:
                raise KeyError("rollout got a prompt that is not in its dataset; build both from the same rows")
            env = env_factory()
            env.reset(seed=derive_seed(seed, "rollout", step, call, i), options={"user_id": row["user_id"], "task_id": row["task_id"]})
            episodes.append(
                {"env": env, "prompt": chat_prompt_ids(tokenizer, prompt), "ids": [], "mask": [], "rewards": [], "terms": [], "replies": [], "done": False}
            )
        for _ in range(max_turns):
            active = [e for e in episodes if not e["done"]]
            if not active:
                break
            # Continue each conversation from its exact tokens so far: the loss sees what the model saw.
            continuations = sample_continuations(
                model,
                tokenizer,
                [e["prompt"] + e["ids"] for e in active],
                max_new_tokens=args.max_completion_length,
                temperature=args.temperature,
                top_p=args.top_p,
                batch_size=len(active),
            )
            for episode, ids in zip(active, continuations):
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                episode["ids"].extend(ids)
                episode["mask"].extend([1] * len(ids))
                _, reward, terminated, truncated, info = episode["env"].step(text)
                episode["rewards"].append(reward)
                episode["terms"].append(info["terms"])
                episode["replies"].append(text)
                if terminated or truncated:
                    episode["done"] = True
                    continue
                # The user's turn, tokenized exactly as the chat template renders it after a reply.
                user_turn = _strip_default_system(tokenizer, chat_prompt_ids(tokenizer, info["messages"][-1:]))
                closing = ([] if ids and ids[-1] == end_of_turn else [end_of_turn]) + newline
                episode["ids"].extend(closing + user_turn)
                episode["mask"].extend([0] * (len(closing) + len(user_turn)))
        return {
            "prompt_ids": [e["prompt"] for e in episodes],
            "completion_ids": [e["ids"] for e in episodes],
            "logprobs": None,
            "env_mask": [e["mask"] for e in episodes],
            "env_reward": [episode_return(e["rewards"]) for e in episodes],
            "env_terms": [_mean_terms(e["terms"]) for e in episodes],
            "assistant_replies": [e["replies"] for e in episodes],
        }

    return rollout


def episode_return(rewards: list[float]) -> float:
    """The undiscounted return of one episode: the sum of its per-turn rewards.

    Not their mean: with ``reward_mode: episode_end`` the env pays 0, ..., 0, R, and a mean would turn R
    into R / turns, punishing a conversation for being long rather than for being bad.
    """
    return float(sum(rewards))


def _mean_terms(per_turn: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(t[k] for t in per_turn) / len(per_turn) for k in per_turn[0]}


def _strip_default_system(tokenizer: Any, ids: list[int]) -> list[int]:
    """Drop the default system turn a chat template adds to a conversation that lacks one."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    positions = [i for i, t in enumerate(ids) if t == start]
    if len(positions) >= 2:
        # ChatML: the injected system block runs from the first <|im_start|> to the second.
        first_block = tokenizer.decode(ids[positions[0] : positions[1]])
        if first_block.startswith("<|im_start|>system"):
            return ids[positions[1] :]
    return ids
