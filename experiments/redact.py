"""PII redaction: every text that leaves a run (run files, reports, W&B, error lines) passes through :func:`redact`.

Users' texts carry personal data (the simulated users' histories do, see :mod:`envs.personal_data`), and
they travel: a retrieved past text goes into a system prompt, a policy repeats what it was shown, episodes
and reports quote both. So the writers route texts through one function, :func:`redact`, which replaces
each piece of personal data with its kind in angle brackets::

    "call Jane Roe at 555-201-7788" -> "call <PERSON> at <PHONE_NUMBER>"

Recognizers (Microsoft Presidio's analyzer, with no NLP model: regexes and checksums, nothing downloaded):

- ``EMAIL_ADDRESS``: Presidio's, its domain checked against the public-suffix snapshot bundled with
  tldextract (never fetched);
- ``PHONE_NUMBER``: Presidio's (libphonenumber), plus a North-American pattern that keeps the extension
  (``(555)201-7788x123``) and the ``+1``/``001`` prefixes;
- ``CREDIT_CARD``: Presidio's, plus any 12-19 digit run (spaces or dashes allowed) that passes the Luhn check;
- ``PERSON``: the names the run knows (:func:`configure` is given the population's users' names): with no
  language model there is no guessing at names, only a deny list;
- ``STREET_ADDRESS``: a house number, a street name and a USPS street suffix (optionally a unit, ``Apt. 4``,
  and the ``City, ST 12345`` line).

Presidio is imported on the first text that could hold personal data (one with an ``@``, a digit or a known
name); other texts return at once, and each text is redacted once (cached). ``privacy.redact: false`` turns
it off, for debugging only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

_ENABLED = True
_NAMES: set[str] = set()
_LOCK = threading.Lock()
_CACHE: dict[str, str] = {}
_CACHE_LIMIT = 200_000
_analyzer: Any = None
_name_pattern: re.Pattern[str] | None = None

# Cheap test for "could this text hold personal data the recognizers know?": an email needs an @, a phone,
# card or address a digit, a name must be one of the known ones.
_CANDIDATE = re.compile(r"[@0-9]")

# USPS street suffixes (and the abbreviations people type), as whole words.
_STREET_SUFFIXES = (
    "Alley Annex Arcade Avenue Ave Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook Brooks "
    "Burg Burgs Bypass Camp Canyon Cape Causeway Center Centers Circle Circles Cir Cliff Cliffs Club Common Commons "
    "Corner Corners Course Court Courts Ct Cove Coves Creek Crescent Crest Crossing Crossroad Curve Dale Dam Divide "
    "Drive Drives Dr Estate Estates Expressway Extension Extensions Fall Falls Ferry Field Fields Flat Flats Ford "
    "Fords Forest Forge Forges Fork Forks Fort Freeway Garden Gardens Gateway Glen Glens Green Greens Grove Groves "
    "Harbor Harbors Haven Heights Highway Hwy Hill Hills Hollow Inlet Island Islands Isle Junction Junctions Key "
    "Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light Lights Loaf Lock Locks Lodge Loop Mall Manor Manors "
    "Meadow Meadows Mews Mill Mills Mission Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks "
    "Parkway Parkways Pass Passage Path Pike Pine Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie "
    "Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Roads Rd Route Row Rue Run Shoal Shoals Shore "
    "Shores Skyway Spring Springs Spur Spurs Square Squares Station Stravenue Stream Street Streets St Summit "
    "Terrace Ter Throughway Trace Track Trafficway Trail Trailer Tunnel Turnpike Underpass Union Unions Valley "
    "Valleys Via Viaduct View Views Village Villages Ville Vista Walk Walks Wall Way Ways Well Wells"
).split()
_UNIT = r"(?:\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|#)\s*[A-Za-z0-9-]+)?"
_CITY_LINE = r"[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,3},\s[A-Z]{2}\s\d{5}(?:-\d{4})?"
_STREET = (r"\b\d{1,6}\s+(?:[A-Z][A-Za-z'.-]*\s+){1,4}(?:" + "|".join(_STREET_SUFFIXES) + r")\.?" + _UNIT
           + r"(?:,?\s+" + _CITY_LINE + r")?\b")
# North-American numbers as people write them: optional +1 / 001, (555) or 555, separators or none, an extension.
_NANP = r"(?<![\w+])(?:(?:\+1|001)[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-]?)\d{3}[\s.-]?\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,6})?\b"
_CARD_RUN = r"\b\d(?:[ -]?\d){11,18}\b"


def configure(enabled: bool = True, names: Iterable[str] = ()) -> None:
    """Turn redaction on or off (``privacy.redact``) and add the people's names it must catch."""
    global _ENABLED, _name_pattern
    _ENABLED = enabled
    new = {n.strip() for n in names if n and n.strip()} - _NAMES
    if new:
        with _LOCK:
            _NAMES.update(new)
            _name_pattern = _compile_names(_NAMES)
            _CACHE.clear()
            if _analyzer is not None:
                _set_name_recognizer(_analyzer)


