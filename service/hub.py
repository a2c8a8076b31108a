"""Broadcast hub: one producer, many viewers, one shared bounded buffer.

The producer appends chunks to a ring bounded in bytes; each viewer keeps a cursor into
it. Publishing costs the same for 1 or 2,000 viewers. A viewer whose cursor falls out of
the ring is dropped ("slow"); the channel and the other viewers never wait for it.
New viewers start at a clean point: the latest PAT/PMT, then every packet since the
last keyframe.

Waiting viewers are woken in groups of WAKE_GROUP, one group per event-loop turn: the
loop polls sockets between groups, so a request that arrives during the fan-out of a
chunk to 2,000 viewers waits for one group, not for all of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.mpegts import Aligner, StartPoint

WAKE_GROUP = 128


class ViewerDropped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"viewer dropped: {self.reason}"


@dataclass(eq=False)
class Subscription:
    hub: Hub
    cursor: int
    first: bytes
    dropped: str | None = None

    def take_start(self) -> bytes:
        """The start point (PAT/PMT and a GOP), once: to send before the first batch."""
        first, self.first = self.first, b""
        return first

    def drop(self, reason: str) -> None:
        """Leave the hub: the viewer's next batch raises ViewerDropped(reason)."""
        self.hub.drop(self, reason)

    async def batches(self) -> AsyncIterator[bytes]:
        """Everything since the last call, joined; ends when the hub closes."""
        if self.first:
            yield self.first
            self.first = b""
        hub = self.hub
        while True:
            if self.dropped is not None:
                raise ViewerDropped(self.dropped)
            if self.cursor == hub.head:
                if hub.closed:
                    return
                await hub.wait_for_data()
                continue
            batch = hub.read_from(self.cursor)
            if batch is None:
                hub.drop(self, "slow")
                continue
            self.cursor = hub.head
            yield batch


class Hub:
    def __init__(
        self,
        buffer_bytes: int,
        *,
        gop_limit: int | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.buffer_bytes = buffer_bytes
        self.gop_limit = gop_limit if gop_limit is not None else buffer_bytes
        self.on_drop = on_drop
        self.head = 0  # sequence number of the next chunk
        self.closed = False
        self.subscribers: set[Subscription] = set()
        self.skipped_bytes = 0
        self._ring: deque[bytes] = deque()
        self._ring_bytes = 0
        self._gop: list[bytes] = []
        self._gop_bytes = 0
        self._aligner = Aligner()
        self._start = StartPoint()
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def viewers(self) -> int:
        return len(self.subscribers)

    @property
    def waiting(self) -> int:
        """Viewers waiting for the next chunk."""
        return len(self._waiters)

    @property
    def recognised(self) -> int:
        """Bytes published so far on PIDs that the stream's PAT/PMT announce."""
        return self._start.recognised

    @property
    def tail(self) -> int:
        return self.head - len(self._ring)

    def publish(self, data: bytes) -> int:
        """Append producer bytes; returns how many whole packets' bytes were published."""
        before = self._aligner.skipped
        chunk = self._aligner.feed(data)
        self.skipped_bytes += self._aligner.skipped - before
        if not chunk:
            return 0
        keyframe = self._start.scan(chunk)
        if keyframe is not None:
            self._gop = [self._start.keyframe_header, chunk[keyframe:]]
            self._gop_bytes = len(chunk) - keyframe
        elif self._gop:
            self._gop.append(chunk)
            self._gop_bytes += len(chunk)
            if self._gop_bytes > self.gop_limit:
                self._gop.clear()
                self._gop_bytes = 0
        self._ring.append(chunk)
        self._ring_bytes += len(chunk)
        self.head += 1
        while self._ring_bytes > self.buffer_bytes and len(self._ring) > 1:
            self._ring_bytes -= len(self._ring.popleft())
        self._wake()
        return len(chunk)

    def discontinuity(self) -> None:
        """A new producer process: forget partial packets and the old GOP."""
        self._aligner.reset()
        self._gop.clear()
        self._gop_bytes = 0

    def subscribe(self) -> Subscription:
        if self.closed:
            raise ViewerDropped("closed")
        first = b"".join(self._gop)
        sub = Subscription(self, self.head, first)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def read_from(self, cursor: int) -> bytes | None:
        pending = self.head - cursor
        if pending > len(self._ring):
            return None
        if pending == 1:
            return self._ring[-1]
        ring = self._ring
        return b"".join([ring[i] for i in range(len(ring) - pending, len(ring))])

    def lag(self, sub: Subscription) -> int:
        return self.head - sub.cursor

    def drop(self, sub: Subscription, reason: str) -> None:
        if sub.dropped is None:
            sub.dropped = reason
            if self.on_drop is not None:
                self.on_drop(reason)
        self.subscribers.discard(sub)
        self._wake()

    def end_viewers(self, reason: str) -> None:
        """End every viewer's stream now (not counted as a drop): the channel failed."""
        for sub in list(self.subscribers):
            sub.dropped = reason
        self.subscribers.clear()
        self._wake()

    async def wait_for_data(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        if waiters:
            _release(waiters, 0)


def _release(waiters: list[asyncio.Future[None]], start: int) -> None:
    end = start + WAKE_GROUP
    for waiter in waiters[start:end]:
        if not waiter.done():  # a cancelled viewer
            waiter.set_result(None)
    if end < len(waiters):
        # Scheduled behind the tasks just woken: they run, the loop polls, then the next group.
        asyncio.get_running_loop().call_soon(_release, waiters, end)
