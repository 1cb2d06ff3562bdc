"""Writing assistant: a user asks for a short piece of writing and reacts to the draft."""

from __future__ import annotations

import itertools
import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.users import (
    SATISFIED_MESSAGE,
    Scenario,
    SimulatedUser,
    Task,
    UserGroup,
    UserPopulation,
)

_DOCUMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("an email to a colleague", ("email", "colleague")),
    ("a note to my landlord", ("landlord", "note")),
    ("a short blog post", ("blog", "post")),
    ("a cover letter paragraph", ("cover", "letter")),
    ("a thank-you message", ("thank", "message")),
    ("a meeting summary", ("meeting", "summary")),
    ("a social media post", ("social", "post")),
    ("an invitation", ("invitation", "invite")),
)
_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a delayed project deadline", ("project", "deadline", "delay")),
    ("a broken heater", ("heater", "broken", "repair")),
    ("learning to cook", ("cook", "cooking", "recipe")),
    ("a new job", ("job", "new", "role")),
    ("a team offsite", ("team", "offsite", "event")),
    ("saving money", ("money", "saving", "budget")),
    ("a product launch", ("product", "launch", "customers")),
    ("a birthday party", ("birthday", "party", "celebrate")),
)

WRITING_TASKS: tuple[Task, ...] = tuple(
    Task(f"write-{i:03d}", f"write {doc} about {topic}", tuple(dict.fromkeys(doc_kw + topic_kw)))
    for i, ((doc, doc_kw), (topic, topic_kw)) in enumerate(itertools.product(_DOCUMENTS, _TOPICS))
)

WRITING_GROUPS: tuple[UserGroup, ...] = (
    UserGroup(
        "concise_professional",
        share=0.7,
        preference_center={
            "brevity": 0.8,
            "formality": 0.5,
            "structure": 0.4,
            "technical_depth": 0.0,
            "warmth": -0.2,
            "examples": -0.2,
        },
    ),
    UserGroup(
        "warm_detailed",
        share=0.3,
        preference_center={
            "brevity": -0.6,
            "formality": -0.4,
            "structure": -0.2,
            "technical_depth": 0.0,
            "warmth": 0.8,
            "examples": 0.6,
        },
    ),
)

SCENARIO = Scenario(
    name="writing",
    groups=WRITING_GROUPS,
    tasks=WRITING_TASKS,
    history_topics=(
        "tell my sister about my weekend hiking trip",
        "ask my manager for a day off next Friday",
        "reply to a neighbour about a parcel",
        "describe my favourite book to a friend",
        "complain to a shop about a late delivery",
        "congratulate a colleague on a promotion",
        "summarise a podcast episode about sleep",
        "recommend a restaurant to a visitor",
    ),
)

# Observations are plain text. Characters outside this set (rare in model output) are shown as U+FFFD;
# the exact conversation is always in info["messages"].
CHARSET: str = string.printable + "".join(chr(c) for c in range(0xA0, 0x100)) + "\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u20ac\ufffd"
_CHARSET_SET = frozenset(CHARSET)
MAX_OBSERVATION_CHARS = 16_384
MAX_REPLY_CHARS = 16_384
FEEDBACK_CHANNELS = ("rating", "utility")


def render_transcript(messages: list[dict[str, str]]) -> str:
    """The conversation as the observation text: ``User: ...`` / ``Assistant: ...`` blocks."""
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    text = "".join(c if c in _CHARSET_SET else "\ufffd" for c in text)
    return text[-MAX_OBSERVATION_CHARS:]


