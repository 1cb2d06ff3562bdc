import numpy as np
import pytest

from envs.features import LEXICONS, STYLE_DIMENSIONS, style_features
from envs.relevance import keyword_relevance


def features(text):
    return dict(zip(STYLE_DIMENSIONS, style_features([text])[0].tolist()))


def test_dimensions_are_named_and_at_least_five():
    assert len(STYLE_DIMENSIONS) >= 5
    assert len(set(STYLE_DIMENSIONS)) == len(STYLE_DIMENSIONS)


def test_brevity_halves_at_thirty_words():
    assert features("")["brevity"] == 1.0
    assert features(" ".join(["word"] * 30))["brevity"] == pytest.approx(0.5)
    assert features(" ".join(["word"] * 90))["brevity"] == pytest.approx(0.25)


def test_formality_counts_formal_against_informal_markers():
    # 0.5 + (min(1, formal / 3) - min(1, informal / 3)) / 2: "dear" and "please" are formal
    assert features("Dear team, please find the summary below.")["formality"] == pytest.approx(0.5 + 1 / 3)
    # "hey", "!" and the contraction "it's" are informal
    assert features("hey it's done!")["formality"] == pytest.approx(0.0)
    assert features("plain words only")["formality"] == pytest.approx(0.5)


def test_technical_depth_warmth_structure_examples():
    f = features("Configuration parameters matter")  # 2 of 3 words have >= 9 letters
    assert f["technical_depth"] == pytest.approx(1.0)
    assert features("the cat sat on a mat")["technical_depth"] == 0.0
    assert features("Glad to help, hope this works. Thanks!")["warmth"] == pytest.approx(1.0)
    assert features("I hope so")["warmth"] == pytest.approx(1 / 3)
    assert features("Plan:\n- one\n- two\n1. three")["structure"] == pytest.approx(1.0)
    assert features("Plan: one, two")["structure"] == 0.0
    assert features("For example, fruit such as apples.")["examples"] == pytest.approx(1.0)
    assert features("For example, apples.")["examples"] == pytest.approx(0.5)


def test_features_are_deterministic_and_bounded_for_odd_text():
    texts = ["", "\x00\x01", "é" * 1000, "🙂 emoji!", "word " * 5000]
    a, b = style_features(texts), style_features(texts)
    assert np.array_equal(a, b)
    assert np.all((a >= 0) & (a <= 1))


def test_style_features_rejects_a_bare_string():
    with pytest.raises(TypeError, match="list of replies"):
        style_features("just one reply")


LANDLORD = ("note", "landlord", "heater", "broken", "repair")
LANDLORD_REQUEST = "Write a note to my landlord about a broken heater."
HEATER = "The heater in the flat has been broken since Monday, so please send someone today for a repair."


def relevance(reply, keywords=LANDLORD, request=LANDLORD_REQUEST):
    return float(keyword_relevance([reply], [keywords], [request])[0])


def test_keyword_relevance_counts_task_keywords_in_the_replys_own_sentences():
    # 2 of min(3, 4) keywords; 6 content words of its own (moved, friday, supplier, shipped, parts, late)
    out = keyword_relevance(["The project deadline moved to Friday because the supplier shipped the parts late.",
                             "Nothing relevant.", "anything"],
                            [("project", "deadline", "delay", "team"), ("project",), ()])
    assert out.tolist() == pytest.approx([2 / 3, 0.0, 1.0])
    assert relevance(HEATER) == pytest.approx(1.0)


def test_naming_the_keywords_in_an_empty_frame_is_not_an_answer():
    # 3 of 3 keywords but one content word of its own ("answer") of the 6 needed
    assert relevance("Here is your answer about the heater, the repair and the landlord.") == pytest.approx(1 / 6)
    assert relevance("the landlord the heater the repair") == pytest.approx(0.0)  # no content word at all


