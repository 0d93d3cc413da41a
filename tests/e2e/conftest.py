"""Fixtures shared by the e2e tests: a browser for the dashboard, an in-process app on the
real offline models."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.remote.webdriver import WebDriver

from app.core.config import get_settings
from tests.e2e.browser import launch
from tests.support import ROOT


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, quit after the test."""
    driver = launch(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


@pytest.fixture
def real_client(embedded, monkeypatch) -> Iterator[TestClient]:
    """The app in-process (embedded mode) with the offline model cache of this checkout."""
    from app.main import create_app

    monkeypatch.setenv("TAILOR_CACHE_DIR",
                       os.environ.get("TAILOR_CACHE_DIR", str(ROOT / "var" / "cache")))
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()
