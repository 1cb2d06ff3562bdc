"""Benchmark: how fast the simulated users score replies (`make bench`, or `python -m experiments.bench_users`).

Prints replies scored per CPU-second for batches of 1,000 replies, for every scenario: features alone,
the users' batched utility (what reward functions call: style features, relevance with copy detection
against the user's own request, safety), and the same replies scored one at a time through the plain
Gymnasium loop (reset + step per reply) for comparison. Run it pinned to one core (`taskset -c 0`, as
`make bench` does) to read the one-core figure.
"""

from __future__ import annotations

import os
import platform
import time

import gymnasium as gym
import numpy as np

import envs
from envs.features import features
from envs.population import UserPopulation

BATCH = 1_000
_VOCABULARY = (
    "the a project deadline please hope for example thanks configuration cool hey router doctor "
    "I understand consult simple explain photosynthesis step kind regards - 1. # may gradually"
).split()


def make_replies(n: int, seed: int = 0) -> list[str]:
    """Replies of 5 to 120 words, some with bullets and line breaks, like LLM output."""
    rng = np.random.default_rng(seed)
    replies = []
    for _ in range(n):
        words = rng.choice(_VOCABULARY, size=int(rng.integers(5, 120)))
        text = " ".join(words)
        if rng.random() < 0.3:
            text = text.replace(" - ", "\n- ")
        replies.append(text)
    return replies


def per_second(function, repeats: int) -> float:
    """Replies per second of this process's CPU time, best of ``repeats`` runs.

    CPU time, not wall time: on a shared machine other processes on the same core would otherwise count
    against the users; the best run is the least disturbed one (caches, frequency).
    """
    function()  # warm up regex caches
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return BATCH / best


def main() -> None:
    replies = make_replies(BATCH)
    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} core(s) available to this process, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; batches of {BATCH} replies")
    print("replies per second of CPU time, best of several runs")
    print(f"{'scenario':<10} {'features/s':>12} {'utility/s (batched)':>20} {'env.step/s (gym loop)':>22} {'speed-up':>9}")
    for env_id in envs.TEXT_ENV_IDS:
        env = gym.make(env_id, split="all").unwrapped
        population: UserPopulation = env.population
        user = population.simulated_user(population.users[0].user_id)
        tasks = [population.tasks[i % len(population.tasks)] for i in range(BATCH)]
        f_rate = per_second(lambda: features(replies, population.scenario.dimensions), 7)
        u_rate = per_second(lambda: user.utility(replies, tasks, rng=np.random.default_rng(0)), 7)

        def gym_loop() -> None:
            for i, reply in enumerate(replies):
                env.reset(seed=i, options={"user_id": user.profile.user_id, "task_id": tasks[i].task_id})
                env.step(reply)

        g_rate = per_second(gym_loop, 2)
        print(f"{population.scenario_name:<10} {f_rate:>12,.0f} {u_rate:>20,.0f} {g_rate:>22,.0f} {u_rate / g_rate:>8.1f}x")
    print("target: >= 20,000 replies/s on one core for the batched utility")


if __name__ == "__main__":
    main()
