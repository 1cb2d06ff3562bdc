"""One seed source per run: every consumer's seed is a named child of the run's root ``SeedSequence``.

A consumer (the training prompts, a DPO round's sampling, the evaluation's episode ``i``, a new value
head, ...) asks for ``derive_seed(root, "name", index, ...)``. The child is
``numpy.random.SeedSequence(root, spawn_key=key)``, which is what ``SeedSequence.spawn`` builds, keyed by
name instead of by call order: adding a consumer never shifts another's seeds, and two consumers never
share a stream the way ``seed + offset`` schemes collide (``seed + 1000 * round`` meets ``seed + i``).

Resumed runs get the same seeds because keys name positions (a training step, a round, an episode),
not counters that restart at 0.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np

__all__ = ["derive_seed", "derive_seeds", "seed_sequence", "torch_seeded"]


def _key(parts: tuple[int | str, ...]) -> tuple[int, ...]:
    key = []
    for part in parts:
        if isinstance(part, str):
            key.append(zlib.crc32(part.encode()))  # stable across runs and machines, unlike hash()
        elif isinstance(part, (int, np.integer)) and part >= 0:
            key.append(int(part))
        else:
            raise ValueError(f"seed key parts are names or integers >= 0, got {part!r}")
    return tuple(key)


def seed_sequence(root: int, *key: int | str) -> np.random.SeedSequence:
    """The run's ``SeedSequence(root)``, or its child named by ``key`` (e.g. ``"evaluation", 3``)."""
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or root < 0:
        raise ValueError(f"a run's seed is an integer >= 0, got {root!r}")
    return np.random.SeedSequence(int(root), spawn_key=_key(key))


def derive_seed(root: int, *key: int | str) -> int:
    """A 31-bit integer seed for the consumer named by ``key`` (fits every library's seed argument)."""
    return int(seed_sequence(root, *key).generate_state(1, dtype=np.uint32)[0] >> 1)


def derive_seeds(root: int, count: int, *key: int | str) -> list[int]:
    """``count`` distinct-stream seeds for a consumer that needs many (e.g. one per env reset)."""
    state = seed_sequence(root, *key).generate_state(count, dtype=np.uint32)
    return [int(s >> 1) for s in state]


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. initialising a new head) on its own torch RNG stream, leaving the global one as it was.

    torch is imported here only: ``envs`` imports without it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
