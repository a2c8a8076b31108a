"""deploy/nginx/edge.conf in front of a real server: HLS through a real nginx edge cache
plays, and hundreds of players cost the origin about one fetch per segment."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.library import KINDS, make_media
from tests.harness.config import write_config
from tests.harness.hlsplayer import edge_in_front, player
from tests.harness.server import Server, run_server
from tests.polling import wait_for

PLAYERS = 500
WATCH_SECONDS = 14.0
ARRIVALS = 4.0  # seconds over which the players arrive


@pytest.fixture(scope="module")
def origin_and_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("edge")
    media = root / "media"
    media.mkdir()
    make_media(KINDS[0], media, 20.0)
    config = write_config(
        root,
        [{"number": 1, "name": "Edge", "media": [str(media)], "mode": "always_on"}],
        ffmpeg={"width": 320, "height": 180, "video_bitrate": 100_000, "gop_seconds": 1.0},
    )
    with run_server(config) as server, edge_in_front(server, root / "nginx") as (edge, _):
        wait_for(lambda: server.get("/stream/1.m3u8").status_code == 200, 60, "a playlist")
        yield server, edge


def segments_fetched(server: Server) -> float:
    return server.metric("exstream_hls_requests_total", kind="segment", outcome="ok")


def test_hls_plays_through_the_edge(origin_and_edge: tuple[Server, str]) -> None:
    _, edge = origin_and_edge
    run = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", f"{edge}/stream/1.m3u8", "-t", "10",
         "-f", "null", "-"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_hundreds_of_players_cost_the_origin_one_fetch_per_segment(
    origin_and_edge: tuple[Server, str],
) -> None:
    server, edge = origin_and_edge
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
    assert 1 <= origin <= len(seen) + 2, (origin, len(seen))
