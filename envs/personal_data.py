"""Fake personal data (PII) for simulated users: a name, an email, a phone, a street address and a card number.

Real users' histories hold personal data: they sign their messages, give a delivery address, paste a card
number. So do the simulated users', so that whatever carries users' texts out of a run (run files, reports,
W&B) has something real-looking to leak, and the redactor (:mod:`experiments.redact`) something to catch.

Every value comes from Faker (en_US), seeded per user from the population's seed and the user's index on a
stream of its own: the population's other draws (weights, groups, traits, split, history topics) are the
same with or without it. Faker is imported on first use only.

>>> details = personal_data(seed=0, index=0)
>>> sorted(details) == sorted(PERSONAL_FIELDS)
True
>>> details == personal_data(seed=0, index=0) != personal_data(seed=0, index=1)
True
"""

from __future__ import annotations

from collections.abc import Mapping

from envs.scenarios import STRONG_PREFERENCE
from envs.seeding import derive_seed

PERSONAL_FIELDS = ("name", "email", "phone", "street_address", "city_line", "card_number")
"""The personal data each simulated user has; ``city_line`` is ``City, ST 12345``."""

PERSONAL_NOTES = 2
"""A user's history ends with this many texts that carry their personal data (after the writing samples)."""

# The card networks most people carry (Faker's others include 12-digit Maestro and 19-digit Visa numbers).
_CARD_TYPES = ("visa16", "mastercard", "amex", "discover")
_faker = None


def _generator():
    global _faker
    if _faker is None:
        from faker import Faker

        _faker = Faker("en_US")
    return _faker


def personal_data(seed: int, index: int) -> dict[str, str]:
    """The personal data of user ``index`` of the population drawn with ``seed`` (deterministic)."""
    fake = _generator()
    fake.seed_instance(derive_seed(seed, "personal-data", index))
    name = f"{fake.first_name()} {fake.last_name()}"
    return {
        "name": name,
        "email": fake.email(),
        "phone": fake.phone_number(),
        "street_address": fake.street_address(),
        "city_line": f"{fake.city()}, {fake.state_abbr()} {fake.zipcode()}",
        "card_number": fake.credit_card_number(card_type=_CARD_TYPES[fake.random_int(0, len(_CARD_TYPES) - 1)]),
    }


def personal_notes(details: Mapping[str, str], weights: Mapping[str, float]) -> tuple[str, ...]:
    """The :data:`PERSONAL_NOTES` messages of a user's history that carry their personal data, in their style
    (formal users write formally, casual ones casually)."""
    name, email, phone = details["name"], details["email"], details["phone"]
    address = f"{details['street_address']}, {details['city_line']}"
    card = details["card_number"]
    formality = weights.get("formality", 0.0)
    if formality > STRONG_PREFERENCE:
        return (
            f"Dear assistant, please update my contact details: {name}, {address}. "
            f"I can be reached at {email} or by telephone at {phone}. Kind regards.",
            f"Dear assistant, could you please charge the annual plan to my card {card}? "
            f"The billing address is {address}. Kind regards, {name}.",
        )
    if formality < -STRONG_PREFERENCE:
        return (
            f"hey, it's {name}! new address is {address}. text me at {phone} or mail {email}, thanks!",
            f"hey, can you put the plan on my card {card}? it's under {name}, thanks!",
        )
    return (
        f"My name is {name} and I live at {address}. You can reach me at {email} or {phone}.",
        f"Please charge the plan to my card {card}, billing address {address}. Thanks, {name}.",
    )
