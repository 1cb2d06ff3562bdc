"""Writing assistant: a user asks for a short piece of writing and reacts to the draft."""

from __future__ import annotations

import itertools

from envs.conversation import ConversationEnv
from envs.scenarios import Scenario, Task, UserGroup

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
_TOPICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # (topic, keywords, a plain sentence on it: the task's middling reference reply)
    ("a delayed project deadline", ("project", "deadline", "delay"),
     "The project deadline has moved, and I will send the new date soon."),
    ("a broken heater", ("heater", "broken", "repair"),
     "The heater is broken again and needs a look when you have time."),
    ("learning to cook", ("cook", "cooking", "recipe"),
     "I have started cooking at home and try a new recipe each week."),
    ("a new job", ("job", "new", "role"),
     "I start the new job next month and I am looking forward to it."),
    ("a team offsite", ("team", "offsite", "event"),
     "The team offsite is planned for next month; details will follow."),
    ("saving money", ("money", "saving", "budget"),
     "I am saving some money each month, and I will share how soon."),
    ("a product launch", ("product", "launch", "customers"),
     "The product launch is coming up, and I will share the plan soon."),
    ("a birthday party", ("birthday", "party", "celebrate"),
     "We are having a birthday party on Saturday, and you are welcome to come."),
)

WRITING_TASKS: tuple[Task, ...] = tuple(
    Task(
        f"write-{i:03d}",
        f"write {doc} about {topic}",
        tuple(dict.fromkeys(doc_kw + topic_kw)),
        reference=reference,  # a plain, middling draft: on the topic, not the kind of document
    )
    for i, ((doc, doc_kw), (topic, topic_kw, reference)) in enumerate(itertools.product(_DOCUMENTS, _TOPICS))
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
    traits={"expertise": {"novice": 1.0, "intermediate": 1.0, "expert": 1.0}},
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

class WritingAssistantEnv(ConversationEnv):
    """A simulated user asks for a piece of writing; the policy writes it; the user gives feedback.

    ## Description
    Each episode draws a user from a :class:`~envs.population.UserPopulation` (hidden preference weights over
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
    The user's feedback on the reply, through the channel chosen with ``feedback``: ``rating`` (default;
    Likert 1..5 mapped to ``(rating - 3) / 2``), ``utility``, ``pairwise``, ``critique`` or ``implicit``
    (see :class:`~envs.conversation.ConversationEnv`). ``info["terms"]`` has the noise-free utility term
    of every preference dimension plus ``relevance`` (the topic covered in the draft's own sentences; echoing
    the request earns nothing, see :func:`envs.relevance.keyword_relevance`); ``info["feedback"]`` the raw
    feedback. A style term counts at face value only for a relevant reply (see :mod:`envs.users`).

    ## Episode end
    Terminated when the user is satisfied (expected utility >= ``satisfaction_utility``), when the user
    leaves (``patience`` or ``leave_utility``), or after the single reply when ``max_turns=1``.
    Truncated when ``max_turns > 1`` replies pass without either.

    ## Arguments
    Those of :class:`~envs.conversation.ConversationEnv`: ``population``, ``split``, ``max_turns``,
    ``feedback``, ``reward_mode``, ``noise``, ``satisfaction_utility``, ``patience``, ``leave_utility``,
    ``drift``, ``inconsistent``, ``adversarial``, ``render_mode``.

    ## Version history
    - v0: initial release (feedback channels, patience, drift and unreliable users added without
      changing default behaviour).
    - v1: relevance counts only the task covered in the reply's own sentences (copying the request,
      repetition, padding and stuffed style words count against it), lexicon features saturate, and a
      style term counts at face value only for a relevant reply: echoing the request no longer pays.

    >>> import gymnasium as gym, envs
    >>> env = gym.make("attune/WritingAssistant-v1", max_turns=2)
    >>> obs, info = env.reset(seed=0)
    >>> obs.startswith("User: ")
    True
    >>> obs, reward, terminated, truncated, info = env.step("Dear colleague, the deadline moves to Friday.")
    >>> -1.0 <= reward <= 1.0 and sorted(info["terms"]) == sorted(envs.STYLE_DIMENSIONS + ("relevance",))
    True
    """

    scenario = "writing"
