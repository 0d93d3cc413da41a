"""Fixtures shared by the dashboard tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.browser import launch


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, quit after the test."""
    driver = launch(tmp_path / "chromium-profile")
    yield driver
    driver.quit()
