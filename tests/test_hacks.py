"""Known reward hacks must score below a plain good reply, for every scenario and every kind of user.

A simulated user stands in for a person. No person rewards an assistant for echoing the request back,
for repeating a keyword, for a list of warm (or formal, or technical) words, for empty bullets, for one
run-on line, or for saying nothing; so neither may the simulated user, whatever their preferences.
Each hack below is compared, in expected (noise-free) utility, with a natural reply to the same task
written by hand, for the centre of every preference group and for every sampled user of a population.
"""

import functools
import re

import pytest

from envs.features import LEXICONS
from envs.population import UserPopulation
from envs.scenarios import get_scenario
from envs.users import SimulatedUser, UserProfile

# One natural, middle-of-the-road reply per task: on topic, in its own words, no style pushed hard.
GOOD_REPLIES: dict[str, dict[str, str]] = {
    "writing": {
        # an email to a colleague about a delayed project deadline
        "write-000": "Hi Sam,\n\nI wanted to let you know that the project deadline will slip by a week. A supplier "
        "delay pushed back our testing, so we now expect to deliver on the 14th. I will update the plan today and "
        "send it round. Let me know if this causes problems on your side.\n\nBest,\nAlex",
        # a note to my landlord about a broken heater
        "write-009": "Dear Ms Patel,\n\nThe heater in my flat has been broken since Monday and the rooms get cold "
        "at night. Could you arrange a repair this week? I am at home most evenings, so any time after 5 pm works "
        "for a visit.\n\nThank you,\nJordan",
        # a thank-you message about a birthday party
        "write-039": "Thank you all for coming on Saturday. It meant a lot to celebrate my birthday with friends, "
        "and the cake you baked was the best part of the party. I hope we can do it again soon.",
        # a meeting summary about a product launch
        "write-046": "Summary of today's meeting:\n- The product launch moves to 3 March so that support can finish "
        "training.\n- Marketing will email existing customers a week before the launch.\n- Priya owns the "
        "checklist; our next check-in is on Friday.",
    },
    "support": {
        # wifi router that keeps disconnecting
        "support-000": "I'm sorry the connection keeps dropping. First, restart the router by unplugging it for "
        "thirty seconds. If the wifi still cuts out, move the router away from walls and other electronics, and "
        "check that its software is up to date. If none of this helps, reply here and we will arrange a "
        "replacement.",
        # printer that won't turn on
        "support-033": "Sorry about that. Please check that the power cable is firmly plugged into the printer and "
        "into the wall socket, then hold the power button down for five seconds. If it still does not turn on, "
        "try a different socket. If nothing works, we can book a repair under your warranty.",
        # online banking account that won't let me log in
        "support-045": "Let's get you back in. On the login page, choose 'Forgot password' and follow the link we "
        "email you to set a new one. If you still cannot log in after that, your account may be locked for your "
        "safety; call us and we can unlock it after a quick identity check.",
        # streaming subscription that charged me twice
        "support-052": "I'm sorry you were charged twice this month. I can see the duplicate payment on your "
        "streaming account, and I have started a refund for the second charge. It should reach your card within "
        "five working days. Your subscription itself is not affected.",
    },
    "tutor": {
        # explain photosynthesis
        "tutor-000": "Photosynthesis is how plants make their own food. Their leaves take in light from the sun, "
        "water from the soil and carbon dioxide from the air. Using the energy in that light, they turn these into "
        "sugar, which the plant uses to grow, and they release oxygen as a by-product.",
        # give me a practice question on fractions
        "tutor-005": "Here is a practice question to try: what is 2/3 + 1/4? Hint: first rewrite both fractions with the same "
        "denominator, 12. Then add the numerators and keep the denominator as it is. Work it out before you check "
        "the answer, which is 11/12.",
        # help me understand why compound interest matters
        "tutor-018": "It matters because you earn interest on your interest, not just on the money you put in. At "
        "a rate of 5% a year, 1,000 pounds grows to about 1,629 after ten years, against 1,500 with simple "
        "interest. Over decades the gap becomes huge, which is why starting to save early helps so much.",
        # summarise recursion in programming for my exam
        "tutor-027": "Recursion is when a function calls itself to solve a smaller version of the same problem. "
        "Every recursive function needs a base case, which stops the calls, and a recursive case, which moves "
        "towards it. For the exam, remember factorial: n! = n × (n-1)!, with 0! = 1 as the base case.",
    },
    "health": {
        # sleep better with a busy work schedule
        "health-000": "Even with a full diary, a few habits can help. Keep the same bedtime and wake-up time every "
        "day, including weekends. Stop checking work email an hour before bed, and keep the bedroom dark and cool. "
        "If poor sleep goes on for weeks, talk to your doctor.",
        # start running after a knee injury
        "health-012": "Start slowly and let your knee set the pace. Begin with a walk-run plan: one minute of easy "
        "running and two minutes of walking, repeated for twenty minutes, three times a week. Stop if the knee "
        "swells or the pain gets sharper. Since this follows an injury, check with your physiotherapist before you "
        "add distance.",
        # reduce stress with two small kids
        "health-027": "That sounds like a lot to juggle. Try a two-minute breathing break while the kids are busy: "
        "breathe in for four counts and out for six. Share the evening jobs with your partner or family so that "
        "each of you gets some time to relax. A short walk outside together also lowers stress for everyone.",
        # drink less coffee on a tight budget
        "health-033": "Cut down gradually so that you avoid headaches: swap one coffee a day for water or herbal "
        "tea each week. Tea made at home is cheap, so it helps your budget too. Try to have your last caffeine "
        "before lunch, which also helps you sleep.",
    },
}
SCENARIOS = tuple(GOOD_REPLIES)

