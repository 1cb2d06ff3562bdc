import numpy as np
import pytest

from envs.features import STYLE_DIMENSIONS, keyword_relevance, style_features


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
    assert features("Dear team, please find the summary below.")["formality"] == pytest.approx(3 / 4)
    # "hey", "!" and the contraction "it's" are informal: (0 + 1) / (0 + 3 + 2)
    assert features("hey it's done!")["formality"] == pytest.approx(1 / 5)
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


def test_keyword_relevance():
    out = keyword_relevance(["The project deadline moved.", "Nothing relevant.", "anything"], [("project", "deadline", "delay", "team"), ("project",), ()])
    assert out.tolist() == pytest.approx([2 / 3, 0.0, 1.0])
