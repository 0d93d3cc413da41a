"""Explanations of a real student (all-MiniLM-L6-v2 + LoRA, trained here in seconds on a
few labeled headlines): the crisis words of an obvious crisis text carry more of the
"crisis" label than its stop words do."""

from __future__ import annotations

import pytest

from tests.fixtures.real_student import register_trained

pytestmark = [pytest.mark.e2e, pytest.mark.realmodels]

TEXT = "The earthquake and the floods killed hundreds of people in the city"
CRISIS_WORDS = {"earthquake", "floods", "killed"}
STOP_WORDS = {"the", "and", "of", "in"}


def test_attributions_point_at_the_crisis_words_not_the_stop_words(real_client):
    register_trained("crisis")
    resp = real_client.post("/classify", json={"model": "crisis", "texts": [TEXT],
                                               "explain": True})
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    assert result["label"] == "crisis", result["scores"]
    explanation = result["explanation"]
    assert explanation["label"] == "crisis"
    by_word: dict[str, list[float]] = {}
    for token in explanation["tokens"]:
        word = TEXT[token["start"]:token["end"]].lower()
        assert word == token["token"]  # offsets point into the text as sent
        by_word.setdefault(word, []).append(token["attribution"])
    assert set(by_word) >= CRISIS_WORDS | STOP_WORDS
    crisis = [a for w in CRISIS_WORDS for a in by_word[w]]
    stop = [a for w in STOP_WORDS for a in by_word[w]]
    mean_crisis, mean_stop = sum(crisis) / len(crisis), sum(stop) / len(stop)
    assert mean_crisis > 0, by_word
    assert mean_crisis > 3 * abs(mean_stop), by_word
    assert min(crisis) > max(abs(a) for a in stop), by_word
