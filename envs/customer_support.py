"""Customer support: a customer reports a problem with a product and reacts to the agent's answer."""

from __future__ import annotations

import itertools

from envs.conversation import ConversationEnv
from envs.features import STYLE_DIMENSIONS
from envs.scenarios import Scenario, Task, UserGroup

_PRODUCTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wifi router", ("router", "wifi")),
    ("laptop", ("laptop",)),
    ("phone app", ("app", "phone")),
    ("smart TV", ("tv", "smart")),
    ("printer", ("printer",)),
    ("online banking account", ("account", "banking")),
    ("streaming subscription", ("subscription", "streaming")),
    ("smart thermostat", ("thermostat", "heating")),
)
_PROBLEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("keeps disconnecting", ("disconnecting", "connection")),
    ("won't turn on", ("turn", "power")),
    ("shows an error after the update", ("error", "update")),
    ("is very slow", ("slow", "speed")),
    ("charged me twice", ("charged", "refund")),
    ("won't let me log in", ("log", "password")),
    ("lost all my settings", ("settings", "reset")),
    ("makes a strange noise", ("noise",)),
)

SUPPORT_TASKS: tuple[Task, ...] = tuple(
    Task(
        f"support-{i:03d}",
        f"help me with my {product} that {problem}",
        tuple(dict.fromkeys(product_kw + problem_kw)),
        reference=f"Sorry to hear your {product} {problem}. Please restart it and contact us if it continues.",
    )
    for i, ((product, product_kw), (problem, problem_kw)) in enumerate(itertools.product(_PRODUCTS, _PROBLEMS))
)

SCENARIO = Scenario(
    name="support",
    dimensions=STYLE_DIMENSIONS + ("jargon",),
    groups=(
        UserGroup(
            "quick_fixers",
            share=0.6,
            preference_center={"brevity": 0.7, "structure": 0.6, "formality": 0.2, "warmth": -0.2},
        ),
        UserGroup(
            "reassurance_seekers",
            share=0.4,
            preference_center={"warmth": 0.7, "brevity": -0.3, "examples": 0.4, "structure": 0.2, "formality": 0.3},
        ),
    ),
    tasks=SUPPORT_TASKS,
    traits={"tech_savvy": {"low": 0.4, "medium": 0.35, "high": 0.25}},
    # Jargon tolerance follows technical savvy: the domain-specific dimension of this scenario.
    trait_effects={
        "tech_savvy": {
            "low": {"jargon": -0.8, "technical_depth": -0.4},
            "high": {"jargon": 0.6, "technical_depth": 0.4},
        }
    },
    history_topics=(
        "ask why my last invoice is higher than usual",
        "report that my parcel arrived damaged",
        "ask how to change the email on my account",
        "complain that the support line kept me waiting",
        "ask whether my warranty covers a cracked screen",
        "request a callback about my internet contract",
        "ask how to cancel an order",
        "thank the team for fixing my connection",
    ),
)


class CustomerSupportEnv(ConversationEnv):
    """A customer brings a product problem; the policy is the support agent; the customer gives feedback.

    ## Description
    Each episode draws a customer from a :class:`~envs.population.UserPopulation` and one of 64 support tasks
    (8 products x 8 problems). Customers differ in style preferences (quick fixers want short, structured
    steps; reassurance seekers want warmth and examples) and in technical savvy, which sets their
    **jargon tolerance**: low-savvy customers are put off by terms like DNS or firmware, high-savvy ones
    prefer them. With ``max_turns > 1`` the customer follows up with what they want changed.

    ## Observation
    The conversation so far as text (``gymnasium.spaces.Text``), as in every attune conversation env;
    ``info["messages"]`` holds the exact chat messages.

    ## Action
    The agent's reply, a string (``gymnasium.spaces.Text``, up to 16,384 characters).

    ## Reward
    The customer's feedback through the ``feedback`` channel (rating, utility, pairwise, critique,
    implicit). ``info["terms"]`` has the utility term of every dimension, ``jargon`` included, and
    ``relevance`` (the product and the problem covered in the reply's own sentences; restating the
    customer's message earns nothing, see :func:`envs.relevance.keyword_relevance`).

    ## Episode end
    Terminated when the customer is satisfied or leaves (``patience``, ``leave_utility``), or after one
    reply when ``max_turns=1``; truncated after ``max_turns`` replies otherwise.

    ## Arguments
    Those of :class:`~envs.conversation.ConversationEnv`.

    ## Version history
    - v0: initial release.
    - v1: relevance counts only the task covered in the reply's own sentences (copying the request,
      repetition, padding and stuffed style words count against it), lexicon features saturate, and a
      style term counts at face value only for a relevant reply: echoing the request no longer pays.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/CustomerSupport-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step("Please reboot the router and check the DNS settings.")
    >>> "jargon" in info["terms"] and terminated
    True
    """

    scenario = "support"
