"""The pages in a real browser against a real server: stand-in ffmpeg channels, headless
Chromium, the console read for errors, axe-core for accessibility."""

from __future__ import annotations

import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.browser.conftest import Browser, BrowserFactory, axe_violations, console_errors
from tests.harness.config import ALWAYS_ON, FAST_HEALTH, port_of
from tests.harness.network import discovery_port_held, free_port
from tests.harness.server import Server, run_cli, run_server
from tests.harness.standin import stand_in_channels
from tests.htmlpage import parse
from tests.polling import wait_for

FILMS = ("Evening News", "Film Night")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, recorded_ts: Path) -> Iterator[Server]:
    """Channel 1 always on; channel 2 on demand, two titled recordings in turn."""
    root = tmp_path_factory.mktemp("pages")
    films = root / "films"
    films.mkdir()
    for title in FILMS:
        (films / f"{title}.ts").write_bytes(recorded_ts.read_bytes())
    stand_in = stand_in_channels(
        root,
        recorded_ts,
        [
            {**ALWAYS_ON, "name": "News, 24/7", "group": "Info"},
            {"number": 2, "name": "Films", "media": [str(films)]},
        ],
        health=FAST_HEALTH,
    )
    with run_server(stand_in.config, stand_in.env) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel 1 running")
        yield server


def field(scope: WebElement | Browser, name: str) -> str:
    return scope.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text


def row(driver: Browser, number: int) -> WebElement:
    return driver.find_element(By.ID, f"channel-{number}")


def shows_live(driver: Browser) -> bool:
    return "Live: updated" in driver.find_element(By.ID, "live").text


def now_title(server: Server, number: int) -> str | None:
    current = server.channel(number)["current"]
    return None if current is None else str(current["title"])


def follows_the_api(driver: Browser, server: Server, number: int) -> None:
    """The channel's row comes to show its state and programme as the API has them."""
    wait_for(
        lambda: field(row(driver, number), "state") == server.channel(number)["state"],
        10,
        f"channel {number}'s state as the API has it",
    )
    wait_for(
        lambda: field(row(driver, number), "now-title") == now_title(server, number),
        10,
        f"channel {number}'s programme as the API has it",
    )


def test_the_status_page_shows_every_channel_and_what_it_plays(
    server: Server, browser: BrowserFactory
) -> None:
    driver = browser()
    driver.get(f"{server.base_url}/")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-channel]")
    assert [r.get_attribute("data-channel") for r in rows] == ["1", "2"]
    wait_for(lambda: shows_live(driver), 10, "the page's first live update")
    for number in (1, 2):
        follows_the_api(driver, server, number)
    assert field(row(driver, 1), "state") == "running"
    # Channel 2's items last 4 s: the page follows them without a reload.
    shown = field(row(driver, 2), "now-title")
    assert shown in FILMS
    wait_for(
        lambda: field(row(driver, 2), "now-title") not in (shown, ""),
        10,
        "the next programme on the page",
    )
    follows_the_api(driver, server, 2)
    assert console_errors(driver) == []


def test_the_status_page_is_complete_without_javascript(server: Server) -> None:
    before = {n: now_title(server, n) for n in (1, 2)}
    response = server.get("/")
    after = {n: now_title(server, n) for n in (1, 2)}
    assert response.status_code == 200
    page = parse(response.text)
    rows = page.find_all("tr", data_channel="*")
    assert [r.attrs["data-channel"] for r in rows] == ["1", "2"]
    for number, element in zip((1, 2), rows, strict=True):
        assert "News, 24/7" in element.text if number == 1 else "Films" in element.text
        title = element.find(data_field="now-title").text
        assert title in {before[number], after[number]}
        assert element.find(data_field="state").text in {"running", "stopped", "starting"}


def guide_programmes(driver: Browser) -> dict[int, set[tuple[int, str]]]:
    """Each channel's programmes in the grid: (start, unix seconds; title)."""
    found: dict[int, set[tuple[int, str]]] = {}
    for line in driver.find_elements(By.CSS_SELECTOR, "table.guide tr[data-channel]"):
        number = int(line.get_attribute("data-channel") or 0)
        found[number] = {
            (
                int(datetime.fromisoformat(str(p.get_attribute("data-start"))).timestamp()),
                p.find_element(By.CLASS_NAME, "title").text,
            )
            for p in line.find_elements(By.CSS_SELECTOR, "li.programme")
        }
    return found