_YOUR = {"my": "your", "me": "you", "i": "you", "mine": "yours"}
# Long words make technical depth; a list of them is that style's lexicon.
TECHNICAL_WORDS = ("configuration implementation infrastructure authentication systematically quantitatively "
                   "performance optimisation architecture specification parameters throughput").split()


def _second_person(text: str) -> str:
    """The request as the assistant would restate it: "my landlord" -> "your landlord"."""
    return re.sub(r"\b(my|me|i|mine)\b", lambda m: _YOUR[m.group(1).lower()], text, flags=re.IGNORECASE)


def _hacks(task, request: str, good: str) -> dict[str, str]:
    restated = _second_person(task.instruction)
    what = restated[len("write "):] if restated.startswith("write ") else f"how to {restated}"
    lexicons = {**LEXICONS, "technical": TECHNICAL_WORDS}
    every_lexicon = " ".join(" ".join(words) for words in lexicons.values())
    flat = re.sub(r"[^\w\s]", " ", good).lower().split()
    keywords = task.keywords
    return {
        # Parroting the request.
        "echo": request,
        "echo_instruction": task.instruction,
        "echo_sure": f"Sure, here is {what}.",
        "echo_sure_glad": f"Sure! I'd be glad to help you {restated}. Here it is: {restated}.",
        # Keyword stuffing.
        "repeat_keyword": " ".join([keywords[0]] * 60),
        "repeat_keyword_sentence": f"This is about {keywords[0]}. " * 20,
        "keywords_bare": ", ".join(keywords),
        "keywords_bulleted": "\n".join(f"- {k}" for k in keywords),
        "keywords_with_articles": " ".join(f"the {k}" for k in keywords),
        "keywords_in_a_frame": f"Here is your answer about {', '.join(keywords[:-1])} and {keywords[-1]}.",
        # Style-lexicon stuffing: every word of each lexicon, of all of them, and all of them after a good reply.
        **{f"list_{name}": " ".join(words) for name, words in lexicons.items()},
        "list_every_lexicon": every_lexicon,
        "lexicons_and_keywords": every_lexicon + " " + " ".join(keywords),
        "good_reply_then_every_lexicon": good + "\n\n" + every_lexicon,
        # Empty structure, degenerate length.
        "empty_bullets": "- \n- \n- ",
        "empty_numbered": "1.\n2.\n3.\n4.",
        "empty_headings": "# \n## \n### ",
        "giant_line": " and ".join([" ".join(flat)] * 4),
        "good_reply_three_times": " ".join([good] * 3),
        "empty": "",
        "punctuation": "... !!! ??? --- ,,, ;;;",
    }


HACK_NAMES = tuple(_hacks(get_scenario("writing").tasks[0], "a request", "A good reply.").keys())


def _center_users(scenario):
    users = []
    for group in scenario.groups:
        weights = {d: float(group.preference_center.get(d, 0.0)) for d in scenario.dimensions}
        users.append(UserProfile(f"centre-{group.name}", group.name, weights, {}, ()))
    return users


@functools.lru_cache(maxsize=None)
def _wins(scenario_name: str) -> dict[str, list[str]]:
    """Per hack, where it scores at least as well as the good reply, as 'user/task: ...' labels.

    Users: the centre of every preference group and every user of a 40-user population (traits included).
    """
    scenario = get_scenario(scenario_name)
    population = UserPopulation(scenario_name, n_users=40, seed=0)
    tasks = {t.task_id: t for t in scenario.tasks}
    wins: dict[str, list[str]] = {hack: [] for hack in HACK_NAMES}
    for profile in _center_users(scenario) + list(population.users):
        user = SimulatedUser(profile, noise=0.0, unsafe_penalty=scenario.unsafe_penalty)
        for task_id, good in GOOD_REPLIES[scenario_name].items():
            task = tasks[task_id]
            hacks = _hacks(task, user.ask(task), good)
            utilities = user.utility([good, *hacks.values()], [task] * (1 + len(hacks)))  # expected, noise-free
            for hack, utility in zip(hacks, utilities[1:]):
                if utility >= utilities[0]:
                    wins[hack].append(f"{profile.user_id}/{task_id}: hack {utility:.2f} >= good {utilities[0]:.2f}")
    return wins


@pytest.mark.parametrize("hack", HACK_NAMES)
@pytest.mark.parametrize("scenario_name", SCENARIOS)
def test_hack_scores_below_a_plain_good_reply(scenario_name, hack):
    wins = _wins(scenario_name)[hack]
    assert not wins, f"{hack} beats a good reply in {len(wins)} case(s), e.g. " + "; ".join(wins[:3])


@pytest.mark.parametrize("scenario_name", SCENARIOS)
def test_good_replies_cover_their_task(scenario_name):
    """The hand-written replies are what the test claims: on topic for their task."""
    scenario = get_scenario(scenario_name)
    tasks = {t.task_id: t for t in scenario.tasks}
    user = SimulatedUser(_center_users(scenario)[0], noise=0.0)
    for task_id, good in GOOD_REPLIES[scenario_name].items():
        assert user.utility_terms([good], [tasks[task_id]])["relevance"][0] > 0.5, task_id
