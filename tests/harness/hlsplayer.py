"""HLS through deploy/nginx/edge.conf, for tests and benches: the edge's site file with
loopback addresses, and a live player that fetches what a real one would."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.harness import nginx
from tests.harness.network import free_port
from tests.harness.server import Server

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "deploy" / "nginx" / "edge.conf"
TARGET = "#EXT-X-TARGETDURATION:"


def edge_site(directory: Path, port: int, origin: int) -> Path:
    """deploy/nginx/edge.conf with loopback addresses and a cache in `directory`."""
    text = EDGE.read_text(encoding="utf-8")
    for pattern, replacement in (
        (
            r"proxy_cache_path /var/cache/nginx/exstream ",
            f"proxy_cache_path {directory / 'cache'} ",
        ),
        (r"server exstream:8410;", f"server 127.0.0.1:{origin};"),
        (r"listen 8080;", f"listen 127.0.0.1:{port};"),
    ):
        text, found = re.subn(re.escape(pattern) if "/" in pattern else pattern, replacement, text)
        assert found == 1, pattern
    site = directory / "edge.conf"
    site.write_text(text, encoding="utf-8")
    return site


@contextlib.contextmanager
def edge_in_front(origin: Server, directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """deploy/nginx/edge.conf in front of `origin`, its files in `directory`: (the
    edge's URL, nginx's master process) until the block ends."""
    directory.mkdir()
    port = free_port()
    edge = f"http://127.0.0.1:{port}"
    site = edge_site(directory, port, origin.port)
    with nginx.running(directory, site, ready_url=f"{edge}/healthz") as master:
        yield edge, master


def new_segments(uris: list[str], last: str | None) -> list[str]:
    """What a live player fetches from a playlist: the newest segment to start with, then
    those after the last it fetched (all of them if that one has left the playlist)."""
    if last is None:
        return uris[-1:]
    if last in uris:
        return uris[uris.index(last) + 1 :]
    return uris


async def player(
    client: httpx.AsyncClient,
    seen: set[str],
    start: float,
    until: float,
    playlist: str = "/stream/1.m3u8",
) -> int:
    """A live player: after `start` s, until the loop's time `until`, reload `playlist` once
    a target duration (RFC 8216 6.3.4) and fetch each new segment once, from the newest
    on; adds the segments it fetched to `seen`, and returns how many there were."""
    fetched = 0
    last: str | None = None
    loop = asyncio.get_running_loop()
    await asyncio.sleep(start)  # players arrive over a few seconds, not all at once
    base = playlist.rsplit("/", 1)[0]
    while loop.time() < until:
        response = await client.get(playlist)
        assert response.status_code == 200, response.text
        lines = response.text.splitlines()
        uris = [line for line in lines if line and not line.startswith("#")]
        target = next(int(line.split(":")[1]) for line in lines if line.startswith(TARGET))
        for uri in new_segments(uris, last):
            got = await client.get(f"{base}/{uri}")
            assert got.status_code == 200, (uri, got.status_code)
            assert got.content[:1] == b"\x47"
            fetched += 1
            last = uri
            seen.add(uri)
        await asyncio.sleep(target)
    return fetched
