"""HLS through deploy/nginx/edge.conf, for tests and benches: the edge's site file with
loopback addresses, and a live player that fetches what a real one would, cheaply enough
that hundreds of them fit in one process (one raw keep-alive connection each, segment
bodies counted, not kept)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tests.harness import nginx
from tests.harness.network import free_port
from tests.harness.rawhttp import SCRATCH, Connection, HttpError
from tests.harness.server import Server

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "deploy" / "nginx" / "edge.conf"
TARGET = "#EXT-X-TARGETDURATION:"
SYNC_BYTE = 0x47


class PlayerError(Exception):
    """A player stopped: what it asked for and what it got."""


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


def media_playlist(text: str) -> tuple[float, list[str]]:
    """A media playlist's target duration and its segments' URIs, in order."""
    lines = text.splitlines()
    uris = [line for line in lines if line and not line.startswith("#")]
    targets = [line[len(TARGET) :] for line in lines if line.startswith(TARGET)]
    try:
        target = float(targets[0])
    except (IndexError, ValueError):
        raise PlayerError(f"a playlist without a valid {TARGET}: {text[:200]!r}") from None
    if target <= 0:
        raise PlayerError(f"a playlist's target duration is {target:g}")
    return target, uris


def segment_path(playlist: str, uri: str) -> str:
    """The path of a segment's URI, relative to its playlist's path (same server only)."""
    url = urlsplit(urljoin(playlist, uri))
    if url.scheme or url.netloc:
        raise PlayerError(f"a segment on another server: {uri!r}")
    return url.path + (f"?{url.query}" if url.query else "")


async def player(
    base: str,
    seen: set[str],
    start: float,
    until: float,
    playlist: str = "/stream/1.m3u8",
    *,
    timeout: float = 10.0,
    scratch: bytearray = SCRATCH,
) -> int:
    """A live player of `base` (http://HOST:PORT): after `start` s, loads `playlist` and
    fetches each new segment once, from the newest on, then reloads a target duration after
    the last load began, half of one if it had nothing new (RFC 8216 6.3.4), while that is
    before the loop's time `until`. Adds the segments it fetched to `seen` and returns how
    many there were; raises PlayerError when a request fails (not 200, a body that is not
    MPEG-TS, a truncated one, no byte for `timeout` s). `scratch` takes every segment's
    bytes: one per thread."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(start)  # players arrive over a few seconds, not all at once
    connection = Connection(base, timeout=timeout, scratch=scratch, user_agent="exstream-player")
    fetched = 0
    last: str | None = None
    try:
        while (began := loop.time()) < until:
            target, uris = media_playlist(await _text(connection, playlist))
            fresh = new_segments(uris, last)
            for uri in fresh:
                await _fetch_segment(connection, segment_path(playlist, uri))
                fetched += 1
                last = uri
                seen.add(uri)
            reload = began + (target if fresh else target / 2)
            if reload >= until:
                break
            await asyncio.sleep(max(0.0, reload - loop.time()))
    except HttpError as error:
        raise PlayerError(f"{error} (after {fetched} segments)") from None
    finally:
        connection.close()
    return fetched


async def _text(connection: Connection, path: str) -> str:
    reply = await connection.get(path)
    if reply.status != 200:
        raise PlayerError(f"GET {path}: {reply.status} {reply.body[:200]!r}")
    return reply.body.decode("utf-8")


async def _fetch_segment(connection: Connection, path: str) -> None:
    reply = await connection.get(path, keep_body=False)
    if reply.status != 200:
        raise PlayerError(f"GET {path}: {reply.status}")
    if reply.first != SYNC_BYTE:
        first = "nothing" if reply.first is None else f"0x{reply.first:02x}"
        raise PlayerError(f"GET {path}: the body starts with {first}, not MPEG-TS's 0x47")
