"""Tutor: a learner asks about a concept and reacts to the explanation."""

from __future__ import annotations

import itertools

from envs.conversation import ConversationEnv
from envs.features import STYLE_DIMENSIONS
from envs.scenarios import Scenario, Task, UserGroup

_CONCEPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("photosynthesis", ("photosynthesis", "light", "plants")),
    ("fractions", ("fractions", "numerator", "denominator")),
    ("the water cycle", ("water", "evaporation", "rain")),
    ("Newton's second law", ("force", "mass", "acceleration")),
    ("compound interest", ("interest", "compound", "rate")),
    ("the French Revolution", ("revolution", "france", "1789")),
    ("recursion in programming", ("recursion", "function", "base")),
    ("supply and demand", ("supply", "demand", "price")),
    ("the Pythagorean theorem", ("triangle", "hypotenuse", "squares")),
    ("DNA replication", ("dna", "strand", "replication")),
    ("plate tectonics", ("plates", "earthquakes", "tectonics")),
    ("probability", ("probability", "chance", "outcomes")),
    ("the past perfect tense", ("tense", "past", "perfect")),
    ("electric circuits", ("circuit", "current", "voltage")),
    ("climate versus weather", ("climate", "weather")),
    ("linear equations", ("equation", "linear", "variable")),
)
_REQUESTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("explain {concept}", ()),
    ("give me a practice question on {concept}", ("question", "practice")),
    ("help me understand why {concept} matters", ("matters", "why")),
    ("summarise {concept} for my exam", ("exam", "summary")),
)

TUTOR_TASKS: tuple[Task, ...] = tuple(
    Task(
        f"tutor-{i:03d}",
        request.format(concept=concept),
        tuple(dict.fromkeys(concept_kw + request_kw)),
        reference=f"{concept[0].upper() + concept[1:]} is an important topic. Read your textbook chapter on it.",
    )
    for i, ((concept, concept_kw), (request, request_kw)) in enumerate(itertools.product(_CONCEPTS, _REQUESTS))
)

SCENARIO = Scenario(
    name="tutor",
    dimensions=STYLE_DIMENSIONS + ("simplicity",),
    groups=(
        UserGroup(
            "step_by_step",
            share=0.6,
            preference_center={"structure": 0.7, "examples": 0.6, "brevity": 0.1, "warmth": 0.3},
        ),
        UserGroup(
            "big_picture",
            share=0.4,
            preference_center={"brevity": 0.5, "examples": 0.2, "structure": -0.3, "technical_depth": 0.3, "warmth": -0.1},
        ),
    ),
    tasks=TUTOR_TASKS,
    traits={"learner_level": {"novice": 0.4, "intermediate": 0.4, "advanced": 0.2}},
    # The learner's level sets how simple the language must be: this scenario's own dimension.
    trait_effects={
        "learner_level": {
            "novice": {"simplicity": 0.8, "technical_depth": -0.5},
            "advanced": {"simplicity": -0.6, "technical_depth": 0.6},
        }
    },
    history_topics=(
        "ask for help with my algebra homework",
        "say I failed my last chemistry quiz",
        "ask how to revise for a history exam",
        "explain what I already know about cells",
        "ask for book recommendations on space",
        "say which topics in physics confuse me",
        "ask how long to study every day",
        "share my essay introduction for feedback",
    ),
)


class TutorEnv(ConversationEnv):
    """A learner asks a tutor about a concept; the policy is the tutor; the learner gives feedback.

    ## Description
    Each episode draws a learner from a :class:`~envs.population.UserPopulation` and one of 64 tutoring tasks
    (16 concepts x 4 kinds of request). Learners differ in how they like to learn (step by step, with
    structure and examples, or the big picture, briefly) and in **learner level** (novice, intermediate,
    advanced), which sets how much they value plain language (``simplicity``: short words, short
    sentences) against technical depth. With ``max_turns > 1`` the learner says what they need changed.

    ## Observation
    The conversation so far as text (``gymnasium.spaces.Text``); ``info["messages"]`` holds the messages.

    ## Action
    The tutor's reply, a string (``gymnasium.spaces.Text``, up to 16,384 characters).

    ## Reward
    The learner's feedback through the ``feedback`` channel (rating, utility, pairwise, critique,
    implicit). ``info["terms"]`` has the utility term of every dimension, ``simplicity`` included, and
    ``relevance`` (the concept's key terms covered in the reply's own sentences; restating the learner's
    question earns nothing, see :func:`envs.relevance.keyword_relevance`).

    ## Episode end
    Terminated when the learner is satisfied or leaves (``patience``, ``leave_utility``), or after one
    reply when ``max_turns=1``; truncated after ``max_turns`` replies otherwise.

    ## Arguments
    Those of :class:`~envs.conversation.ConversationEnv`.

    ## Version history
    - v0: initial release.
    - v1: relevance counts only the task covered in the reply's own sentences (copying the request,
      repetition, padding and stuffed style words count against it), lexicon features saturate, and a
      style term counts at face value only for a relevant reply: echoing the request no longer pays.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/Tutor-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step("Plants use light to make food. That is photosynthesis.")
    >>> "simplicity" in info["terms"]
    True
    """

    scenario = "tutor"
