"""Debian's headless Chromium driven through its own chromedriver (no downloaded browsers)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]
SCREEN_WIDTH = 1280
MAX_SHOT_HEIGHT = 3200


def launch(profile: Path) -> WebDriver:
    """Start chromium; fail (never skip) when it cannot start: CI must prove the UI works."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed for the dashboard tests: "
                    "apt-get install chromium chromium-driver (scripts/test.sh does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(options=options, service=Service(driver))
    except WebDriverException as exc:
        pytest.fail(f"chromium did not start: {exc.msg}")


def wait(driver: WebDriver, predicate: Callable[[WebDriver], Any], timeout: float,
         what: str) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(predicate)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; page shows:\n"
                             + text(driver, "main")[:2000]) from None


def text(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def has_text(css: str, needle: str) -> Callable[[WebDriver], bool]:
    def check(d: WebDriver) -> bool:
        try:
            return needle in text(d, css)
        except StaleElementReferenceException:  # the live page replaced it: look again
            return False
    return check


def screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page, not just the window: grow the window to the page's height first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(SCREEN_WIDTH, min(int(height) + 120, MAX_SHOT_HEIGHT))
    time.sleep(0.3)  # let layout settle at the new size
    driver.save_screenshot(str(path))
    driver.set_window_size(SCREEN_WIDTH, 900)


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
