"""The channel page's preview plays the channel's HLS in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import BrowserFactory, console_errors
from tests.harness.config import ALWAYS_ON, FAST_HEALTH
from tests.harness.server import Server, run_server
from tests.harness.standin import stand_in_channels
from tests.polling import wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, recorded_ts: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("preview")
    stand_in = stand_in_channels(root, recorded_ts, [ALWAYS_ON], health=FAST_HEALTH)
    with run_server(stand_in.config, stand_in.env) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel 1 running")
        # The first segment is whole (else the page's first request waits for it).
        wait_for(lambda: server.get("/stream/1.m3u8").status_code == 200, 30, "a segment")
        yield server


def test_the_preview_plays_the_channel(server: Server, browser: BrowserFactory) -> None:
    driver = browser()
    driver.get(f"{server.base_url}/channels/1")

    def position() -> float:
        value = driver.execute_script("return document.getElementById('preview-video').currentTime")
        return float(value)

    start = wait_for(lambda: position() or None, 10, "the preview to start playing")
    wait_for(lambda: position() >= start + 3, 10, "3 s of the preview to play")
    muted = driver.execute_script("return document.getElementById('preview-video').muted")
    assert muted is True
    assert wait_for(lambda: server.channel(1)["viewers"] >= 1, 5, "the preview as a viewer")
    assert console_errors(driver) == []