def enabled() -> bool:
    return _ENABLED


def _compile_names(names: Iterable[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    # Longest first, whole words, any case and any run of spaces between first and last name.
    alternatives = sorted((r"\s+".join(map(re.escape, n.split())) for n in names), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _build_analyzer() -> Any:
    import tldextract
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, EmailRecognizer, PhoneRecognizer

    offline_domains = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # the bundled snapshot only

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_domains(pattern_text).fqdn != ""

    class LuhnCardRecognizer(PatternRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return _luhn(re.sub(r"\D", "", pattern_text))

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(OfflineEmailRecognizer())
    registry.add_recognizer(PhoneRecognizer(supported_regions=("US", "UK", "DE", "FR", "IN")))
    registry.add_recognizer(PatternRecognizer("PHONE_NUMBER", name="NorthAmericanPhone",
                                              patterns=[Pattern("nanp", _NANP, 0.6)]))
    registry.add_recognizer(CreditCardRecognizer())
    registry.add_recognizer(LuhnCardRecognizer("CREDIT_CARD", name="LuhnDigitRun", patterns=[Pattern("digits", _CARD_RUN, 0.5)]))
    registry.add_recognizer(PatternRecognizer("STREET_ADDRESS", name="StreetAddress",
                                              patterns=[Pattern("street", _STREET, 0.6)],
                                              global_regex_flags=re.DOTALL | re.MULTILINE))
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=NoOpNlpEngine([{"lang_code": "en", "model_name": "none"}]), supported_languages=["en"])
    _set_name_recognizer(analyzer)
    return analyzer


def _set_name_recognizer(analyzer: Any) -> None:
    from presidio_analyzer import Pattern, PatternRecognizer

    registry = analyzer.registry
    if any(r.name == "KnownNames" for r in registry.recognizers):
        registry.remove_recognizer("KnownNames")
    if _name_pattern is not None:
        registry.add_recognizer(PatternRecognizer("PERSON", name="KnownNames",
                                                  patterns=[Pattern("names", _name_pattern.pattern, 0.8)]))


def _analyzer_engine() -> Any:
    global _analyzer
    if _analyzer is None:
        with _LOCK:
            if _analyzer is None:
                _analyzer = _build_analyzer()
    return _analyzer


def find(text: str) -> list[tuple[int, int, str]]:
    """The personal data in ``text``: ``(start, end, kind)`` spans, overlaps merged, in order."""
    if not text or not (_CANDIDATE.search(text) or (_name_pattern is not None and _name_pattern.search(text))):
        return []
    found = _analyzer_engine().analyze(text, language="en", score_threshold=0.0)
    spans = sorted((r.start, r.end, r.entity_type) for r in found)
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in spans:
        if merged and start < merged[-1][1]:  # overlapping: one span, the kind of the longer one
            s, e, k = merged[-1]
            merged[-1] = (s, max(e, end), k if e - s >= end - start else kind)
        else:
            merged.append((start, end, kind))
    return merged


def redact(text: str) -> str:
    """``text`` with each piece of personal data replaced by ``<KIND>``; unchanged when redaction is off."""
    if not _ENABLED or not isinstance(text, str) or not text:
        return text
    cached = _CACHE.get(text)
    if cached is not None:
        return cached
    out = text
    for start, end, kind in reversed(find(text)):
        out = out[:start] + f"<{kind}>" + out[end:]
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[text] = out
    return out


def redact_data(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, tuples, strings) with every string redacted; keys are kept."""
    if not _ENABLED:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value) if isinstance(value, list) else tuple(redact_data(v) for v in value)
    return value
