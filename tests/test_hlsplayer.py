"""The harness's HLS player fetches what a live player would (forward from the newest), on
one keep-alive connection, and stops with a clear error when a response is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from tests.harness.hlsplayer import PlayerError, media_playlist, new_segments, player
from tests.harness.rawhttp import Reading, Reply

LISTED = ["1/a-4.ts", "1/a-5.ts", "1/a-6.ts"]
TARGET = 0.1  # s: a few reloads in a fraction of a second
SEGMENT = b"\x47" + bytes(187) * 2000  # more than one read of the scratch buffer


def test_a_player_starts_at_the_newest_segment() -> None:
    assert new_segments(LISTED, None) == ["1/a-6.ts"]


def test_a_player_fetches_only_what_follows_its_last_segment() -> None:
    assert new_segments(LISTED, "1/a-4.ts") == ["1/a-5.ts", "1/a-6.ts"]
    assert new_segments(LISTED, "1/a-6.ts") == []


def test_a_player_that_fell_behind_the_window_fetches_all_of_it() -> None:
    assert new_segments(LISTED, "1/a-2.ts") == LISTED


def test_a_playlist_without_a_target_duration_is_refused() -> None:
    assert media_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n1/a-1.ts\n") == (
        4.0,
        ["1/a-1.ts"],
    )
    with pytest.raises(PlayerError, match="without a valid #EXT-X-TARGETDURATION"):
        media_playlist("#EXTM3U\n1/a-1.ts\n")


# --- against a tiny server -------------------------------------------------------------


def response(body: bytes, *, status: int = 200, chunked: bool = False, length: int = -1) -> bytes:
    """An HTTP/1.1 response; `length` overrides Content-Length (a truncated body)."""
    reason = {200: "OK", 404: "Not Found"}.get(status, "X")
    if chunked:
        pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        coded = b"".join(b"%x;x=y\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nA: b\r\n\r\n"
        return f"HTTP/1.1 {status} {reason}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + coded
    size = len(body) if length < 0 else length
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: {size}\r\n\r\n".encode() + body


def live_playlist(load: int) -> bytes:
    """A live playlist that has moved on by one segment at each load."""
    segments = "".join(f"#EXTINF:{TARGET},\n1/a-{n}.ts\n" for n in range(load, load + 3))
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:{TARGET}\n{segments}".encode()


@dataclass
class Answer:
    data: bytes = b""
    close: bool = False  # close the connection after it, without saying so
    unanswered: bool = False  # close the connection instead
    stall: bool = False  # then send nothing more, keep the connection open


@dataclass
class Origin:
    """Answers GETs with `answer(path, request number from 1)`; notes connections and when
    each request came."""

    answer: Callable[[str, int], Answer]
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    base: str = ""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(cast(asyncio.Task[None], asyncio.current_task()))
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            try:
                await self._answer(reader, writer)
            finally:
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head.split(b" ")[1].decode())
            self.times.append(asyncio.get_running_loop().time())
            answer = self.answer(self.requests[-1], len(self.requests))
            if answer.unanswered:
                return
            writer.write(answer.data)
            await writer.drain()
            if answer.stall:
                await self.stop.wait()
            if answer.close or answer.stall:
                return

    def loads(self) -> list[float]:
        """When each playlist request came."""
        return [t for t, path in zip(self.times, self.requests, strict=True) if ".m3u8" in path]


@contextlib.asynccontextmanager
async def origin(answer: Callable[[str, int], Answer]) -> AsyncIterator[Origin]:
    served = Origin(answer)
    server = await asyncio.start_server(served.serve, "127.0.0.1", 0)
    served.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield served
    finally:
        served.stop.set()
        server.close()
        await server.wait_closed()
        if served.handlers:  # each ends at its connection's end, which the player closed
            await asyncio.wait(served.handlers, timeout=5)


def live(*, chunked: bool = False, close: bool = False) -> Callable[[str, int], Answer]:
    loads = 0

    def answer(path: str, number: int) -> Answer:
        nonlocal loads
        if path.endswith(".m3u8"):
            loads += 1
            return Answer(response(live_playlist(loads), chunked=chunked), close=close)
        return Answer(response(SEGMENT, chunked=chunked), close=close)

    return answer


async def play(base: str, seconds: float, timeout: float = 5.0) -> tuple[int, set[str]]:
    seen: set[str] = set()
    until = asyncio.get_running_loop().time() + seconds
    return await player(base, seen, 0, until, "/stream/1.m3u8", timeout=timeout), seen


def expected_requests(loads: int) -> list[str]:
    """Each load of the live playlist, then its newest segment."""
    return [
        path for n in range(1, loads + 1) for path in ("/stream/1.m3u8", f"/stream/1/a-{n + 2}.ts")
    ]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_player_reloads_and_fetches_each_new_segment_on_one_connection(
    chunked: bool,
) -> None:
    async with origin(live(chunked=chunked)) as served:
        fetched, seen = await play(served.base, 2.5 * TARGET)
    loads = served.requests.count("/stream/1.m3u8")
    assert loads >= 2, served.requests
    assert served.requests == expected_requests(loads)
    assert fetched == loads and seen == {f"1/a-{n + 2}.ts" for n in range(1, loads + 1)}
    assert served.connections == 1
    assert all(b - a >= 0.9 * TARGET for a, b in itertools.pairwise(served.loads()))


async def test_a_player_reloads_an_unchanged_playlist_after_half_a_target_duration() -> None:
    def unchanged(path: str, number: int) -> Answer:
        return Answer(response(live_playlist(1) if path.endswith(".m3u8") else SEGMENT))

    async with origin(unchanged) as served:
        fetched, _ = await play(served.base, 3 * TARGET)
    gaps = [b - a for a, b in itertools.pairwise(served.loads())]
    assert fetched == 1 and len(gaps) >= 3, served.requests
    assert all(gap >= 0.45 * TARGET for gap in gaps), gaps


async def test_a_player_reconnects_when_the_server_closes_between_requests() -> None:
    async with origin(live(close=True)) as served:
        fetched, _ = await play(served.base, 1.5 * TARGET)
    assert fetched >= 2
    assert served.connections == len(served.requests) == 2 * fetched


async def test_a_player_reconnects_once_when_a_kept_connection_closes_unanswered() -> None:
    playing = live()

    def drop_second(path: str, number: int) -> Answer:
        return Answer(unanswered=True) if number == 2 else playing(path, number)

    async with origin(drop_second) as served:
        fetched, _ = await play(served.base, 1.5 * TARGET)
    assert fetched >= 2
    assert served.connections == 2
    assert served.requests[1] == served.requests[2] == "/stream/1/a-3.ts"


async def test_a_player_stops_when_the_server_keeps_closing_unanswered() -> None:
    playing = live()

    def drop_after_first(path: str, number: int) -> Answer:
        return playing(path, number) if number == 1 else Answer(unanswered=True)

    async with origin(drop_after_first) as served:
        with pytest.raises(PlayerError, match=r"a-3\.ts: the server closed the connection"):
            await play(served.base, 10)
    assert served.connections == 2 and len(served.requests) == 3


@pytest.mark.parametrize(
    ("segment", "error"),
    [
        (Answer(response(b'{"error":"segment_not_found"}', status=404)), r"a-3\.ts: 404"),
        (Answer(response(b"<html>", status=200)), r"starts with 0x3c, not MPEG-TS's 0x47"),
        (
            Answer(response(SEGMENT[:500], length=1000), close=True),
            "closed after 500 body bytes of 1000: a truncated body",
        ),
        (
            Answer(response(SEGMENT[:500], length=1000), stall=True),
            r"a-3\.ts: no byte for 0\.3 s \(after 0 segments\)",
        ),
        (
            Answer(b"HTTP/1.1 200 OK\r\n\r\n\x47", close=True),
            "neither Content-Length nor chunked",
        ),
    ],
    ids=["404", "not-mpegts", "truncated", "stalled", "read-to-close"],
)
async def test_a_player_stops_at_a_bad_segment(segment: Answer, error: str) -> None:
    playing = live()

    def bad_segment(path: str, number: int) -> Answer:
        return segment if path.endswith(".ts") else playing(path, number)

    async with origin(bad_segment) as served:
        with pytest.raises(PlayerError, match=error):
            await play(served.base, 10, timeout=0.3)


@pytest.mark.parametrize("piece", [1, 2, 7, 1 << 20])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_response_reads_the_same_however_it_is_split(piece: int, chunked: bool) -> None:
    body = b"\x47" + bytes(range(256)) * 4
    data = response(body, chunked=chunked)
    for keep in (True, False):
        reading = Reading("/x", keep, asyncio.get_running_loop().create_future())
        for at in range(0, len(data), piece):
            scratch = bytearray(data[at : at + piece])
            reading.feed(scratch, len(scratch))
        assert reading.done.result() == Reply(200, len(body), 0x47, body if keep else b"")
