"""attune environments: simulated users with hidden preferences, as Gymnasium environments.

Importing this package registers every environment id with Gymnasium (entry points are strings, so
nothing heavy is imported until an environment is made). This package never imports torch or TRL.

>>> import gymnasium as gym
>>> import envs
>>> env = gym.make("attune/WritingAssistant-v0")
"""

import gymnasium

from envs.conversation import ConversationEnv
from envs.features import ALL_DIMENSIONS, STYLE_DIMENSIONS, style_features
from envs.population import UserPopulation
from envs.scenarios import Scenario, Task, UserGroup, register_scenario
from envs.users import SimulatedUser, UserProfile

# The contract tests run check_env on every id; the wrapper would re-check on every make.
gymnasium.register(
    id="attune/WritingAssistant-v0", entry_point="envs.writing_assistant:WritingAssistantEnv", disable_env_checker=True
)
gymnasium.register(
    id="attune/CustomerSupport-v0", entry_point="envs.customer_support:CustomerSupportEnv", disable_env_checker=True
)
gymnasium.register(id="attune/Tutor-v0", entry_point="envs.tutor:TutorEnv", disable_env_checker=True)
gymnasium.register(id="attune/HealthCoach-v0", entry_point="envs.health_coach:HealthCoachEnv", disable_env_checker=True)

# Discrete-action variants: the action picks one of eight response styles (classic RL and bandits).
gymnasium.register(
    id="attune/WritingAssistantDiscrete-v0",
    entry_point="envs.discrete:DiscreteStyleEnv",
    kwargs={"scenario": "writing"},
    disable_env_checker=True,
)
gymnasium.register(
    id="attune/CustomerSupportDiscrete-v0",
    entry_point="envs.discrete:DiscreteStyleEnv",
    kwargs={"scenario": "support"},
    disable_env_checker=True,
)
gymnasium.register(
    id="attune/TutorDiscrete-v0",
    entry_point="envs.discrete:DiscreteStyleEnv",
    kwargs={"scenario": "tutor"},
    disable_env_checker=True,
)
gymnasium.register(
    id="attune/HealthCoachDiscrete-v0",
    entry_point="envs.discrete:DiscreteStyleEnv",
    kwargs={"scenario": "health"},
    disable_env_checker=True,
)

ENV_IDS: tuple[str, ...] = tuple(k for k in gymnasium.registry if k.startswith("attune/"))
TEXT_ENV_IDS: tuple[str, ...] = tuple(k for k in ENV_IDS if "Discrete" not in k)
"""The conversation environments (text in, text out): what LLM policies train on."""
DISCRETE_ENV_IDS: tuple[str, ...] = tuple(k for k in ENV_IDS if "Discrete" in k)
"""The discrete-action variants (a response style per step): for classic RL and bandit baselines."""

__all__ = [
    "ALL_DIMENSIONS",
    "ConversationEnv",
    "DISCRETE_ENV_IDS",
    "ENV_IDS",
    "TEXT_ENV_IDS",
    "STYLE_DIMENSIONS",
    "Scenario",
    "SimulatedUser",
    "Task",
    "UserGroup",
    "UserPopulation",
    "UserProfile",
    "register_scenario",
    "style_features",
]