@pytest.mark.parametrize("reply", [
    "landlord, note, heater, broken, repair",  # the keywords as a list: no sentence
    "- landlord\n- heater\n- repair",  # one-word bullets
    "heater " * 40,  # one word repeated
    "and the heater and the repair and the landlord " * 8,  # one run-on line of 72 words
    "",
])
def test_keyword_lists_and_run_on_lines_are_not_relevant(reply):
    assert relevance(reply) == 0.0


def test_copying_the_request_earns_nothing_even_with_pronouns_swapped():
    assert relevance(LANDLORD_REQUEST) == 0.0
    assert relevance("Sure, here is a note to your landlord about a broken heater.") == 0.0
    assert relevance("Sure! Here is the note to your landlord about the broken heater.") == 0.0
    assert relevance("a broken heater") == 0.0  # a short piece of the request
    # Restating the request before answering costs the copied share (9 of 21 words); the copied keywords
    # do not count, the answer's own do (heater, repair: 2 of 3).
    restated = ("Here is a note to your landlord about a broken heater. The heater broke on Monday night and the "
                "flat is freezing, so it needs a repair soon.")
    assert relevance(restated) == pytest.approx(2 / 3 * (1 - 9 / 28))
    # Without the request there is nothing to copy from, but the restatement still says nothing of its own.
    assert relevance("Sure, here is a note to your landlord about a broken heater.", request=None) == pytest.approx(1 / 6)


def test_a_repeated_sentence_adds_nothing():
    assert relevance(HEATER + " " + HEATER) == pytest.approx(0.5)


def test_repeating_a_lexicon_word_saturates():
    once, twice, fifty = features("I hope so."), features("I hope so, hope so."), features("I hope so. " + "hope " * 50)
    assert once["warmth"] == pytest.approx(1 / 3)
    assert twice["warmth"] == fifty["warmth"] == pytest.approx(2 / 3)  # a word counts at most twice
    assert features("please " * 50)["formality"] == features("please please")["formality"]
    assert features("for example " * 20)["examples"] == features("for example, for example")["examples"]
    assert features("configuration " * 50)["technical_depth"] == pytest.approx(4 * 2 / 50)
    assert features("!!!!!!!!!! hey")["formality"] == features("!! hey")["formality"]


def test_every_lexicon_feature_saturates_at_a_few_distinct_words():
    warm = " ".join(LEXICONS["warm"])
    assert features(warm)["warmth"] == features("glad, happy and hoping")["warmth"] == 1.0


def test_structure_needs_text_after_the_marker():
    assert features("- \n- \n- ")["structure"] == 0.0
    assert features("1.\n2.\n3.")["structure"] == 0.0
    assert features("#\n##\n###")["structure"] == 0.0
    assert features("- a\n- b\n- c")["structure"] == pytest.approx(1.0)
    assert features("- **Restart** the router\n1. *Check* the cable\n## Next steps")["structure"] == pytest.approx(1.0)


def test_a_reply_made_mostly_of_style_words_is_not_an_answer():
    stuffed = HEATER + " " + " ".join(LEXICONS["warm"])
    assert features(stuffed)["warmth"] == 1.0  # the feature saturates, as for any three warm words ...
    assert relevance(HEATER) == 1.0
    # ... but half the reply is a word list, not an answer: 18 warm words + "please", less 4 free, over 36
    # words is 15/36 of style words, between 25 % (full relevance) and 50 % (none): (0.5 - 15/36) / 0.25
    assert relevance(stuffed) == pytest.approx((0.5 - 15 / 36) / 0.25)
    assert relevance(HEATER + " Thanks, I hope you are well and enjoy the weekend.") == 1.0  # natural warmth is fine


def test_relevance_with_and_without_requests_agrees_when_nothing_is_copied():
    replies = [HEATER, "Nothing to do with it.", ""]
    with_request = keyword_relevance(replies, [LANDLORD] * 3, [LANDLORD_REQUEST] * 3)
    assert with_request.tolist() == keyword_relevance(replies, [LANDLORD] * 3).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 requests"):
        keyword_relevance(replies, [LANDLORD] * 3, [LANDLORD_REQUEST] * 2)
