"""The pages of a server with an API token: read-only until the token is given, then the
token is kept for the tab and sent by the pages themselves, never in a URL."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By

from tests.browser.conftest import Browser, BrowserFactory, console_errors
from tests.harness.server import Server, run_server
from tests.harness.standin import stand_in_channels
from tests.polling import wait_for

TOKEN = "page-token-5c1e"


def restart(driver: Browser) -> str:
    """Press the channel page's restart button; what it then says."""
    result = driver.find_element(By.ID, "restart-result")
    driver.execute_script("arguments[0].textContent = ''", result)
    driver.find_element(By.CSS_SELECTOR, "#restart-form button").click()
    return str(wait_for(lambda: result.text if result.text != "Asking…" else "", 10, "an answer"))


def enter_token(driver: Browser, token: str) -> None:
    driver.find_element(By.ID, "token-input").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    state = driver.find_element(By.ID, "token-state")
    wait_for(lambda: state.text == "Token set for this tab.", 5, "the token kept")


def refused_requests(driver: Browser) -> list[str]:
    """The console's errors, each of them a request the server refused with 401."""
    errors = console_errors(driver)
    assert all("401" in e["message"] for e in errors), errors
    return [e["message"] for e in errors]


def test_the_token_is_asked_for_once_and_kept_for_the_tab(
    tmp_path: Path, recorded_ts: Path, browser: BrowserFactory
) -> None:
    stand_in = stand_in_channels(tmp_path, recorded_ts)
    with run_server(stand_in.config, {**stand_in.env, "EXSTREAM_API_TOKEN": TOKEN}) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel 1 running")
        driver = browser()
        driver.get(f"{server.base_url}/channels/1")
        log_state = driver.find_element(By.ID, "log-state")
        assert "needs the API token" in log_state.text
        assert "needs the API token" in restart(driver)
        assert refused_requests(driver)  # the restart, refused

        enter_token(driver, TOKEN)
        wait_for(lambda: log_state.text == "Live.", 10, "the log tail, with the token")
        assert restart(driver) == "Restart requested."
        log = driver.find_element(By.ID, "log-lines")
        wait_for(lambda: "process replaced on request" in log.text, 30, "the restart logged")

        driver.get(f"{server.base_url}/logs?channel=1")  # the same tab: the token is kept
        rows = driver.find_element(By.ID, "log-rows")
        wait_for(lambda: "process replaced on request" in rows.text, 10, "the logs table")
        assert refused_requests(driver) == []
        assert TOKEN not in str(driver.current_url)
        assert TOKEN not in server.log()
        assert_read_only_without_token(server, browser)


def assert_read_only_without_token(server: Server, browser: BrowserFactory) -> None:
    """Another browser (no token): the status page works, the logs ask for the token."""
    driver = browser()
    driver.get(f"{server.base_url}/")
    live = driver.find_element(By.ID, "live")
    wait_for(lambda: "Live: updated" in live.text, 10, "the status page's live update")
    driver.get(f"{server.base_url}/logs")
    state = driver.find_element(By.ID, "logs-state")
    assert "needs the API token" in state.text
    assert driver.find_element(By.ID, "log-rows").text == ""
