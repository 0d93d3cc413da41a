"""The try-it box explains: with "Explain" ticked, each text comes back highlighted by its
tokens' attributions, in a real browser (headless Chromium) against a real Tailor serving a
real student. The screenshot lands in bench/results/ui/explain.png."""

from __future__ import annotations

import os

import pytest
from selenium.webdriver.common.by import By

from tests.e2e.browser import console_errors, has_text, launch, screenshot, wait
from tests.fixtures.real_student import register_trained
from tests.support import ROOT, Stack, embedded_home, make_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.realmodels]
SHOTS = ROOT / "bench" / "results" / "ui"
TEXTS = ["The earthquake and the floods killed hundreds of people in the city",
         "The team won the football match"]


def _alpha(color: str) -> float:
    """The alpha of a computed `rgba(r, g, b, a)` (`rgb(...)` is opaque)."""
    parts = color[color.index("(") + 1:-1].split(",")
    return float(parts[3]) if len(parts) == 4 else 1.0


def test_the_try_it_box_highlights_the_words_behind_each_label(tmp_path, monkeypatch):
    cache = os.environ.get("TAILOR_CACHE_DIR", str(ROOT / "var" / "cache"))
    with embedded_home(tmp_path, monkeypatch) as home:
        monkeypatch.setenv("TAILOR_CACHE_DIR", cache)
        from app.core.config import get_settings

        get_settings.cache_clear()
        register_trained("crisis")
    stack = Stack(home, make_env(home, TAILOR_CACHE_DIR=cache))
    stack.start_api()
    browser = launch(tmp_path / "chromium-profile")
    try:
        api = stack.client()
        expected = api.post("/classify", json={"model": "crisis:1", "texts": TEXTS,
                                               "explain": True})
        assert expected.status_code == 200, expected.text
        browser.get(f"{stack.url}/ui/models/crisis")
        wait(browser, has_text("#try-it", "Explain"), 30, "the try-it box")
        browser.find_element(By.ID, "try-texts").send_keys("\n".join(TEXTS))
        browser.find_element(By.ID, "try-explain").click()
        browser.find_element(By.CSS_SELECTOR, "#try-form button").click()
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                                    "#try-results .explained")) == 2,
             60, "two explained texts")
        shown = browser.find_elements(By.CSS_SELECTOR, "#try-results .explained")
        for text, paragraph, want in zip(TEXTS, shown, expected.json()["results"], strict=True):
            assert paragraph.text == text  # the text as sent, nothing lost or added
            marks = paragraph.find_elements(By.TAG_NAME, "mark")
            got = [(m.text, float(m.get_attribute("data-attribution"))) for m in marks]
            tokens = want["explanation"]["tokens"]
            assert got == [(text[t["start"]:t["end"]], pytest.approx(t["attribution"]))
                           for t in tokens]
            # the strongest token is drawn the most opaque (the style was not blocked by CSP)
            alphas = [_alpha(m.value_of_css_property("background-color")) for m in marks]
            strongest = max(range(len(tokens)), key=lambda i: abs(tokens[i]["attribution"]))
            assert alphas[strongest] == max(alphas) > 0
        screenshot(browser, SHOTS / "explain.png")
        assert not console_errors(browser)
    finally:
        browser.quit()
        stack.discard()
