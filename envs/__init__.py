"""attune environments: simulated users with hidden preferences, as Gymnasium environments.

Importing this package registers every environment id with Gymnasium (entry points are strings, so
nothing heavy is imported until an environment is made). This package never imports torch or TRL.

>>> import gymnasium as gym
>>> import envs
>>> env = gym.make("attune/WritingAssistant-v1")
"""

import gymnasium

from envs.conversation import ConversationEnv
from envs.features import ALL_DIMENSIONS, STYLE_DIMENSIONS, style_features
from envs.population import UserPopulation
from envs.scenarios import Scenario, Task, UserGroup, register_scenario
from envs.users import SimulatedUser, UserProfile

from envs.registry import VERSION, env_kind, register_scenario_envs, registered_env_ids, scenario_of
from envs.scenarios import BUILTIN_SCENARIOS, SCENARIOS

for _name, _module, _class, _stem in BUILTIN_SCENARIOS:
    register_scenario_envs(_name, f"{_module}:{_class}", _stem)

# The elicitation env (clarifying questions before the answer) has no discrete variant: its point is the
# conversation. Its scenario is looked up lazily like the built-ins'.
SCENARIOS.setdefault("elicitation", "envs.elicitation:SCENARIO")
gymnasium.register(id=f"attune/Elicitation-v{VERSION}", entry_point="envs.elicitation:ElicitationEnv",
                   disable_env_checker=True)
ELICITATION_ENV_IDS: tuple[str, ...] = (f"attune/Elicitation-v{VERSION}",)
"""Conversation envs where the assistant may ask the user questions before answering (see envs/elicitation.py)."""

TEXT_ENV_IDS: tuple[str, ...] = tuple(f"attune/{stem}-v{VERSION}" for *_, stem in BUILTIN_SCENARIOS)
"""The built-in conversation environments (text in, text out): what LLM policies train on."""
DISCRETE_ENV_IDS: tuple[str, ...] = tuple(f"attune/{stem}Discrete-v{VERSION}" for *_, stem in BUILTIN_SCENARIOS)
"""The built-in discrete-action variants (a response style per step): for classic RL and bandit baselines."""
ENV_IDS: tuple[str, ...] = TEXT_ENV_IDS + DISCRETE_ENV_IDS
"""Every built-in id; :func:`registered_env_ids` also lists ids registered later (yours)."""

__all__ = [
    "ALL_DIMENSIONS",
    "ConversationEnv",
    "DISCRETE_ENV_IDS",
    "ELICITATION_ENV_IDS",
    "ENV_IDS",
    "TEXT_ENV_IDS",
    "STYLE_DIMENSIONS",
    "Scenario",
    "SimulatedUser",
    "Task",
    "UserGroup",
    "UserPopulation",
    "UserProfile",
    "env_kind",
    "register_scenario",
    "register_scenario_envs",
    "registered_env_ids",
    "scenario_of",
    "style_features",
]
