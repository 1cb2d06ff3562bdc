"""A small feedback database built through the store's API: two policies, three people with known tastes."""

from pathlib import Path

from envs.scenarios import get_scenario
from experiments.feedback_store import open_store

ENV_ID = "attune/WritingAssistant-v1"
CONCISE, VERBOSE = "runs/concise", "base:tiny-random"
SHORT = {
    "write-000": "The project deadline moves one week because parts arrived late; I will confirm the new date by Friday.",
    "write-001": "The heater in our office is broken again, so I asked the building team for a repair this week.",
    "write-004": "The team offsite event is on the second of June at the lake house; please book your train soon.",
    "write-009": "The heater in my flat is broken since Monday, so please arrange a repair visit this week.",
}
LONG = {
    task: "Hi there! I really hope you are doing well and having a lovely week, thank you so much for all your help "
    f"lately. {short} For example, we could meet on Tuesday to talk it through, and for instance I can share my notes "
    "with you, such as the timeline and the plans. I am so glad we work together, and I would love to hear what you "
    "think about all of this whenever you have a moment. Warm wishes and thanks again!"
    for task, short in SHORT.items()
}
TASKS = list(SHORT)
# person -> (stated preferences, [(task, concise shown left?, choice)]): Ann always picks the short reply, Bob the
# long one except once, and one tie; Cid has only a tie (no choice to fit).
PEOPLE = {
    "Ann": ({"brevity": 0.9}, [(t, i % 2 == 0, "concise") for i, t in enumerate(TASKS)]),
    "Bob": ({"warmth": 0.8}, [(TASKS[0], True, "verbose"), (TASKS[1], False, "verbose"), (TASKS[2], True, "concise"),
                              (TASKS[3], False, "verbose"), (TASKS[0], False, "tie")]),
    "Cid": ({}, [(TASKS[1], True, "tie")]),
}


def build_feedback_db(path: Path) -> Path:
    """Write the database; judgements in the order of PEOPLE (Ann's first). Ratings: 4 for the chosen reply, 2 for
    the rejected one, 3 for both sides of a tie."""
    instructions = {t.task_id: t.instruction for t in get_scenario("writing").tasks}
    with open_store(path) as store:
        for name, (preferences, judgements) in PEOPLE.items():
            person = store.add_person(name, preferences)
            for task_id, concise_left, pick in judgements:
                task = store.add_task(instructions[task_id].capitalize() + ".", scenario=ENV_ID, person_id=person,
                                      scenario_task=task_id)
                concise = store.add_reply(task, CONCISE, SHORT[task_id], {"max_new_tokens": 64})
                verbose = store.add_reply(task, VERBOSE, LONG[task_id], {"max_new_tokens": 64})
                left, right = (concise, verbose) if concise_left else (verbose, concise)
                choice = "tie" if pick == "tie" else ("left" if (pick == "concise") == concise_left else "right")
                ratings = {"left": (4, 2), "right": (2, 4), "tie": (3, 3)}[choice]
                store.record_judgement(task, person, left, right, choice, left_rating=ratings[0],
                                       right_rating=ratings[1], critique="too long" if pick == "concise" else None)
    return path