def xmltv_programmes(server: Server) -> dict[int, set[tuple[int, str]]]:
    tv = ET.fromstring(server.get("/iptv/xmltv.xml").content)
    numbers = {
        c.get("id"): int(c.findall("display-name")[-1].text or 0) for c in tv.iter("channel")
    }
    found: dict[int, set[tuple[int, str]]] = {n: set() for n in numbers.values()}
    for programme in tv.iter("programme"):
        start = datetime.strptime(str(programme.get("start")), "%Y%m%d%H%M%S %z")
        title = programme.findtext("title") or ""
        found[numbers[programme.get("channel")]].add(
            (int(start.astimezone(UTC).timestamp()), title)
        )
    return found


def test_the_guide_grid_shows_what_the_xmltv_guide_has(
    server: Server, browser: BrowserFactory
) -> None:
    driver = browser()
    driver.get(f"{server.base_url}/guide")
    grid = guide_programmes(driver)
    guide = xmltv_programmes(server)
    table = driver.find_element(By.CSS_SELECTOR, "table.guide")
    end = datetime.fromisoformat(str(table.get_attribute("data-end"))).timestamp()
    assert set(grid) == set(guide) == {1, 2}
    for number, listed in grid.items():
        # The XMLTV guide starts when it is rendered (a moment after the grid): what it
        # has of the grid's hours, the grid has, at the same times, by the same titles.
        first = min(start for start, _ in guide[number])
        expected = {(s, t) for s, t in guide[number] if s < end}
        assert listed and {p for p in listed if p[0] >= first} <= expected
        assert {t for _, t in listed} == {t for _, t in expected}
    assert {t for _, t in grid[2]} == set(FILMS)
    assert console_errors(driver) == []


@pytest.mark.parametrize("path", ["/", "/channels/1", "/guide", "/logs"])
def test_no_serious_accessibility_problem(
    server: Server, browser: BrowserFactory, path: str
) -> None:
    driver = browser()
    driver.get(f"{server.base_url}{path}")
    driver.find_element(By.TAG_NAME, "main")
    assert axe_violations(driver) == []
    assert console_errors(driver) == []


def test_a_restart_shows_live_on_the_status_and_channel_pages(
    server: Server, browser: BrowserFactory
) -> None:
    status, channel = browser(), browser()
    status.get(f"{server.base_url}/")
    channel.get(f"{server.base_url}/channels/1")
    wait_for(lambda: shows_live(status), 10, "the status page's first live update")
    wait_for(
        lambda: channel.find_element(By.ID, "log-state").text == "Live.",
        10,
        "the channel page's log tail",
    )
    before = int(field(row(status, 1), "restarts"))
    server.signal_channel(1, signal.SIGSTOP)
    wait_for(lambda: int(field(row(status, 1), "restarts")) > before, 30, "the restart on the page")
    assert int(field(row(status, 1), "restarts-hour")) >= 1
    wait_for(lambda: field(row(status, 1), "state") == "running", 30, "running again")
    log = channel.find_element(By.ID, "log-lines")
    wait_for(lambda: "restart attempt" in log.text, 30, "the restart's log line, live")
    assert "stalled" in log.text
    wait_for(lambda: int(field(channel, "restarts")) > before, 10, "the channel page's count")
    assert console_errors(status) == []
    assert console_errors(channel) == []


def test_the_demo_as_make_run_serves_it(tmp_path: Path, browser: BrowserFactory) -> None:
    """`exstream demo` (what `make run` serves): every channel with its state and what it
    plays, with real ffmpeg, and nothing on the console."""
    port = free_port()
    written = run_cli("demo", str(tmp_path), "--port", str(port), timeout=180)
    assert written.returncode == 0, written.stderr
    config = tmp_path / "channels.toml"
    assert port_of(config) == port
    # The demo's tuner binds UDP 65001: not while another test process's tuner does.
    with discovery_port_held(), run_server(config, cwd=tmp_path) as server:
        numbers = [c["number"] for c in server.get("/api/channels").json()["channels"]]
        wait_for(lambda: server.channel(numbers[0])["state"] == "running", 60, "the demo")
        driver = browser()
        driver.get(server.base_url + "/")
        for number in numbers:
            title = now_title(server, number)
            if title is None:  # the demo's empty channel: a state, and nothing on now
                assert field(row(driver, number), "state") in ("slate", "stopped"), number
            else:
                follows_the_api(driver, server, number)
        assert now_title(server, numbers[0]), "the always-on channel plays something"
        assert console_errors(driver) == []
