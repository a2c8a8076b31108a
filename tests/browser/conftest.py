"""Headless Chromium through Selenium and its own chromedriver (both from Debian: no
download at run time), with the browser's console kept for the tests to read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.e2e.conftest import recorded_ts  # noqa: F401 (a fixture the pages play)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = Path(__file__).with_name("vendor") / "axe-core" / "axe.min.js"

Browser = webdriver.Chrome
BrowserFactory = Callable[[], Browser]


def open_browser() -> Browser:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture
def browser() -> Iterator[BrowserFactory]:
    """`browser()`: a new headless Chromium; every one is closed after the test."""
    opened: list[Browser] = []

    def make() -> Browser:
        driver = open_browser()
        opened.append(driver)
        return driver

    yield make
    for driver in opened:
        driver.quit()


def console_errors(driver: Browser) -> list[dict[str, Any]]:
    """The console's errors since the last call (reading the log empties it)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in entries if e["level"] == "SEVERE"]


def axe_violations(driver: Browser) -> list[str]:
    """axe-core's serious and critical findings on the page now loaded, in words."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    results: dict[str, Any] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(done, (error) => done({error: String(error)}));"
    )
    assert "error" not in results, results
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
