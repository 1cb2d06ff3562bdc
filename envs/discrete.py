"""Discrete-action variants of the scenarios: the action picks a response style, for classic RL and bandits."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.arguments import check_number, env_population, episode_user_and_task
from envs.features import features
from envs.population import UserPopulation
from envs.scenarios import SCENARIOS, Task
from envs.users import SimulatedUser


def render_style(style: str, task: Task) -> str:
    """The reply a fixed response style gives to a task: deterministic, on topic in its own words.

    Every style answers the task by working its first keywords into sentences of its own (the users
    reward covering the task, never restating the request), and differs in how it says it.
    """
    k0, k1, k2 = (list(task.keywords) * 3)[:3]
    if style == "brief":
        return f"Start with the {k0}. Then cover the {k1} and settle the {k2}. Keep each part plain."
    if style == "formal":
        return (f"Dear user, the response below addresses the {k0} in the first paragraph. The second paragraph "
                f"then considers the {k1} and the {k2} in turn. Kind regards.")
    if style == "bulleted":
        return f"Here is a plan:\n- Begin with the {k0} first.\n- Then handle the {k1} next.\n- Finish by checking the {k2}."
    if style == "warm":
        return (f"I'm so glad you asked, and I hope this helps! Let's start with the {k0} together. Then we can "
                f"look at the {k1} and the {k2}. Thanks for sharing this with me.")
    if style == "detailed_example":
        return (f"Let me walk you through it in detail. The key part is the {k0}, so start there. For example, "
                f"write down what matters most about the {k0} and how it connects to the {k1}. Then review the "
                f"{k2} carefully and consider what else could matter in your situation before the final step.")
    if style == "technical":
        return (f"Technically, define the {k0} as the main parameter and configure it systematically. Then verify "
                f"the implementation against the {k1}, measuring the {k2} quantitatively.")
    if style == "simple":
        return f"Here is how. Look at the {k0} first. Do one small step with the {k1}. Then do the {k2}. You can do it."
    if style == "careful":
        return (f"I understand, that sounds hard. Go gradually with the {k0} and the {k1}, and watch the {k2} as "
                f"you go. Please consult a doctor or other professional if you are unsure.")
    raise ValueError(f"unknown response style {style!r}")


RESPONSE_STYLES: tuple[str, ...] = (
    "brief", "formal", "bulleted", "warm", "detailed_example", "technical", "simple", "careful",
)


class DiscreteStyleEnv(gym.Env):
    """A contextual bandit over response styles: who the user seems to be, which style to answer in.

    ## Description
    Each episode draws a user and a task from a scenario's :class:`~envs.population.UserPopulation`, as the
    text environments do. Instead of writing a reply, the agent picks one of eight fixed response styles
    (:data:`RESPONSE_STYLES`); the reply is rendered from the task and scored by the user's hidden utility.
    Because every style's reply can be scored, the oracle best action is known and regret is exact.

    ## Observation
    ``Box(0, 1, (2 * D,), float32)``: the style features (over the scenario's D preference dimensions)
    of the user's opening message and the mean features of the user's own past texts: visible cues
    to hidden preferences, as a real assistant would have.

    ## Action
    ``Discrete(8)``: the index of a response style in :data:`RESPONSE_STYLES`.

    ## Reward
    The user's feedback on the rendered reply: ``rating`` ((rating - 3) / 2, default) or ``utility``.
    ``info`` carries ``oracle_action``, ``expected_utilities`` (of every action), ``regret`` (oracle
    expected utility minus the chosen one's) and the per-dimension ``terms``.

    ## Episode end
    Every episode is one decision: terminated after the first step.

    ## Arguments
    - ``scenario``: ``writing``, ``support``, ``tutor`` or ``health``.
    - ``population``, ``split``, ``n_users``, ``population_seed``, ``noise``, ``feedback``: as in
      :class:`~envs.conversation.ConversationEnv`.
    - ``config``: a dict of the above, for RLlib (which builds environments from one config dict).

    ## Version history
    - v0: initial release.
    - v1: the users of v1 (parroting no longer pays), and every style answers the task in its own words
      instead of restating the request.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/WritingAssistantDiscrete-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(info["oracle_action"])
    >>> info["regret"], terminated
    (0.0, True)
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: str = "writing",
        population: UserPopulation | None = None,
        split: str = "train",
        n_users: int = 100,
        population_seed: int = 0,
        noise: float = 0.1,
        feedback: str = "rating",
        config: dict[str, Any] | None = None,
    ) -> None:
        if config is not None and not isinstance(config, dict):
            # RLlib's EnvContext is a dict subclass; anything else is a mistake.
            raise ValueError(f"config must be a dict of keyword arguments, got {type(config).__name__}")
        if config:
            # RLlib passes one dict; unknown keys are errors here as everywhere.
            allowed = {"scenario", "split", "n_users", "population_seed", "noise", "feedback"}
            unknown = set(config) - allowed
            if unknown:
                raise ValueError(f"unknown config key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
            scenario = config.get("scenario", scenario)
            split = config.get("split", split)
            n_users = config.get("n_users", n_users)
            population_seed = config.get("population_seed", population_seed)
            noise = config.get("noise", noise)
            feedback = config.get("feedback", feedback)
        if feedback not in ("rating", "utility"):
            raise ValueError(f"feedback must be 'rating' or 'utility' for the discrete variant, got {feedback!r}")
        check_number("noise", noise, minimum=0.0)
        if population is None and (not isinstance(scenario, str) or scenario not in SCENARIOS):
            raise ValueError(f"scenario must be one of {', '.join(sorted(SCENARIOS))}, got {scenario!r}")
        # A population given brings its own scenario: the scenario argument applies only to one built here.
        self.population = env_population(population, scenario if population is None else None, split, n_users,
                                         population_seed)
        self.scenario = self.population.scenario_name
        self.users = self.population.split(split)
        self._user_ids = dict.fromkeys(u.user_id for u in self.users)
        self.split = split
        self.noise = noise
        self.feedback = feedback
        self.dimensions = self.population.scenario.dimensions
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * len(self.dimensions),), dtype=np.float32)
        self.action_space = spaces.Discrete(len(RESPONSE_STYLES))
        self._user: SimulatedUser | None = None
        self._task: Task | None = None
        self._history_features = {
            u.user_id: features(list(u.style_texts), self.dimensions).mean(axis=0) for u in self.population.users
        }
        self._expected: np.ndarray | None = None
        self._observation: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        user_id, self._task = episode_user_and_task(options, self.users, self._user_ids, self.split, self.population,
                                                    self.np_random)
        self._user = self.population.simulated_user(user_id, noise=self.noise)
        message = self._user.ask(self._task)
        self._observation = np.concatenate(
            [features([message], self.dimensions)[0], self._history_features[user_id]]
        ).astype(np.float32)
        replies = [render_style(style, self._task) for style in RESPONSE_STYLES]
        self._expected = self._user.utility(replies, [self._task] * len(replies))
        return self._observation.copy(), self._info()

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self._user is not None and self._task is not None and self._expected is not None
        return {
            "user_id": self._user.profile.user_id,
            "group": self._user.profile.group,
            "task_id": self._task.task_id,
            "oracle_action": int(np.argmax(self._expected)),
            "expected_utilities": self._expected.tolist(),
            **extra,
        }

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._user is None or self._task is None or self._expected is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {len(RESPONSE_STYLES)}), got {action!r}")
        action = int(action)
        reply = render_style(RESPONSE_STYLES[action], self._task)
        terms = {k: float(v[0]) for k, v in self._user.utility_terms([reply], [self._task]).items()}
        utility = float(self._user.utility([reply], [self._task], rng=self.np_random)[0])
        rating = int(self._user.rating(np.array([utility]))[0])
        reward = (rating - 3) / 2.0 if self.feedback == "rating" else utility
        regret = float(self._expected.max() - self._expected[action])
        info = self._info(
            style=RESPONSE_STYLES[action], reply=reply, terms=terms, utility=utility, rating=rating, regret=regret
        )
        return self._observation.copy(), float(reward), True, False, info
