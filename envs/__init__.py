"""attune environments: simulated users with hidden preferences, as Gymnasium environments.

Importing this package registers every environment id with Gymnasium (entry points are strings, so
nothing heavy is imported until an environment is made). This package never imports torch or TRL.

>>> import gymnasium as gym
>>> import envs
>>> env = gym.make("attune/WritingAssistant-v0")
"""

import gymnasium

from envs.features import STYLE_DIMENSIONS, style_features
from envs.users import SimulatedUser, Task, UserGroup, UserPopulation, UserProfile

gymnasium.register(
    id="attune/WritingAssistant-v0",
    entry_point="envs.writing_assistant:WritingAssistantEnv",
    disable_env_checker=True,  # the contract tests run check_env; the wrapper would re-check every reset
)

ENV_IDS: tuple[str, ...] = tuple(k for k in gymnasium.registry if k.startswith("attune/"))

__all__ = [
    "ENV_IDS",
    "STYLE_DIMENSIONS",
    "SimulatedUser",
    "Task",
    "UserGroup",
    "UserPopulation",
    "UserProfile",
    "style_features",
]
