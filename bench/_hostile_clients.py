"""The clients of bench.hostile: viewers that time every read, and hostile connections.

The viewers run in their own process (`watch`), so the attackers' work in the bench's
process cannot delay them: a gap they see is the server's.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TypeVar, cast

from bench._common import raise_fd_limit
from bench.fanout import Viewer, wait_answered

P = TypeVar("P", bound=asyncio.BaseProtocol)

STREAM_REQUEST = b"GET /stream/1.ts HTTP/1.1\r\nHost: bench\r\n\r\n"
CONNECT_TIMEOUT = 10.0
JOIN_EVERY = 1.0  # seconds between late joiners
JOIN_TIMEOUT = 5.0  # a joiner without a first body byte by then failed
FIRST_BYTE_TIMEOUT = 30.0


async def connect(port: int, factory: Callable[[], P], timeout: float = CONNECT_TIMEOUT) -> P:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(factory, "127.0.0.1", port)
    return protocol


# --- viewers (their own process) --------------------------------------------------------


class _Watcher(Viewer):
    """A fan-out viewer that also keeps when each read came and the body bytes so far."""

    def __init__(self, buffer: bytearray, request: bytes) -> None:
        super().__init__(buffer, request)
        self.times = array("d")
        self.totals = array("q")
        self.ended: float | None = None

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if self.first is not None:
            self.times.append(time.monotonic())
            self.totals.append(self.body)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.ended = time.monotonic()


@dataclass(frozen=True, slots=True)
class _Join:
    started: float
    ttfb: float | None  # None: refused, cut, not 200, or no body byte in JOIN_TIMEOUT


@dataclass(frozen=True, slots=True)
class ViewerWindow:
    """What the viewers saw between two instants."""

    rates: list[float]  # Mbit/s, one per viewer
    gaps: list[float]  # each viewer's longest wait between two reads, in seconds
    cut: int  # connections that ended inside the window
    joins: int  # late joiners started inside the window
    joined: list[float]  # time to first body byte of those that got one


def window_stats(
    watchers: list[_Watcher], joins: list[_Join], start: float, end: float
) -> ViewerWindow:
    rates, gaps = [], []
    for viewer in watchers:
        times, totals = viewer.times, viewer.totals
        first, last = bisect.bisect_right(times, start), bisect.bisect_right(times, end)
        before = totals[first - 1] if first else 0
        after = totals[last - 1] if last else 0
        rates.append((after - before) * 8 / (end - start) / 1e6)
        # A gap that began before the window ends inside it: it counts in full.
        previous = times[first - 1] if first else start
        worst = 0.0
        for at in times[first:last]:
            worst = max(worst, at - previous)
            previous = at
        gaps.append(max(worst, end - previous))
    cut = sum(v.ended is not None and start <= v.ended < end for v in watchers)
    inside = [j for j in joins if start <= j.started < end]
    joined = [j.ttfb for j in inside if j.ttfb is not None]
    return ViewerWindow(rates, gaps, cut, len(inside), joined)


def watch(port: int, viewers: int, conn: Connection, limit: float) -> None:
    """Process entry: open the viewers, send ("ready", opened, streaming), then answer each
    ("window", start, end) with a ViewerWindow until ("stop",), EOF or `limit` seconds."""
    import uvloop

    raise_fd_limit()
    uvloop.run(_watch(port, viewers, conn, time.monotonic() + limit))


async def _watch(port: int, count: int, conn: Connection, deadline: float) -> None:
    buffer = bytearray(1 << 18)  # every viewer reads into it: only counts are kept
    gate = asyncio.Semaphore(64)

    async def one() -> _Watcher | None:
        async with gate:
            with contextlib.suppress(OSError, TimeoutError):
                return await connect(port, lambda: _Watcher(buffer, STREAM_REQUEST))
        return None

    watchers = [v for v in await asyncio.gather(*(one() for _ in range(count))) if v]
    joins: list[_Join] = []
    try:
        await wait_answered(watchers, FIRST_BYTE_TIMEOUT)
        streaming = sum(v.first is not None and v.status_ok and not v.lost for v in watchers)
        conn.send(("ready", len(watchers), streaming))
        joiner = asyncio.create_task(_join_again_and_again(port, joins))
        try:
            await _answer(conn, watchers, joins, deadline)
        finally:
            joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joiner
    finally:
        for viewer in watchers:
            viewer.close()


async def _join_again_and_again(port: int, joins: list[_Join]) -> None:
    """One late joiner every JOIN_EVERY s, each closed after its first body byte."""
    while True:
        started = time.monotonic()
        viewer: Viewer | None = None
        with contextlib.suppress(OSError, TimeoutError):
            viewer = await connect(
                port, lambda: Viewer(bytearray(1 << 16), STREAM_REQUEST), JOIN_TIMEOUT
            )
            await wait_answered([viewer], JOIN_TIMEOUT)
        ttfb = None
        if viewer is not None and viewer.first is not None and viewer.status_ok:
            ttfb = viewer.first - started  # the connect counts: a full accept queue shows
        joins.append(_Join(started, ttfb))
        if viewer is not None:
            viewer.close()
        await asyncio.sleep(max(0.0, started + JOIN_EVERY - time.monotonic()))


async def _answer(
    conn: Connection, watchers: list[_Watcher], joins: list[_Join], deadline: float
) -> None:
    while time.monotonic() < deadline:
        if not conn.poll():
            await asyncio.sleep(0.05)
            continue
        try:
            command = conn.recv()
        except EOFError:  # the bench is gone
            return
        if command[0] != "window":
            return
        conn.send(window_stats(watchers, joins, command[1], command[2]))


# --- hostile connections (the bench's process) -------------------------------------------


class Attacker(asyncio.Protocol):
    """One hostile connection: sends `opening`, then nothing; keeps what the server did."""

    def __init__(self, opening: bytes = b"") -> None:
        self.opening = opening
        self.transport: asyncio.Transport | None = None
        self.opened_at = 0.0
        self.closed_at: float | None = None
        self.ended = asyncio.Event()
        self.status: int | None = None
        self.answered_at: float | None = None
        self.head = b""
        self.sent = 0

    @property
    def is_open(self) -> bool:
        # A transport that failed a write is closing before connection_lost runs.
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.opened_at = time.monotonic()
        if self.opening:
            self.write(self.opening)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.sent += len(data)

    def data_received(self, data: bytes) -> None:
        if self.status is None and len(self.head) < 32:
            self.head += data[:32]
            parts = self.head.split(b" ", 2)
            if len(parts) == 3 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
                self.status = int(parts[1])
                self.answered_at = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.monotonic()
        self.ended.set()

    def close(self) -> None:
        if self.transport is not None and self.closed_at is None:
            self.transport.abort()


SLOW_HEAD = b"GET /stream/1.ts HTTP/1.1\r\nHost: bench\r\n"
SLOW_PAD = b"X-Slow: x\r\n"  # then header lines, one byte at a time, for ever


class Slowloris(Attacker):
    def __init__(self) -> None:
        super().__init__(SLOW_HEAD[:1])

    def drip(self) -> None:
        if not self.is_open:
            return
        at = self.sent
        self.write(
            SLOW_HEAD[at : at + 1]
            if at < len(SLOW_HEAD)
            else bytes([SLOW_PAD[(at - len(SLOW_HEAD)) % len(SLOW_PAD)]])
        )


async def drip(attackers: list[Slowloris], interval: float, slices: int = 10) -> None:
    """One more byte on every connection each `interval` s, spread over the interval."""
    while True:
        for part in range(slices):
            for attacker in attackers[part::slices]:
                attacker.drip()
            await asyncio.sleep(interval / slices)


class HeaderBomb(Attacker):
    """A request head whose last header is `size` bytes long and never ends, written as
    fast as the server reads it (write flow control), then held open."""

    CHUNK = b"a" * (1 << 16)

    def __init__(self, size: int) -> None:
        super().__init__(b"GET /stream/1.ts HTTP/1.1\r\nHost: bench\r\nX-Bomb: ")
        self.left = size
        self.paused = False
        self.done_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cast(asyncio.Transport, transport).set_write_buffer_limits(high=1 << 18)
        self._pump()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def _pump(self) -> None:
        while not self.paused and self.left > 0 and self.is_open:
            size = min(self.left, len(self.CHUNK))
            self.left -= size
            self.write(self.CHUNK if size == len(self.CHUNK) else self.CHUNK[:size])
        if self.left == 0 and self.done_at is None:
            self.done_at = time.monotonic()


def sse_request(token: str) -> bytes:
    return (
        "GET /api/logs/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


ATTACKS = ("slowloris", "idle", "bombs", "sse")


def attacker_factory(kind: str, token: str, bomb_bytes: int) -> Callable[[], Attacker]:
    if kind == "slowloris":
        return Slowloris
    if kind == "bombs":
        return lambda: HeaderBomb(bomb_bytes)
    if kind == "sse":
        request = sse_request(token)
        return lambda: Attacker(request)
    return Attacker  # idle: connects and says nothing


async def open_many(
    port: int, count: int, factory: Callable[[], Attacker], limit: float
) -> tuple[list[Attacker], Counter[str]]:
    """Up to `count` connections, 256 connects in flight, for at most `limit` seconds;
    the connects that failed, by reason ("not tried in time" for those cut short)."""
    gate = asyncio.Semaphore(256)
    opened: list[Attacker] = []
    failed: Counter[str] = Counter()

    async def one() -> None:
        async with gate:
            try:
                opened.append(await connect(port, factory))
            except TimeoutError:
                failed["connect timeout"] += 1
            except OSError as exc:
                failed[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        failed["not tried in time"] += len(pending)
    return opened, failed


async def close_all(attackers: list[Attacker], timeout: float = 10.0) -> None:
    for attacker in attackers:
        attacker.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            for attacker in attackers:
                await attacker.ended.wait()


@dataclass(frozen=True, slots=True)
class AttackOutcome:
    """What the server did with one attack's connections, read when the attack ends."""

    tried: int
    opened: int
    ramp: float  # seconds to open them
    failed: Counter[str]  # connects that failed, by reason
    statuses: Counter[int]  # HTTP answers the server gave, by status
    answered_after: list[float]  # seconds from connect to the answer, per answered one
    closed_after: list[float]  # seconds from connect to the server's close, per closed one
    held: int  # still open at the end
    held_unanswered: int  # ... that the server never answered
    sent: list[int]  # bytes each connection handed to the kernel (whose buffers hold MBs)
    sent_all_after: list[float]  # header bombs: seconds to write all of it


def outcome_of(
    attackers: list[Attacker], tried: int, ramp: float, failed: Counter[str]
) -> AttackOutcome:
    closed = [a.closed_at - a.opened_at for a in attackers if a.closed_at is not None]
    bombs = [a for a in attackers if isinstance(a, HeaderBomb)]
    return AttackOutcome(
        tried=tried,
        opened=len(attackers),
        ramp=ramp,
        failed=failed,
        statuses=Counter(a.status for a in attackers if a.status is not None),
        answered_after=[a.answered_at - a.opened_at for a in attackers if a.answered_at],
        closed_after=closed,
        held=sum(a.is_open for a in attackers),
        held_unanswered=sum(a.is_open and a.status is None for a in attackers),
        sent=[a.sent for a in attackers],
        sent_all_after=[b.done_at - b.opened_at for b in bombs if b.done_at is not None],
    )
