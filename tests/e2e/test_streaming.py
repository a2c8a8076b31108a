"""End to end: a real server, real ffmpeg, real HTTP viewers."""

from __future__ import annotations

import itertools
import re
import signal
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from service.mpegts import PAT_PID, StartPoint, packets, payload_unit_start, pid, random_access
from tests.e2e.tsutil import backwards_dts, cut_clean, decode_errors, ffprobe_url, probe_streams
from tests.harness.config import one_channel, write_config
from tests.harness.server import Server, run_server, stop_server
from tests.polling import wait_for

CLIP_SECONDS = 2.0


def capture(
    server: Server,
    number: int,
    seconds: float,
    limit: int = 50_000_000,
    during: Callable[[], object] | None = None,
) -> bytes:
    """Read the stream for `seconds`; `during` is called once while it is open."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    with server.client() as client, client.stream("GET", f"/stream/{number}.ts") as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "video/mp2t"
        for chunk in response.iter_raw():
            data += chunk
            if during is not None:
                during()
                during = None
            if time.monotonic() > deadline or len(data) > limit:
                break
    return bytes(data)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, clips: Callable[[int, float], list[Path]]
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("streaming")
    media = clips(3, CLIP_SECONDS)
    (root / "empty").mkdir()
    config = write_config(
        root,
        [
            {
                "number": 1,
                "name": "Always",
                "media": [str(p) for p in media],
                "mode": "always_on",
                "group": "Test",
                "logo": "http://logo.invalid/1.png",
            },
            {"number": 2, "name": "On demand", "media": [str(media[0].parent)], "idle_grace": 1.0},
            {"number": 3, "name": "Nothing", "media": [str(root / "empty")], "idle_grace": 1.0},
        ],
        playout={"min_horizon": 600},
    )
    with run_server(config) as running:
        wait_for(lambda: running.channel(1)["state"] == "running", 30, "channel 1 running")
        yield running


def test_stream_is_mpegts_with_h264_and_aac(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "capture.ts"
    path.write_bytes(cut_clean(capture(server, 1, 3.0)))
    info = probe_streams(path)
    assert info["format"]["format_name"] == "mpegts"  # type: ignore[index]
    codecs = sorted(s["codec_name"] for s in info["streams"])  # type: ignore[attr-defined]
    assert codecs == ["aac", "h264"]


def test_continuous_across_item_boundaries(server: Server, tmp_path: Path) -> None:
    # Three 2 s items: 6.5 s of stream crosses at least two boundaries wherever it starts.
    path = tmp_path / "capture.ts"
    path.write_bytes(cut_clean(capture(server, 1, 3 * CLIP_SECONDS + 0.5)))
    assert backwards_dts(path) == []
    assert decode_errors(path) == ""
    duration = float(probe_streams(path)["format"]["duration"])  # type: ignore[index]
    assert duration > 2 * CLIP_SECONDS + 0.5


def test_new_viewer_starts_with_pat_pmt_and_a_keyframe(server: Server) -> None:
    data = capture(server, 1, 0.5, limit=200_000)
    first = list(packets(data[: 188 * 400]))
    assert pid(first[0]) == PAT_PID
    start = StartPoint()
    start.scan(bytes(first[0]) + bytes(first[1]))
    assert start.video_pid is not None, "the second packet is the PMT"
    video = [p for p in first if pid(p) == start.video_pid]
    assert payload_unit_start(video[0]) and random_access(video[0])


def test_one_process_for_many_viewers(server: Server) -> None:
    counted = threading.Event()

    def viewer() -> int:
        received = 0
        with server.client(timeout=30) as client, client.stream("GET", "/stream/1.ts") as response:
            for chunk in response.iter_raw():
                received += len(chunk)
                if counted.is_set() and received > 100_000:
                    break
        return received

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(viewer) for _ in range(20)]
        try:
            wait_for(lambda: server.channel(1)["viewers"] >= 20, 30, "20 viewers")
            # One process at a time for the channel, whatever the number of viewers
            # (between two items there may be none for a moment).
            seen = [len(server.children("exstream_channel=1")) for _ in range(20)]
        finally:
            counted.set()
        assert max(seen) <= 1, seen
        assert all(f.result(timeout=60) > 100_000 for f in futures)


def test_on_demand_channel_starts_and_stops_after_idle_grace(server: Server) -> None:
    assert server.channel(2)["state"] == "stopped"
    assert len(capture(server, 2, 1.0)) > 0
    wait_for(lambda: server.channel(2)["state"] == "stopped", 15, "idle stop of channel 2")
    wait_for(lambda: not server.children("exstream_channel=2"), 10, "no process for channel 2")


def test_channel_without_media_streams_the_slate(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "slate.ts"
    states_seen: list[str] = []
    data = capture(server, 3, 2.0, during=lambda: states_seen.append(server.channel(3)["state"]))
    path.write_bytes(cut_clean(data))
    codecs = sorted(s["codec_name"] for s in probe_streams(path)["streams"])  # type: ignore[attr-defined]
    assert codecs == ["aac", "h264"]
    assert states_seen == ["slate"]


def test_unknown_channel_is_a_json_404(server: Server) -> None:
    for path in ("/stream/99.ts", "/api/channels/99"):
        response = server.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "channel_not_found"
    response = server.get("/stream/abc.ts")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_m3u_lists_every_channel_and_every_url_plays(server: Server) -> None:
    response = server.get("/iptv/channels.m3u")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0].startswith("#EXTM3U") and 'url-tvg="' in lines[0]
    entries = [
        (lines[i], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXTINF")
    ]
    assert len(entries) == 3
    extinf, url = entries[0]
    assert re.search(r' tvg-id="C1\.[0-9a-f]{8}\.exstream"', extinf)
    for attribute in (
        'tvg-name="Always"',
        'tvg-chno="1"',
        'group-title="Test"',
        'tvg-logo="http://logo.invalid/1.png"',
    ):
        assert attribute in extinf
    for _, url in entries:
        assert url.startswith(server.base_url)
        assert plays(url) == {"h264", "aac"}, url


def plays(url: str) -> set[str]:
    """The codecs ffprobe finds in the stream at `url`, as a player opens it."""
    result = ffprobe_url(
        url,
        "-show_streams",
        "-probesize",
        "64000",
        "-analyzeduration",
        "500000",
        "-rw_timeout",
        "20000000",
    )
    streams = result.get("streams")
    assert isinstance(streams, list)
    return {str(stream["codec_name"]) for stream in streams}


def test_xmltv_programmes_follow_the_schedule(server: Server) -> None:
    response = server.get("/iptv/xmltv.xml")
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    ids = {c.findall("display-name")[-1].text: c.get("id") for c in root.findall("channel")}
    assert set(ids) == {"1", "2", "3"}
    programmes = [p for p in root.findall("programme") if p.get("channel") == ids["1"]]

    def parse(value: str | None) -> float:
        assert value is not None
        return datetime.strptime(value, "%Y%m%d%H%M%S %z").timestamp()

    spans = [(parse(p.get("start")), parse(p.get("stop"))) for p in programmes]
    assert spans[-1][1] - spans[0][0] >= 24 * 3600 - 60
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    # The programme on air is the item the playout reports (item_at) for that moment.
    current = server.channel(1)["current"]
    on_air = datetime.fromisoformat(current["start"].replace("Z", "+00:00")).timestamp()
    index = next(i for i, (start, end) in enumerate(spans) if start <= on_air < end)
    title = programmes[index].find("title")
    assert title is not None and title.text == current["title"]
    assert abs(spans[index][0] - on_air) < 1  # XMLTV times are whole seconds
    assert {p.findtext("title") for p in programmes} == {"clip0", "clip1", "clip2"}


def test_hdhomerun_emulation(server: Server) -> None:
    discover = server.get("/discover.json").json()
    for key in (
        "FriendlyName",
        "ModelNumber",
        "FirmwareName",
        "DeviceID",
        "DeviceAuth",
        "BaseURL",
        "LineupURL",
        "TunerCount",
    ):
        assert key in discover
    assert discover["LineupURL"] == f"{server.base_url}/lineup.json"
    lineup = server.get("/lineup.json").json()
    assert [e["GuideNumber"] for e in lineup] == ["1", "2", "3"]
    assert all(e["URL"].endswith(f"/stream/{e['GuideNumber']}.ts") for e in lineup)
    assert all(plays(e["URL"]) == {"h264", "aac"} for e in lineup)
    status = server.get("/lineup_status.json").json()
    assert status["ScanInProgress"] == 0 and status["SourceList"]
    device = ET.fromstring(server.get("/device.xml").content)
    ns = {"u": "urn:schemas-upnp-org:device-1-0"}
    assert device.findtext("u:URLBase", namespaces=ns) == server.base_url
    assert device.findtext("u:device/u:serialNumber", namespaces=ns) == discover["DeviceID"]
    with server.client() as client:
        assert client.post("/lineup.post?scan=start&source=Cable").status_code == 200


def test_slow_viewer_is_dropped_and_others_keep_receiving(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    config = one_channel(
        tmp_path,
        clips(3, CLIP_SECONDS),
        ffmpeg={"video_bitrate": 2_000_000},
        stream={"buffer_bytes": 192_512, "send_timeout": 2.0},
    )
    with run_server(config) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel running")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"GET /stream/1.ts HTTP/1.1\r\nHost: test\r\n\r\n")
        try:
            with server.client() as client, client.stream("GET", "/stream/1.ts") as good:
                received = 0
                iterator = good.iter_raw()

                def dropped() -> bool:
                    nonlocal received
                    received += len(next(iterator))
                    return server.metric("exstream_viewer_drops_total", channel="1") > 0

                wait_for(dropped, 30, "the stuck viewer to be dropped", interval=0)
                wait_for(lambda: server.channel(1)["viewers"] == 1, 10, "one viewer left")
                before = received
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    received += len(next(iterator))
                assert received > before
        finally:
            stuck.close()
        assert "dropped" in server.log()


def test_sigterm_with_open_streams_exits_fast_and_leaves_no_process(
    tmp_path: Path, clips: Callable[[int, float], list[Path]]
) -> None:
    media = clips(3, CLIP_SECONDS)
    config = write_config(
        tmp_path,
        [
            {"number": 1, "name": "A", "media": [str(p) for p in media], "mode": "always_on"},
            {"number": 2, "name": "B", "media": [str(p) for p in media]},
        ],
    )
    with run_server(config) as server:
        streams = []
        client = httpx.Client(base_url=server.base_url, timeout=20)
        try:
            for number in (1, 2, 2):
                response = client.send(
                    client.build_request("GET", f"/stream/{number}.ts"), stream=True
                )
                assert response.status_code == 200
                next(response.iter_raw())
                streams.append(response)
            children = server.children()
            assert len(server.children("exstream_channel=")) <= 2
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(10)
            elapsed = time.monotonic() - started
            for response in streams:
                response.close()
        finally:
            client.close()
            stop_server(server)
        assert elapsed < 5, f"exit took {elapsed:.1f}s"
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.process.returncode in (0, -signal.SIGTERM)
        assert "exstream stopped" in server.log()
        left = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []
