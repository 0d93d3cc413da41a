"""The dashboard in a real browser (Debian's headless Chromium) against a real Tailor with
API keys on: the key is asked for once, jobs go live to `succeeded` without a reload, and
the model page classifies in its try-it box. Screenshots land in bench/results/ui/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.browser import console_errors, has_text, screenshot, text, wait
from tests.integration.lifecycle import upload
from tests.support import ROOT, Stack, job_body, make_env, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "ui-test-key"
SHOTS = ROOT / "bench" / "results" / "ui"
LIVE_TIMEOUT_S = 180


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    home = tmp_path / "home"
    home.mkdir()
    s = Stack(home, make_env(home, TAILOR_API_KEYS=KEY))
    s.start_api()  # no worker yet: jobs stay queued until the test starts one
    yield s
    s.discard()


def enter_key(driver: WebDriver, key: str) -> None:
    wait(driver, lambda d: d.find_element(By.ID, "key-dialog").get_attribute("open") is not None,
         20, "the API key dialog")
    field = driver.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()


def mark_page(driver: WebDriver) -> None:
    """A marker that only survives if the page is never reloaded."""
    driver.execute_script("window.__noReload = true")


def still_same_page(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__noReload === true") is True


def test_jobs_go_live_to_succeeded_and_the_model_page_classifies(stack: Stack, browser,
                                                                  tiny_models):
    api = stack.client(headers={"Authorization": f"Bearer {KEY}"})
    ds, ev = upload(api)
    # Every phase on (the default "auto" may decide some off): the timeline shows each one.
    first = api.post("/jobs", json=job_body("crisis", ds, *tiny_models, eval_dataset_id=ev,
                                            representations=True, progressive=True))
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]

    # The key is asked for once; a wrong key is refused with the server's message.
    browser.get(f"{stack.url}/ui/jobs/{job_id}")
    enter_key(browser, "wrong-key")
    wait(browser, has_text("#key-error", "unknown API key"), 20, "the wrong-key message")
    enter_key(browser, KEY)
    wait(browser, has_text("#status [data-field=state]", "queued"), 20, "the queued job")
    mark_page(browser)

    try:
        stack.start_worker()
        wait(browser, has_text("#status [data-field=state]", "succeeded"), LIVE_TIMEOUT_S,
             "the job page to reach succeeded")
        wait(browser, has_text("#quality", "macro-F1"), 20, "teacher vs student metrics")
    except BaseException:
        print(stack.logs())
        raise
    assert still_same_page(browser), "the job page reloaded instead of updating live"
    assert browser.find_element(By.ID, "key-dialog").get_attribute("open") is None
    timeline = text(browser, "#timeline")
    # The default (adaptive) strategy trains in phases: align -> easy -> full -> refine.
    for step in ("queued", "annotate", "align", "full", "refine", "evaluate"):
        assert step in timeline, f"{step} missing from the phase timeline"
    assert browser.find_elements(By.CSS_SELECTOR, "#phases figure[data-phase=full] svg")
    assert browser.find_elements(By.CSS_SELECTOR, "#prompts meter")
    assert browser.find_elements(By.CSS_SELECTOR, "#confusion svg .cell")
    assert "crisis:1" in text(browser, "#status")
    screenshot(browser, SHOTS / "job.png")

    # The jobs list follows a second job live, without asking for the key again.
    workers = [p for p in stack.procs if p.name == "worker"]
    for proc in workers:
        proc.stop()
    second = api.post("/jobs", json=job_body("crisis", ds, *tiny_models, eval_dataset_id=ev,
                                             epochs=3)).json()["id"]
    browser.get(f"{stack.url}/ui")
    row = f"tr[data-job-id='{second}'] [data-field=state]"
    wait(browser, has_text(row, "queued"), 20, "the second job queued in the list")
    mark_page(browser)
    stack.start_worker()
    wait(browser, has_text(row, "succeeded"), LIVE_TIMEOUT_S, "the list to show succeeded")
    assert still_same_page(browser), "the jobs list reloaded instead of updating live"
    assert wait_job(api, second)["model"] == {"name": "crisis", "version": 2}
    screenshot(browser, SHOTS / "jobs.png")

    # The model page: versions and aliases, metrics, card, and the try-it box.
    # Tiny corpora carry warnings (corpus_too_small, ...): the alias moves only by force.
    assert api.put("/models/crisis/aliases/production",
                   json={"version": 1, "force": True}).status_code == 200
    browser.get(f"{stack.url}/ui/models/crisis")
    wait(browser, has_text("#versions", "production"), 20, "the versions table with aliases")
    assert "crisis v2" in text(browser, "#card"), "the model card is rendered"
    assert browser.find_elements(By.CSS_SELECTOR, "#quality #teacher-vs-student")
    texts = ["earthquake killed thousands", "stock market rose today"]
    box = browser.find_element(By.ID, "try-texts")
    box.send_keys("\n".join(texts))
    browser.find_element(By.CSS_SELECTOR, "#try-form button").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#try-results .result")) == 2,
         60, "two classified texts")
    expected = api.post("/classify", json={"model": "crisis:2", "texts": texts}).json()
    results = browser.find_elements(By.CSS_SELECTOR, "#try-results .result")
    for result, want in zip(results, expected["results"], strict=True):
        assert result.find_element(By.CSS_SELECTOR, ".label").text == want["label"]
        shown = {row.get_attribute("data-label"): float(row.find_elements(By.TAG_NAME, "td")[2]
                                                        .text)
                 for row in result.find_elements(By.CSS_SELECTOR, "table.scores tr")}
        assert shown == pytest.approx(want["scores"], abs=1e-3)
    screenshot(browser, SHOTS / "model.png")

    unexpected = [m for m in console_errors(browser) if "401" not in m]
    assert not unexpected, unexpected

