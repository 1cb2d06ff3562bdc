"""Benchmark: evaluation speed against ``evaluation.batch_size`` (`make bench-eval`, or `python -m experiments.bench_eval`).

Plays the quickstart's held-out conversations (its users, env and sampling settings) with the base policy at
several batch sizes, one torch thread, each size timed ``--repeats`` times in interleaved order (so a load
change on the machine hits every size alike), and prints seconds per conversation side by side with the
plain library doing the same work: ``transformers``' ``model.generate`` on one conversation at a time (the same
prompt tokens and end-of-turn ids), no env. The default ``evaluation.batch_size`` is chosen from this table (see the README).

    python -m experiments.bench_eval                       # SmolLM2, the quickstart's 32 conversations
    python -m experiments.bench_eval --model tiny-random --prompts 8 --sizes 1,4 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

QUICKSTART = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def plain_generate(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   temperature: float) -> None:
    """The plain library's way: one ``model.generate`` per conversation, no batching, no env."""
    import torch

    from agents.policy import chat_prompt_ids, end_of_turn_ids

    eos_ids = sorted(end_of_turn_ids(tokenizer))
    for conversation in conversations:  # the same prompt tokens attune generates from
        ids = torch.tensor([chat_prompt_ids(tokenizer, conversation)])
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                           do_sample=temperature > 0, temperature=temperature, eos_token_id=eos_ids,
                           pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)


def measure(model_name: str, prompts: int, sizes: list[int], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each arm (``batch N`` and ``plain generate``), ``repeats`` each, interleaved."""
    import torch

    from agents.policy import load_policy
    from agents.rollouts import make_env
    from experiments import evaluate
    from experiments.config_files import load_config
    from experiments.runner import _population

    torch.set_num_threads(1)
    config = load_config(QUICKSTART, [f"policy.model={model_name}", f"evaluation.prompts={prompts}"])
    population = _population(config)
    env_kwargs = {"population": population, **config.env.env_kwargs()}
    model, tokenizer, _ = load_policy(config.policy.model)
    settings = config.evaluation
    rows = evaluate.build_eval_set(make_env(config.env.id, split="held_out", **env_kwargs), prompts, seed=settings.seed)

    def play(batch_size: int) -> None:
        evaluate.run_episodes(model, tokenizer, lambda: make_env(config.env.id, split="held_out", **env_kwargs), rows,
                              max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, batch_size=batch_size, seed=settings.seed, show_progress=False)

    conversations = []
    for i, row in enumerate(rows):
        env = make_env(config.env.id, split="held_out", **env_kwargs)
        _, info = env.reset(seed=i, options={"user_id": row["user_id"], "task_id": row["task_id"]})
        conversations.append(info["messages"])

    arms: dict[str, Any] = {f"batch {size}": (lambda size=size: play(size)) for size in sizes}
    arms["plain generate"] = lambda: plain_generate(model, tokenizer, conversations, settings.max_new_tokens,
                                                    settings.temperature)
    play(min(sizes))  # warm-up: first-call allocations and lazy imports are not what is measured
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for name in order:
            started = time.perf_counter()
            arms[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32, help="held-out conversations (the quickstart's 32)")
    parser.add_argument("--sizes", default="1,4,8,16,32", help="evaluation.batch_size values, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds = measure(args.model, args.prompts, sizes, args.repeats)
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch thread, "
          f"load average {load[0]:.2f}; {args.model}, the quickstart's {args.prompts} held-out conversations, "
          f"48 new tokens at most, {args.repeats} interleaved repeats (median, min-max)")
    fastest = min(statistics.median(v) for v in seconds.values())
    print(f"{'':16}{'s (median)':>12}{'min':>9}{'max':>9}{'s / conversation':>18}{'vs fastest':>12}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:16}{median:12.1f}{min(values):9.1f}{max(values):9.1f}{median / args.prompts:18.2f}"
              f"{median / fastest:11.2f}x")


if __name__ == "__main__":
    main()
