"""One continuous stream from a mixed library, through every process change and heal.

A real server and real ffmpeg play a library of every kind of file (tests/e2e/library.py)
while a viewer stays connected across item changes of other formats, a `segment_max`
boundary, an operator restart, a SIGKILL and a SIGSTOP of the process; its capture must
pass every check on the wire (tests/e2e/wire.py).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.library import KINDS, av_offsets, make_library, make_media
from tests.e2e.tsutil import cut_clean, decode_errors
from tests.e2e.wire import WireReport, check_capture, worst_gap
from tests.harness.config import FAST_HEALTH, write_config
from tests.harness.server import Server, run_server
from tests.harness.viewer import Viewer
from tests.polling import wait_for

FPS = 25
ITEM_SECONDS = 3.0
LONG_SECONDS = 7.0  # one item longer than segment_max: a process change inside it
SEGMENT_MAX = 4.0
MAX_GAP = 0.5
# A flash is timed by the output frame that shows it: from a source not at 25 fps that
# may be either frame next to the mark (40 ms apart), so one frame is the measurement's
# own resolution; 45 ms (one frame and detection jitter) is also where audio ahead of
# video starts to be noticed (ITU-R BT.1359). Seen: -42 ms on every mark of one item.
MAX_AV_OFFSET = 0.045


def finish(viewer: Viewer) -> bytes:
    data = viewer.finish()
    assert not viewer.is_alive()
    assert viewer.error is None, repr(viewer.error)
    assert viewer.status == 200
    return data


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("mixed")
    files = make_library(root, ITEM_SECONDS)
    (root / "long").mkdir()
    long = make_media(KINDS[0], root / "long", LONG_SECONDS)
    return [long, *files]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, library: list[Path]) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("continuity")
    later = root / "later"
    later.mkdir()
    config = write_config(
        root,
        [
            {
                "number": 1,
                "name": "Mixed Library",
                "media": [str(p) for p in library],
                "mode": "always_on",
            },
            {"number": 2, "name": "Later", "media": [str(later)], "idle_grace": 2.0},
        ],
        ffmpeg={"fps": FPS},
        playout={"segment_max": SEGMENT_MAX, "rebuild_interval": 2.0, "min_horizon": 600},
        health={**FAST_HEALTH, "max_restarts": 10},
    )
    with run_server(config) as running:
        wait_for(lambda: running.channel(1)["state"] == "running", 60, "channel 1 running")
        yield running


def gaps(viewer: Viewer) -> list[str]:
    """The longest pauses between arrivals, with when they began (wall clock), for messages."""
    offset = time.time() - time.monotonic()
    pairs = list(zip(viewer.arrivals, viewer.arrivals[1:], strict=False))
    pairs.sort(key=lambda p: p[1][0] - p[0][0], reverse=True)
    return [
        f"{b[0] - a[0]:.2f}s after {time.strftime('%H:%M:%S', time.gmtime(a[0] + offset))}"
        f".{int((a[0] + offset) % 1 * 1000):03d}"
        for a, b in pairs[:3]
    ]


def assert_clean(data: bytes, tmp_path: Path, name: str) -> WireReport:
    report = check_capture(data, fps=FPS)
    assert report.problems() == [], report.problems()[:20]
    path = tmp_path / f"{name}.ts"
    path.write_bytes(cut_clean(data))
    assert decode_errors(path) == ""
    offsets = av_offsets(path)
    assert all(abs(offset) <= MAX_AV_OFFSET for offset in offsets), offsets
    return report


@contextlib.contextmanager
def watching(server: Server, number: int) -> Iterator[tuple[Viewer, list[str]]]:
    """A viewer of the channel, and its states read every 0.2 s, until the block ends;
    then the viewer must have ended cleanly (unless the block failed)."""
    viewer = Viewer(server, number)
    viewer.start()
    done = threading.Event()
    states: list[str] = []

    def poll() -> None:
        while not done.wait(0.2):
            states.append(server.channel(number)["state"])

    threading.Thread(target=poll, daemon=True).start()
    try:
        yield viewer, states
    except BaseException:
        viewer.finish()
        raise
    finally:
        done.set()
    finish(viewer)


def test_a_viewer_who_stays_sees_one_stream_through_every_change(
    server: Server, library: list[Path], tmp_path: Path
) -> None:
    cycle = LONG_SECONDS + ITEM_SECONDS * (len(library) - 1)
    with watching(server, 1) as (viewer, states):
        wait_for(lambda: viewer.seconds() > 4, 30, "the viewer to watch a while")
        with server.client() as client:
            response = client.post("/api/channels/1/restart")
        assert response.status_code == 202, response.text
        wait_for(lambda: viewer.seconds() > 9, 30, "a while after the operator restart")
        server.signal_channel(1, signal.SIGKILL)
        wait_for(lambda: viewer.seconds() > 15, 30, "a while after the kill")
        stopped = server.signal_channel(1, signal.SIGSTOP)
        wait_for(
            lambda: (
                server.metric("exstream_channel_unhealthy_total", channel="1", reason="stalled")
                >= 1
            ),
            30,
            f"the stopped process {stopped} to be seen as stalled",
        )
        # Past one whole cycle of the library: every kind of item and change was seen.
        wait_for(lambda: viewer.seconds() > cycle + 6, cycle + 60, "a whole library cycle")
    data = bytes(viewer.data)
    (tmp_path / "capture.ts").write_bytes(data)
    assert worst_gap(viewer.arrivals) < MAX_GAP, gaps(viewer)
    report = assert_clean(data, tmp_path, "stayed")
    assert report.service_name == "Mixed Library" and report.provider == "exstream"
    assert set(states) == {"running"}, states
    # Media time is wall time: what arrived spans as much media as wall-clock time
    # (give or take the start-up burst and the work-ahead at the end).
    media = report.video_frames / FPS
    assert abs(media - viewer.seconds()) < 1.5, (media, viewer.seconds())
    channel = server.channel(1)
    assert channel["failure"] is None
    assert server.metric("exstream_channel_unhealthy_total", channel="1", reason="exited") >= 1
    assert server.metric("exstream_items_skipped_total", channel="1") == 0


def test_a_viewer_who_joins_mid_item_gets_a_clean_start(server: Server, tmp_path: Path) -> None:
    wait_for(lambda: (server.channel(1)["current"] or {}).get("offset_seconds", 0) > 1, 30, "mid")
    viewer = Viewer(server, 1)
    viewer.start()
    wait_for(lambda: viewer.seconds() > 8, 30, "eight seconds of stream")
    data = finish(viewer)
    assert worst_gap(viewer.arrivals) < MAX_GAP
    assert_clean(data, tmp_path, "joined")


def test_a_viewer_who_joins_during_the_slate_sees_content_come_in(
    server: Server, library: list[Path], tmp_path: Path
) -> None:
    with watching(server, 2) as (viewer, states):
        wait_for(lambda: viewer.seconds() > 3, 30, "the slate for a while")
        assert server.channel(2)["state"] == "slate"
        target = _media_dir(server, 2)
        shutil.copy(library[1], target / library[1].name)
        wait_for(lambda: server.channel(2)["state"] == "running", 30, "content on channel 2")
        seen = viewer.seconds()
        wait_for(lambda: viewer.seconds() > seen + 4, 30, "content for a while")
    assert worst_gap(viewer.arrivals) < MAX_GAP
    assert_clean(bytes(viewer.data), tmp_path, "slate")
    # Slate, then content, and nothing else once the first output went out.
    shown = [state for state in states if state != "starting"]
    assert shown[0] == "slate" and "running" in shown, states
    assert set(shown) == {"slate", "running"}, states
    assert shown.index("running") > len(shown) - 1 - shown[::-1].index("slate"), states


def _media_dir(server: Server, number: int) -> Path:
    config: dict[str, Any] = tomllib.loads(
        (server.log_path.parent / "channels.toml").read_text(encoding="utf-8")
    )
    channel = next(c for c in config["channels"] if c["number"] == number)
    return Path(channel["media"][0])
