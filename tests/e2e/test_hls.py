"""End to end: HLS cut from a real channel's stream, read as players read it, straight
from the server and through deploy/nginx/edge.conf in a real nginx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.mpegts import PAT_PID, StartPoint, packets, payload, payload_unit_start, pid
from tests.e2e.hlsrules import Listed, LivePlaylist
from tests.harness.config import write_config
from tests.harness.hlsplayer import edge_in_front, player
from tests.harness.server import Server, run_server
from tests.polling import wait_for

FPS = 25
FRAME = 90_000 // FPS
SEGMENT_SECONDS = 2.0
GOP_SECONDS = 1.0
WINDOW = 4
IDLE_GRACE = 1.0
SESSION_SECONDS = 3 * SEGMENT_SECONDS  # a session that skipped three reloads has left
CLIP_SECONDS = 3.0  # item changes (new keyframes) fall inside segments
PLAY_SECONDS = 30  # ffmpeg's playing time, direct and through the edge
SNAPSHOT_SECONDS = 60  # the playlist's states checked over this time
PLAYERS = 500  # through the edge, at once
WATCH_SECONDS = 14.0
ARRIVALS = 4.0  # seconds over which those players arrive
# Players reload the playlist on a timer (about once per target duration); this one is
# keener, to see each state of the window.
RELOAD = 0.5


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, clips: Callable[[int, float], list[Path]]
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hls")
    media = clips(3, CLIP_SECONDS)
    config = write_config(
        root,
        [
            {"number": 1, "name": "Always", "media": [str(p) for p in media], "mode": "always_on"},
            {"number": 2, "name": "On demand", "media": [str(media[0])], "idle_grace": IDLE_GRACE},
        ],
        ffmpeg={"fps": FPS, "gop_seconds": GOP_SECONDS},
        playout={"min_horizon": 600},
        hls={"segment_seconds": SEGMENT_SECONDS, "window": WINDOW},
    )
    with run_server(config) as running:
        wait_for(lambda: running.channel(1)["state"] == "running", 60, "channel 1 running")
        yield running


@pytest.fixture(scope="module")
def edge(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of deploy/nginx/edge.conf in a real nginx in front of the server."""
    with edge_in_front(server, tmp_path_factory.mktemp("edge") / "nginx") as (url, _):
        yield url


