"""Metrics for information-gathering conversations (the elicitation env): normalised return, turns, pass^k.

- **Normalised return** (LMRL-Gym, Abdulhai et al., 2023, https://arxiv.org/abs/2311.18232, Appendix E):
  a policy's mean return mapped piecewise-linearly so that the minimum possible return is 0, the
  dataset's average return 50 and the maximum return 100 (values outside [min, max] fall outside
  [0, 100]). For the elicitation env (:func:`reference_returns`), per evaluation conversation:

  - min = the worst possible expected return: every allowed question asked, then no answer at all
    (:func:`envs.elicitation_policies.worst_return`; exact and attainable);
  - max = the oracle's expected return: the best reply of the scripted reply family for the user's true
    weights, no question asked (:func:`envs.elicitation_policies.oracle_return`). It is the best the reply
    family achieves, not a bound over all texts (the utility's bound, every feature at its best end at
    once, is not attainable): a policy writing better than the family can score above 100;
  - average = the mean expected return of the "dataset": by default the noisy behaviour policy whose
    episodes filtered BC trains on (:func:`envs.elicitation_policies.behaviour_policy`), as LMRL-Gym's
    dataset average is its behaviour data's; ``average="random_question"`` uses a policy asking a random
    number of random questions; a number (e.g. the base LLM's measured mean) is used as given.

  The three are averaged over the same (user, task) conversations the policy is evaluated on.
- **Turns used**: assistant turns per episode (questions + the answer), and questions asked.
- **pass^k** (tau-bench, Yao et al., 2024, https://arxiv.org/abs/2406.12045): over conversations run
  with n seeds each, the probability that all k of k trials succeed, estimated without bias per
  conversation as C(c, k) / C(n, k) (c successes of n) and averaged. Success here is the user being
  satisfied by the answer (its expected utility >= the env's ``satisfaction_utility``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.seeding import derive_seed

__all__ = ["ReferenceReturns", "normalised_return", "pass_hat_k", "reference_returns", "summarize_elicitation"]


def normalised_return(value: float, minimum: float, average: float, maximum: float) -> float:
    """LMRL-Gym's normalised return: 0 at ``minimum``, 50 at ``average``, 100 at ``maximum``, linear between."""
    if not minimum < average < maximum:
        raise ValueError(f"normalised return needs minimum < average < maximum, got {minimum}, {average}, {maximum}")
    if value >= average:
        return 50.0 + 50.0 * (value - average) / (maximum - average)
    return 50.0 * (value - minimum) / (average - minimum)


def pass_hat_k(successes: Sequence[Sequence[bool]], k: int) -> float:
    """tau-bench's pass^k: mean over tasks of C(c, k) / C(n, k), for ``successes[task][trial]``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not successes:
        raise ValueError("pass^k needs at least one task's trials")
    values = []
    for trials in successes:
        n, c = len(trials), int(sum(bool(s) for s in trials))
        if n < k:
            raise ValueError(f"pass^{k} needs at least {k} trials of every task; one task has {n}")
        values.append(math.comb(c, k) / math.comb(n, k))
    return float(np.mean(values))


@dataclasses.dataclass(frozen=True)
class ReferenceReturns:
    """The endpoints of the normalised return, averaged over the evaluation conversations."""

    minimum: float
    average: float
    maximum: float
    average_source: str
    """What the 50 stands for: ``behaviour``, ``random_question`` or ``given``."""

    def normalise(self, value: float) -> float:
        return normalised_return(value, self.minimum, self.average, self.maximum)


def reference_returns(env: Any, rows: Sequence[Mapping[str, str]], seed: int,
                      average: str | float = "behaviour", trials: int = 4) -> ReferenceReturns:
    """min, average and max expected returns of ``env`` (an :class:`~envs.elicitation.ElicitationEnv`) on
    ``rows`` (``user_id``, ``task_id``), the average over ``trials`` seeded episodes per row."""
    from envs import elicitation_policies as policies

    if not rows:
        raise ValueError("reference returns need at least one (user_id, task_id) row")
    worst, best, played = [], [], []
    behaviour = None
    if average == "behaviour":
        behaviour = policies.behaviour_policy()
    elif average == "random_question":
        behaviour = policies.random_question_policy()
    elif isinstance(average, str):
        raise ValueError(f"average must be 'behaviour', 'random_question' or a number, got {average!r}")
    for i, row in enumerate(rows):
        options = {"user_id": row["user_id"], "task_id": row["task_id"]}
        env.reset(seed=derive_seed(seed, "reference", i), options=options)
        worst.append(policies.worst_return(env))
        best.append(policies.oracle_return(env))
        if behaviour is not None:
            for trial in range(trials):
                episode = policies.play(env, behaviour, derive_seed(seed, "reference", i, trial), options)
                played.append(episode.expected_return)
    mean = float(average) if behaviour is None else float(np.mean(played))
    return ReferenceReturns(float(np.mean(worst)), mean, float(np.mean(best)),
                            "given" if behaviour is None else str(average))


def summarize_elicitation(returns: Sequence[Sequence[float]], turns: Sequence[Sequence[int]],
                          questions: Sequence[Sequence[int]], successes: Sequence[Sequence[bool]],
                          reference: ReferenceReturns | None = None) -> dict[str, Any]:
    """The env's metrics from episodes indexed ``[conversation][trial]`` (one trial per seed).

    Returns ``mean_return``, ``normalised_return`` (with ``reference``), ``mean_turns``, ``mean_questions``,
    ``success_rate`` and ``pass^k`` for k = 1 .. trials.
    """
    flat = [r for row in returns for r in row]
    if not flat:
        raise ValueError("no episodes to summarise")
    n_trials = min(len(row) for row in successes)
    summary: dict[str, Any] = {
        "mean_return": float(np.mean(flat)),
        "mean_turns": float(np.mean([t for row in turns for t in row])),
        "mean_questions": float(np.mean([q for row in questions for q in row])),
        "success_rate": float(np.mean([s for row in successes for s in row])),
        "n_conversations": len(returns),
        "n_trials": n_trials,
    }
    if reference is not None:
        summary["normalised_return"] = reference.normalise(summary["mean_return"])
        summary["reference"] = dataclasses.asdict(reference)
    for k in range(1, n_trials + 1):
        summary[f"pass^{k}"] = pass_hat_k(successes, k)
    return summary