class WritingAssistantEnv(gym.Env):
    """A simulated user asks for a piece of writing; the policy writes it; the user gives feedback.

    ## Description
    Each episode draws a user from a :class:`~envs.users.UserPopulation` (hidden preference weights over
    brevity, formality, technical depth, warmth, structure and examples) and a writing task (64 tasks:
    8 kinds of document x 8 topics). The user phrases the request in their own style, reads the
    assistant's reply, and answers with feedback. With ``max_turns > 1`` the user follows up with a
    critique naming what they most want changed, until satisfied or out of turns.

    ## Observation
    The conversation so far as text (``gymnasium.spaces.Text``): ``"User: ...\\n\\nAssistant: ..."``,
    the last 16,384 characters, characters outside :data:`CHARSET` shown as U+FFFD.
    ``info["messages"]`` holds the exact chat messages (``role``/``content``) for chat templates.

    ## Action
    The assistant's reply, a string (``gymnasium.spaces.Text``, up to 16,384 characters).

    ## Reward
    The user's feedback on the reply. ``feedback="rating"`` (default): a Likert rating 1..5 mapped to
    ``(rating - 3) / 2`` in ``[-1, 1]``. ``feedback="utility"``: the user's noisy hidden utility.
    ``info["terms"]`` has the noise-free utility term of every style dimension plus ``relevance``.

    ## Episode end
    Terminated when the user is satisfied (expected utility >= ``satisfaction_utility``), or after the
    single reply when ``max_turns=1``. Truncated when ``max_turns > 1`` turns pass without satisfaction.

    ## Arguments
    - ``population``: a ready :class:`~envs.users.UserPopulation`; else one is built from
      ``n_users`` and ``population_seed``.
    - ``split``: which users episodes draw from: ``train`` (default), ``held_out`` or ``all``.
    - ``max_turns``: replies per episode (1 = single-turn).
    - ``feedback``: ``rating`` or ``utility``.
    - ``noise``: standard deviation of the user's utility noise.
    - ``satisfaction_utility``: expected utility at which the user is satisfied and stops.
    - ``render_mode``: ``None`` or ``"ansi"`` (returns the transcript).

    ## Version history
    - v0: initial release.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/WritingAssistant-v0", max_turns=2)
    >>> obs, info = env.reset(seed=0)
    >>> obs.startswith("User: ")
    True
    >>> obs, reward, terminated, truncated, info = env.step("Dear colleague, the deadline moves to Friday.")
    >>> -1.0 <= reward <= 1.0 and sorted(info["terms"]) == sorted(envs.STYLE_DIMENSIONS + ("relevance",))
    True
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    scenario = "writing"

    def __init__(
        self,
        population: UserPopulation | None = None,
        split: str = "train",
        n_users: int = 100,
        population_seed: int = 0,
        max_turns: int = 1,
        feedback: str = "rating",
        noise: float = 0.1,
        satisfaction_utility: float = 1.5,
        render_mode: str | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if feedback not in FEEDBACK_CHANNELS:
            raise ValueError(f"feedback must be one of {FEEDBACK_CHANNELS}, got {feedback!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.population = population if population is not None else UserPopulation(self.scenario, n_users, seed=population_seed)
        self.users = self.population.split(split)
        self.split = split
        self.max_turns = max_turns
        self.feedback = feedback
        self.noise = noise
        self.satisfaction_utility = satisfaction_utility
        self.render_mode = render_mode
        self.observation_space = spaces.Text(max_length=MAX_OBSERVATION_CHARS, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(max_length=MAX_REPLY_CHARS, min_length=0, charset=CHARSET)
        self._user: SimulatedUser | None = None
        self._task: Task | None = None
        self._messages: list[dict[str, str]] = []
        self._turn = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "user_id" in options:
            user_id = options["user_id"]
            if user_id not in {u.user_id for u in self.users}:
                raise ValueError(f"user_id {user_id!r} is not in the {self.split!r} split of this environment")
        else:
            user_id = self.users[int(self.np_random.integers(len(self.users)))].user_id
        if "task_id" in options:
            self._task = self.population.task(options["task_id"])
        else:
            self._task = self.population.tasks[int(self.np_random.integers(len(self.population.tasks)))]
        self._user = self.population.simulated_user(user_id, noise=self.noise)
        self._messages = [{"role": "user", "content": self._user.ask(self._task)}]
        self._turn = 0
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
        terms = {k: float(v[0]) for k, v in self._user.utility_terms([action], [self._task]).items()}
        expected_utility = sum(terms.values())
        utility = float(self._user.utility([action], [self._task], rng=self.np_random)[0])
        rating = int(self._user.rating(np.array([utility]))[0])
        reward = (rating - 3) / 2.0 if self.feedback == "rating" else utility
        self._messages.append({"role": "assistant", "content": action})
        self._turn += 1

        satisfied = expected_utility >= self.satisfaction_utility
        terminated = satisfied or self.max_turns == 1
        truncated = not terminated and self._turn >= self.max_turns
        if satisfied:
            critique, message = None, SATISFIED_MESSAGE
        else:
            critique, message = self._user.critique(action, self._task)
        if not (terminated or truncated):
            self._messages.append({"role": "user", "content": message})
        info = self._info(
            terms=terms,
            utility=utility,
            expected_utility=expected_utility,
            rating=rating,
            satisfied=satisfied,
            feedback={"rating": rating, "critique": critique, "message": message},
        )
        return render_transcript(self._messages), float(reward), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return render_transcript(self._messages)
        return None