def play(url: str) -> subprocess.Popen[str]:
    """ffmpeg playing `url` for PLAY_SECONDS, its errors (only) on stderr."""
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", url, "-t", str(PLAY_SECONDS),
         "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def video_packets(path: Path) -> list[tuple[int, str]]:
    """(PTS, flags) of every video packet of a file, as ffprobe reads them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts,flags", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [(int(p["pts"]), p["flags"]) for p in json.loads(out)["packets"]]


def first_slice_is_idr(data: bytes) -> bool:
    """The first picture of the segment is an IDR (NAL type 5), not a P slice (1)."""
    start = StartPoint()
    video = bytearray()
    began = False
    for packet in packets(data):
        start.scan(bytes(packet))
        if pid(packet) != start.video_pid:
            continue
        if payload_unit_start(packet) and began:
            break
        began = began or payload_unit_start(packet)
        video += payload(packet)
    for match in re.finditer(b"\x00\x00\x01(.)", bytes(video), re.DOTALL):
        nal_type = match.group(1)[0] & 0x1F
        if nal_type in (1, 5):
            return nal_type == 5
    return False


class SegmentCheck:
    """Fetches each listed segment once (quickly, so that the playlist is reloaded in time
    and the session lasts), then checks each alone and against the one before."""

    def __init__(self, client: httpx.Client, directory: Path) -> None:
        self.client = client
        self.directory = directory
        self.fetched: dict[int, tuple[str, Listed, Path]] = {}  # sequence -> what came
        self.spans: dict[int, tuple[int, int, int]] = {}  # sequence -> (dsn, first, last PTS)
        self.problems: list[str] = []

    def fetch(self, uri: str, listed: Listed) -> None:
        if listed.sequence in self.fetched:
            return
        response = self.client.get(f"/stream/{uri}")
        problem = self.problems.append
        if response.status_code != 200:
            problem(f"{uri}: {response.status_code}")
            return
        if response.headers["content-type"] != "video/mp2t":
            problem(f"{uri}: content-type {response.headers['content-type']}")
        if "immutable" not in response.headers["cache-control"]:
            problem(f"{uri}: cache-control {response.headers['cache-control']}")
        path = self.directory / f"{listed.sequence}.ts"
        path.write_bytes(response.content)
        self.fetched[listed.sequence] = (uri, listed, path)

    def verify(self) -> None:
        for sequence in sorted(self.fetched):
            self._verify(*self.fetched[sequence])

    def _verify(self, uri: str, listed: Listed, path: Path) -> None:
        problem = self.problems.append
        data = path.read_bytes()
        if pid(data) != PAT_PID:
            problem(f"{uri}: starts with PID {pid(data)}, not the PAT")
        if not first_slice_is_idr(data):
            problem(f"{uri}: the first picture is not an IDR")
        errors = subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
            capture_output=True, text=True, timeout=60,
        ).stderr  # fmt: skip
        if errors:
            problem(f"{uri}: ffmpeg: {errors}")
        frames = video_packets(path)
        if not frames or "K" not in frames[0][1]:
            problem(f"{uri}: does not start on a keyframe: {frames[:1]}")
            return
        first, last = frames[0][0], frames[-1][0]
        if abs((last + FRAME - first) / 90_000 - listed.duration) > 0.0015:
            problem(
                f"{uri}: frames last {(last + FRAME - first) / 90_000}s, EXTINF {listed.duration}"
            )
        self.spans[listed.sequence] = (listed.discontinuity, first, last)
        before = self.spans.get(listed.sequence - 1)
        if before is not None and before[0] == listed.discontinuity and before[2] + FRAME != first:
            problem(f"{uri}: starts at PTS {first}, the segment before ended at {before[2]}")


def test_live_playlist_and_segments_follow_the_rules(
    server: Server, edge: str, tmp_path: Path
) -> None:
    # Two players the whole time (straight from the server, and through the edge), beside
    # the snapshots below.
    players = {
        "direct": play(f"http://127.0.0.1:{server.port}/stream/1.m3u8"),
        "edge": play(f"{edge}/stream/1.m3u8"),
    }
    rules = LivePlaylist(WINDOW)
    try:
        with server.client(timeout=30) as client:
            segments = SegmentCheck(client, tmp_path)
            variant = client.get("/stream/1/index.m3u8")
            assert variant.status_code == 200, variant.text
            assert variant.headers["content-type"] == "application/vnd.apple.mpegurl"
            assert variant.headers["cache-control"] == "private, no-store"
            match = re.search(r"^#EXT-X-STREAM-INF:(.*)\n(\S+)$", variant.text, re.M)
            assert match is not None, variant.text
            assert re.search(r'CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"', match[1]), match[1]
            assert "RESOLUTION=320x240" in match[1] and "FRAME-RATE=25.000" in match[1]
            assert re.search(r"BANDWIDTH=[1-9][0-9]*", match[1])
            media = match[2].removeprefix("../")  # relative to /stream/1/
            deadline = time.monotonic() + SNAPSHOT_SECONDS
            while time.monotonic() < deadline:
                response = client.get(f"/stream/{media}")
                assert response.status_code == 200, response.text
                assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
                max_age = int(response.headers["cache-control"].rsplit("max-age=", 1)[1])
                assert max_age <= SEGMENT_SECONDS / 2
                for uri, listed in rules.check(response.text):
                    segments.fetch(uri, listed)
                again = client.get(
                    f"/stream/{media}", headers={"If-None-Match": response.headers["etag"]}
                )
                assert again.status_code in (200, 304)
                assert server.channel(1)["viewers"] >= 1
                time.sleep(RELOAD)
            # While the session lasts (the segments are checked after).
            assert server.metric("exstream_hls_viewers", channel="1") >= 1
            assert server.metric("exstream_hls_segments", channel="1") >= WINDOW
        errors = {name: p.communicate(timeout=30)[1] for name, p in players.items()}
        segments.verify()
    finally:
        for process in players.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    for name, process in players.items():
        assert process.returncode == 0 and errors[name] == "", (name, errors[name])
    assert rules.problems == []
    assert segments.problems == []
    assert rules.media_sequence is not None and rules.media_sequence > 0, "nothing left the window"
    assert len(segments.spans) >= SNAPSHOT_SECONDS / SEGMENT_SECONDS - 2


def segments_fetched(server: Server) -> float:
    return server.metric("exstream_hls_requests_total", kind="segment", outcome="ok")


def test_hundreds_of_players_through_the_edge_cost_the_origin_one_fetch_per_segment(
    server: Server, edge: str
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    before = segments_fetched(server)
    seen: set[str] = set()

    async def watch() -> list[int]:
        until = asyncio.get_running_loop().time() + WATCH_SECONDS
        return await asyncio.gather(
            *(player(edge, seen, i * ARRIVALS / PLAYERS, until, timeout=30) for i in range(PLAYERS))
        )

    fetched = asyncio.run(watch())
    origin = segments_fetched(server) - before
    print(f"{PLAYERS} players fetched {sum(fetched)} segments ({len(seen)} distinct) through "
          f"the edge; the origin served {origin:g}")  # fmt: skip
    # Every player got segments, most of them several (a busy machine starves a few).
    assert min(fetched) >= 1 and sum(fetched) >= 2 * PLAYERS, fetched
    # About one fetch per segment: a moment of load may let one through twice.
    assert 1 <= origin <= len(seen) + 2, (origin, len(seen))


def test_unknown_segment_is_404_json(server: Server) -> None:
    response = server.get("/stream/1/abc-999999.ts")
    assert response.status_code == 404
    assert response.json()["error"] == "segment_not_found"
    assert server.get("/stream/9.m3u8").json()["error"] == "channel_not_found"
    assert server.get("/stream/1.m3u8?session=x").json()["error"] == "invalid_session"


def test_on_demand_channel_lives_while_polled_and_restarts_after_idle(server: Server) -> None:
    assert server.channel(2)["state"] == "stopped"
    with server.client(timeout=30) as client:
        # HEAD answers the headers and starts nothing (players and proxies probe with it).
        for path in ("/stream/2.m3u8", "/stream/2/index.m3u8"):
            head = client.head(path)
            assert head.status_code == 200, path
            assert head.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert client.head("/stream/9.m3u8").status_code == 404
        channel = server.channel(2)
        assert (channel["state"], channel["viewers"]) == ("stopped", 0)
        variant = client.get("/stream/2/index.m3u8")
        assert variant.status_code == 200, variant.text
        media = "/stream/" + variant.text.strip().splitlines()[-1].removeprefix("../")
        first = client.get(media)
        assert first.status_code == 200
        # Polled for longer than a session and the idle grace together: it stays up.
        until = time.monotonic() + SESSION_SECONDS + IDLE_GRACE + 2
        while time.monotonic() < until:
            last = client.get(media)
            assert last.status_code == 200
            channel = server.channel(2)
            assert channel["state"] in ("running", "slate") and channel["viewers"] == 1
            time.sleep(RELOAD)
        assert server.metric("exstream_hls_viewers", channel="2") == 1
        # No more requests: the session ends, then the idle grace, then the channel stops.
        wait_for(
            lambda: server.channel(2)["state"] == "stopped",
            SESSION_SECONDS + IDLE_GRACE + 10,
            "idle stop of channel 2",
        )
        assert server.channel(2)["viewers"] == 0
        assert server.metric("exstream_hls_viewers", channel="2") == 0
        # A player that read the playlist just before may still fetch what it listed...
        listed = re.findall(r"^\S+\.ts$", last.text, re.M)
        assert client.get(f"/stream/{listed[-1]}").status_code == 200
        # ... for the segment's duration plus the playlist's; then memory is free.
        wait_for(
            lambda: server.metric("exstream_hls_segments", channel="2") == 0,
            (WINDOW + 1) * SEGMENT_SECONDS + 10,
            "the last segments to leave memory",
        )
        assert server.metric("exstream_hls_segment_bytes", channel="2") == 0
        # The same player comes back after the pause: the channel starts again.
        again = client.get(media)
        assert again.status_code == 200, again.text
        assert again.headers["content-type"] == "application/vnd.apple.mpegurl"
        old = set(re.findall(r"^\S+\.ts$", first.text, re.M))
        new = set(re.findall(r"^\S+\.ts$", again.text, re.M))
        assert new and not old & new
        assert server.channel(2)["state"] in ("running", "slate")
