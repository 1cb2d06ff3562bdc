"""The conversation loop every scenario shares: a simulated user asks, the policy replies, the user reacts.

Each scenario file (``writing_assistant.py``, ``customer_support.py``, ``tutor.py``, ``health_coach.py``)
subclasses :class:`ConversationEnv` with its own scenario name and documentation; the behaviour lives
here once, so that every scenario offers the same feedback channels and episode options.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.arguments import check_integer, check_number, env_population, episode_user_and_task
from envs.population import UserPopulation
from envs.scenarios import Task
from envs.users import SATISFIED_MESSAGE, SimulatedUser

# Observations are plain text. Characters outside this set (rare in model output) are shown as U+FFFD;
# the exact conversation is always in info["messages"].
CHARSET: str = (
    string.printable
    + "".join(chr(c) for c in range(0xA0, 0x100))
    + "\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u20ac\ufffd"
)
_CHARSET_SET = frozenset(CHARSET)
MAX_OBSERVATION_CHARS = 16_384
MAX_REPLY_CHARS = 16_384
FEEDBACK_CHANNELS = ("rating", "utility", "pairwise", "critique", "implicit")
REWARD_MODES = ("per_turn", "episode_end")
IMPLICIT_VALUES = {"satisfied": 1.0, "continues": 0.5, "rephrases": 0.0, "leaves": -1.0}
# The range of each channel's values; adversarial feedback is reflected within it.
CHANNEL_RANGES = {"rating": (-1.0, 1.0), "utility": (-3.0, 3.0), "pairwise": (-1.0, 1.0), "critique": (-2.0, 0.0),
                  "implicit": (-1.0, 1.0)}
REPHRASE_MESSAGE = "Hmm, that's not quite it. Let me ask again: "
LEAVE_MESSAGE = "Never mind, I'll figure it out myself."


def render_transcript(messages: list[dict[str, str]]) -> str:
    """The conversation as the observation text: ``User: ...`` / ``Assistant: ...`` blocks."""
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    text = "".join(c if c in _CHARSET_SET else "\ufffd" for c in text)
    return text[-MAX_OBSERVATION_CHARS:]


class ConversationEnv(gym.Env):
    """Base class of the scenario environments; see :class:`envs.writing_assistant.WritingAssistantEnv`.

    Arguments shared by every scenario:

    - ``population``: a ready :class:`~envs.population.UserPopulation`; else one is built from ``n_users`` and
      ``population_seed``.
    - ``split``: which users episodes draw from: ``train`` (default), ``held_out`` or ``all``.
    - ``max_turns``: replies per episode (1 = single-turn).
    - ``feedback``: the reward channel: ``rating`` (Likert 1..5 as ``(rating - 3) / 2``), ``utility`` (the
      noisy hidden utility), ``pairwise`` (+1 if the user prefers this reply to the previous one, or to the
      task's reference reply on the first turn, else -1), ``critique`` (minus the utility the user's top
      complaint would recover; 0 when satisfied), ``implicit`` (+1 satisfied, 0.5 continues, 0 rephrases,
      -1 leaves).
    - ``reward_mode``: ``per_turn`` (feedback after every reply) or ``episode_end`` (0 until the last
      reply, then the mean feedback of the episode).
    - ``noise``: standard deviation of the user's utility noise.
    - ``satisfaction_utility``: expected utility at which the user is satisfied and stops.
    - ``patience``: unsatisfying replies the user tolerates before leaving (``None``: never leaves early).
    - ``leave_utility``: a reply this bad (noisy utility) makes the user leave at once (``None``: never).
    - ``drift``: standard deviation of a random walk on each user's preference weights, one step per
      episode with that user (0: stable preferences).
    - ``inconsistent``: probability that a feedback is random instead of the user's own.
    - ``adversarial``: probability that a feedback is inverted (the user rewards what they dislike).
    - ``group_tag``: show the user's group to the policy: the opening message starts with ``[group: NAME]``
      (a group-conditioned policy, as in P-RLHF; the user's own request and feedback are unchanged).
    - ``render_mode``: ``None`` or ``"ansi"`` (returns the transcript).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    scenario: str = ""

    def __init__(
        self,
        population: UserPopulation | None = None,
        split: str = "train",
        n_users: int = 100,
        population_seed: int = 0,
        max_turns: int = 1,
        feedback: str = "rating",
        reward_mode: str = "per_turn",
        noise: float = 0.1,
        satisfaction_utility: float = 1.5,
        patience: int | None = None,
        leave_utility: float | None = None,
        drift: float = 0.0,
        inconsistent: float = 0.0,
        adversarial: float = 0.0,
        group_tag: bool = False,
        render_mode: str | None = None,
    ) -> None:
        check_integer("max_turns", max_turns, 1)
        if not isinstance(group_tag, bool):
            raise ValueError(f"group_tag must be True or False, got {group_tag!r}")
        if feedback not in FEEDBACK_CHANNELS:
            raise ValueError(f"feedback must be one of {FEEDBACK_CHANNELS}, got {feedback!r}")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        check_integer("patience", patience, 1, optional=True)
        for name, value in (("inconsistent", inconsistent), ("adversarial", adversarial)):
            check_number(name, value, 0.0, 1.0)  # probabilities
        check_number("noise", noise, minimum=0.0)
        check_number("drift", drift, minimum=0.0)
        check_number("satisfaction_utility", satisfaction_utility)
        check_number("leave_utility", leave_utility, optional=True)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.population = env_population(population, self.scenario, split, n_users, population_seed)
        self.users = self.population.split(split)
        self._user_ids = dict.fromkeys(u.user_id for u in self.users)
        self.split = split
        self.max_turns = max_turns
        self.feedback = feedback
        self.reward_mode = reward_mode
        self.noise = noise
        self.satisfaction_utility = satisfaction_utility
        self.patience = patience
        self.leave_utility = leave_utility
        self.drift = drift
        self.inconsistent = inconsistent
        self.adversarial = adversarial
        self.group_tag = group_tag
        self.render_mode = render_mode
        self.observation_space = spaces.Text(max_length=MAX_OBSERVATION_CHARS, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(max_length=MAX_REPLY_CHARS, min_length=0, charset=CHARSET)
        self._drifted: dict[str, np.ndarray] = {}
        self._user: SimulatedUser | None = None
        self._task: Task | None = None
        self._messages: list[dict[str, str]] = []
        self._turn = 0
        self._unsatisfied = 0
        self._previous_reply: str | None = None
        self._feedback_so_far: list[float] = []

    @property
    def current_user(self) -> SimulatedUser | None:
        """The simulated user of the current episode (``None`` before the first reset)."""
        return self._user

    # --- episode -------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._drifted.clear()  # a seeded reset restarts the preference drift too: same seed, same run
        user_id, self._task = episode_user_and_task(options, self.users, self._user_ids, self.split, self.population,
                                                    self.np_random)
        weights = None
        if self.drift > 0:
            base = self._drifted.get(user_id, self.population.user(user_id).weight_vector())
            weights = np.clip(base + self.np_random.normal(0.0, self.drift, size=base.shape), -1.0, 1.0)
            self._drifted[user_id] = weights
        self._user = self.population.simulated_user(user_id, noise=self.noise, weights=weights)
        opening = self._user.ask(self._task)
        if self.group_tag:
            opening = f"[group: {self._user.profile.group}] {opening}"
        self._messages = [{"role": "user", "content": opening}]
        self._turn = 0
        self._unsatisfied = 0
        self._previous_reply = None
        self._feedback_so_far = []
        return render_transcript(self._messages), self._info()

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self._user is not None and self._task is not None
        return {
            "user_id": self._user.profile.user_id,
            "group": self._user.profile.group,
            "task_id": self._task.task_id,
            "turn": self._turn,
            "messages": [dict(m) for m in self._messages],
            **extra,
        }

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._user is None or self._task is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"the action is the reply text (str), got {type(action).__name__}")
        user, task = self._user, self._task
        terms = {k: float(v[0]) for k, v in user.utility_terms([action], [task]).items()}
        expected_utility = float(sum(terms.values()))
        utility = float(user.utility([action], [task], rng=self.np_random)[0])
        rating = int(user.rating(np.array([utility]))[0])
        self._messages.append({"role": "assistant", "content": action})
        self._turn += 1

        satisfied = expected_utility >= self.satisfaction_utility
        if not satisfied:
            self._unsatisfied += 1
        leaves = not satisfied and (
            (self.leave_utility is not None and utility <= self.leave_utility)
            or (self.patience is not None and self._unsatisfied >= self.patience)
        )
        critique: str | None
        if satisfied:
            critique, message, signal = None, SATISFIED_MESSAGE, "satisfied"
        elif leaves:
            critique, message, signal = None, LEAVE_MESSAGE, "leaves"
        else:
            critique, message = user.critique(action, task)
            signal = "continues" if utility >= 0 else "rephrases"
            if signal == "rephrases":
                message = REPHRASE_MESSAGE + user.ask(task)

        value = self._channel_value(action, utility, rating, signal)
        value, corruption = self._corrupt(value)
        self._feedback_so_far.append(value)

        terminated = satisfied or leaves or self.max_turns == 1
        truncated = not terminated and self._turn >= self.max_turns
        if not (terminated or truncated):
            self._messages.append({"role": "user", "content": message})
        if self.reward_mode == "episode_end":
            reward = float(np.mean(self._feedback_so_far)) if (terminated or truncated) else 0.0
        else:
            reward = value
        self._previous_reply = action
        info = self._info(
            terms=terms,
            utility=utility,
            expected_utility=expected_utility,
            rating=rating,
            satisfied=satisfied,
            left=leaves,
            feedback={
                "channel": self.feedback,
                "value": value,
                "rating": rating,
                "critique": critique,
                "message": message,
                "signal": signal,
                "corrupted": corruption,
            },
        )
        return render_transcript(self._messages), float(reward), terminated, truncated, info

    def _channel_value(self, action: str, utility: float, rating: int, signal: str) -> float:
        assert self._user is not None and self._task is not None
        if self.feedback == "rating":
            return (rating - 3) / 2.0
        if self.feedback == "utility":
            return utility
        if self.feedback == "pairwise":
            other = self._previous_reply if self._previous_reply is not None else self._task.reference_reply()
            chosen = self._user.choose([action], [other], [self._task], self.np_random)[0]
            return 1.0 if chosen else -1.0
        if self.feedback == "critique":
            if signal == "satisfied":
                return 0.0
            return -self._user.top_complaint(action, self._task)[1]
        return IMPLICIT_VALUES[signal]

    def _corrupt(self, value: float) -> tuple[float, str | None]:
        """Inconsistent users answer at random; adversarial users reflect their answer within its range."""
        low, high = CHANNEL_RANGES[self.feedback]
        if self.inconsistent > 0 and self.np_random.random() < self.inconsistent:
            if self.feedback == "rating":
                return (int(self.np_random.integers(1, 6)) - 3) / 2.0, "inconsistent"
            if self.feedback == "pairwise":
                return (1.0 if self.np_random.random() < 0.5 else -1.0), "inconsistent"
            if self.feedback == "implicit":
                values = sorted(IMPLICIT_VALUES.values())
                return values[int(self.np_random.integers(len(values)))], "inconsistent"
            return float(self.np_random.uniform(low, high)), "inconsistent"
        if self.adversarial > 0 and self.np_random.random() < self.adversarial:
            return low + high - value, "adversarial"
        return value, None

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return render_transcript(self._messages)
        return None
