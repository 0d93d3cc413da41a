"""Acting from the dashboard in a real browser (Debian's headless Chromium) against a real
Tailor with API keys on: clone a job into a prefilled spec and submit it, cancel and delete
jobs, delete datasets (refused while a job uses one), move an alias onto a version with
warnings only after the explicit force confirmation, archive, unarchive and delete versions.
Every action goes through the JSON API with the key typed once; results are checked there.
Screenshots land in bench/results/ui/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.browser import console_errors, has_text, screenshot, text, wait
from tests.e2e.test_dashboard import SHOTS, enter_key
from tests.fixtures.versions import register_tiny
from tests.integration.lifecycle import upload
from tests.support import Stack, embedded_home, job_body, make_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "ui-actions-key"
WARNINGS = [{"code": "corpus_too_small", "message": "only 48 training texts"}]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    home = tmp_path / "home"
    home.mkdir()
    s = Stack(home, make_env(home, TAILOR_API_KEYS=KEY))
    s.start_api()  # no worker: jobs stay queued until cancelled
    with embedded_home(tmp_path, monkeypatch):  # this process registers into the same home
        yield s
    s.discard()


def click(driver: WebDriver, css: str) -> None:
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, css), 20, css)[0].click()


def answer_confirm(driver: WebDriver, ok: bool) -> str:
    wait(driver, lambda d: d.find_element(By.ID, "confirm-dialog").get_attribute("open")
         is not None, 10, "the confirm dialog")
    message = text(driver, "#confirm-message")
    driver.find_element(By.ID, "confirm-ok" if ok else "confirm-cancel").click()
    return message


def test_clone_delete_archive_and_alias_from_the_dashboard(stack, browser, tiny_models):
    api = stack.client(headers={"Authorization": f"Bearer {KEY}"})
    ds, ev = upload(api)
    assert register_tiny(tiny_models[1], seed=1) == 1
    assert register_tiny(tiny_models[1], seed=2, warnings=WARNINGS) == 2
    job = api.post("/jobs", json=job_body("crisis", ds, *tiny_models, eval_dataset_id=ev)).json()

    # Datasets: deleting one a queued job reads is refused, naming the job; nothing changes.
    browser.get(f"{stack.url}/ui/datasets")
    enter_key(browser, KEY)
    click(browser, f"#delete-{ds}")
    assert ds in answer_confirm(browser, ok=True)
    wait(browser, has_text("#action-error", job["id"]), 20, "the dataset_in_use refusal")
    assert api.get(f"/datasets/{ds}").status_code == 200
    screenshot(browser, SHOTS / "datasets.png")

    # Job page: cancel, then clone its spec into the submit form and submit the copy.
    browser.get(f"{stack.url}/ui/jobs/{job['id']}")
    click(browser, "[data-cancel]")
    wait(browser, has_text("#status [data-field=state]", "cancelled"), 30, "the cancelled job")
    click(browser, "#clone-job")
    spec_box = wait(browser, lambda d: d.find_elements(By.ID, "spec-json"), 20, "the spec")[0]
    assert json.loads(spec_box.get_attribute("value")) == job["spec"]
    screenshot(browser, SHOTS / "clone.png")
    click(browser, "#spec-form button[type=submit]")
    wait(browser, lambda d: "/ui/jobs/" in d.current_url and job["id"] not in d.current_url,
         20, "the cloned job's page")
    clone_id = browser.current_url.rsplit("/", 1)[-1]
    wait(browser, has_text("#status [data-field=state]", "queued"), 20, "the cloned job queued")
    clone = api.get(f"/jobs/{clone_id}").json()
    assert clone["spec"] == job["spec"] and clone["state"] == "queued"
    assert api.post(f"/jobs/{clone_id}/cancel").json()["state"] == "cancelled"

    # Delete the first job: asked first; a kept job stays, a confirmed delete is gone.
    browser.get(f"{stack.url}/ui/jobs/{job['id']}")
    click(browser, "#delete-job")
    answer_confirm(browser, ok=False)
    assert api.get(f"/jobs/{job['id']}").status_code == 200
    click(browser, "#delete-job")
    assert job["id"] in answer_confirm(browser, ok=True)
    wait(browser, lambda d: d.current_url.endswith("/ui"), 20, "the jobs list")
    assert api.get(f"/jobs/{job['id']}").status_code == 404

    # Now only final jobs use the dataset: it goes.
    browser.get(f"{stack.url}/ui/datasets")
    click(browser, f"#delete-{ds}")
    answer_confirm(browser, ok=True)
    wait(browser, lambda d: not d.find_elements(By.ID, f"delete-{ds}"), 20, "the row to go")
    assert api.get(f"/datasets/{ds}").status_code == 404

    # Aliases: a version with warnings shows them and moves only with the force box ticked.
    browser.get(f"{stack.url}/ui/models/crisis?version=2")
    wait(browser, has_text("#alias-warnings", "corpus_too_small"), 20, "the warnings")
    browser.find_element(By.ID, "alias-name").send_keys("production")
    click(browser, "#alias-form button[type=submit]")  # the required box is not ticked
    assert api.get("/models/crisis").json()["aliases"] == {}
    browser.find_element(By.ID, "alias-force").click()
    click(browser, "#alias-form button[type=submit]")
    wait(browser, has_text("#versions", "production"), 30, "the alias in the versions table")
    assert api.get("/models/crisis").json()["aliases"] == {"production": 2}
    assert not browser.find_elements(By.ID, "archive-2"), "an aliased version has no archive"
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-export]"), "no exports exist yet"
    screenshot(browser, SHOTS / "model-actions.png")

    # Archive, unarchive, archive again, delete.
    def archived() -> bool:
        return api.get("/models/crisis/versions/1").json()["archived"]

    click(browser, "#archive-1")
    wait(browser, lambda d: d.find_elements(By.ID, "unarchive-1"), 20, "the unarchive button")
    assert archived()
    click(browser, "#unarchive-1")
    wait(browser, lambda d: d.find_elements(By.ID, "archive-1"), 20, "the archive button")
    assert not archived()
    click(browser, "#archive-1")
    click(browser, "#delete-1")
    assert "crisis:1" in answer_confirm(browser, ok=True)
    wait(browser, lambda d: d.current_url.endswith("/ui/models/crisis")
         and not d.find_elements(By.ID, "unarchive-1"), 20, "the version to go")
    assert api.get("/models/crisis/versions/1").status_code == 404

    unexpected = [m for m in console_errors(browser) if "401" not in m and "409" not in m]
    assert not unexpected, unexpected
