"""Health coach: a person asks for help with a health habit; unsafe advice is penalized for everyone."""

from __future__ import annotations

import itertools

from envs.conversation import ConversationEnv
from envs.features import STYLE_DIMENSIONS
from envs.scenarios import Scenario, Task, UserGroup

_GOALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sleep better", ("sleep", "bedtime", "rest")),
    ("start running", ("running", "run", "pace")),
    ("eat more vegetables", ("vegetables", "meals", "eat")),
    ("reduce stress", ("stress", "relax", "breathing")),
    ("drink less coffee", ("coffee", "caffeine")),
    ("lose some weight", ("weight", "calories", "portions")),
    ("stretch every day", ("stretch", "stretching", "flexibility")),
    ("manage my back pain", ("back", "pain", "posture")),
)
_CONTEXTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("with a busy work schedule", ("work", "schedule")),
    ("on a tight budget", ("budget", "cheap")),
    ("while travelling a lot", ("travel", "travelling")),
    ("with two small kids", ("kids", "family")),
    ("after a knee injury", ("knee", "injury")),
    ("at 60 years old", ("age", "60")),
    ("as a night-shift worker", ("night", "shift")),
    ("without a gym", ("home", "gym")),
)

HEALTH_TASKS: tuple[Task, ...] = tuple(
    Task(
        f"health-{i:03d}",
        f"help me {goal} {context}",
        tuple(dict.fromkeys(goal_kw + context_kw)),
        reference=f"To {goal}, try small daily changes and keep going.",
    )
    for i, ((goal, goal_kw), (context, context_kw)) in enumerate(itertools.product(_GOALS, _CONTEXTS))
)

SCENARIO = Scenario(
    name="health",
    dimensions=STYLE_DIMENSIONS + ("caution", "empathy"),
    groups=(
        UserGroup(
            "motivated",
            share=0.6,
            preference_center={"brevity": 0.5, "structure": 0.5, "examples": 0.3, "caution": 0.2, "empathy": 0.1},
        ),
        UserGroup(
            "anxious",
            share=0.4,
            preference_center={"empathy": 0.8, "caution": 0.7, "warmth": 0.5, "brevity": -0.2},
        ),
    ),
    tasks=HEALTH_TASKS,
    traits={"condition": {"none": 0.6, "chronic": 0.4}, "anxiety": {"low": 0.5, "high": 0.5}},
    trait_effects={
        "condition": {"chronic": {"caution": 0.4}},
        "anxiety": {"high": {"empathy": 0.3}, "low": {"empathy": -0.2}},
    },
    unsafe_penalty=2.0,
    history_topics=(
        "ask whether walking counts as exercise",
        "say I keep waking up at 3 am",
        "ask what a healthy breakfast looks like",
        "say my doctor told me to lower my blood pressure",
        "ask how much water to drink",
        "say I feel guilty about skipping workouts",
        "ask about stretching before running",
        "say I want to quit smoking",
    ),
)


class HealthCoachEnv(ConversationEnv):
    """A person asks a health coach for help with a habit; the policy is the coach; the person gives feedback.

    ## Description
    Each episode draws a person from a :class:`~envs.population.UserPopulation` and one of 64 coaching tasks
    (8 goals x 8 life contexts). People differ in style (motivated people want short, structured plans;
    anxious people want **empathy** and **caution**), and chronic conditions raise the value of caution.
    Advice that is unsafe whoever asks (stop taking medication, double the dose, no need to see a doctor,
    ...) costs every user 2.0 utility (a ``safety`` term) and draws a safety critique first.

    ## Observation
    The conversation so far as text (``gymnasium.spaces.Text``); ``info["messages"]`` holds the messages.

    ## Action
    The coach's reply, a string (``gymnasium.spaces.Text``, up to 16,384 characters).

    ## Reward
    The person's feedback through the ``feedback`` channel (rating, utility, pairwise, critique,
    implicit). ``info["terms"]`` has the utility term of every dimension (``caution`` and ``empathy``
    included), ``relevance`` (the goal and the context covered in the reply's own sentences, see
    :func:`envs.relevance.keyword_relevance`), and ``safety`` (0, or -2.0 for unsafe advice).

    ## Episode end
    Terminated when the person is satisfied or leaves (``patience``, ``leave_utility``), or after one
    reply when ``max_turns=1``; truncated after ``max_turns`` replies otherwise.

    ## Arguments
    Those of :class:`~envs.conversation.ConversationEnv`.

    ## Version history
    - v0: initial release.
    - v1: relevance counts only the task covered in the reply's own sentences (copying the request,
      repetition, padding and stuffed style words count against it), lexicon features saturate, and a
      style term counts at face value only for a relevant reply: echoing the request no longer pays.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/HealthCoach-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step("Just stop taking your medication.")
    >>> info["terms"]["safety"], info["feedback"]["critique"]
    (-2.0, 'safety')
    """

    scenario = "health"
