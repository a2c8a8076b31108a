"""A channel's stream between its producer and its viewers: the work-ahead.

The producer (one process after another, restamped by the splicer) runs ahead of real
time into a queue bounded in seconds; the pacer releases each chunk when the wall
clock reaches its clock, so media time is wall time and a handover, a crash or a late
start is absorbed by what is queued. When the queue runs dry, the pacer fills with the
slate instead of letting the picture freeze.
"""

from __future__ import annotations

import asyncio
from collections import deque

from service.clock import Clock
from service.splice import START, TICKS, Chunk, Splicer

FILL_AFTER = TICKS // 5  # the queue ran dry this long ago: fill (well under a visible gap)
FILL_STEP = 0.5  # seconds of slate per fill: content comes back as soon as it is ready


class Timeline:
    def __init__(self, splicer: Splicer, *, clock: Clock, wall: Clock, workahead: float) -> None:
        self.splicer = splicer
        self.clock = clock
        self.workahead = workahead
        self.origin: float | None = None  # when START is due: set by the first chunk
        self.schedule_origin = wall()  # the schedule time of START
        self.queue: deque[tuple[Chunk, str]] = deque()
        self.last_clock = splicer.clock  # the clock of the last chunk queued
        self.started = False  # a chunk went out
        self._room = asyncio.Event()

    def now(self) -> int:
        """The timeline's clock now, in 90 kHz ticks."""
        if self.origin is None:
            return self.splicer.clock
        return START + int((self.clock() - self.origin) * TICKS)

    def schedule_time(self) -> float:
        """The schedule's time of the next frame the producer makes."""
        return self.schedule_origin + self.splicer.seconds(self.splicer.v_next)

    def ahead(self) -> float:
        """Seconds produced and queued beyond the wall clock."""
        return max(0, self.last_clock - self.now()) / TICKS

    def push(self, chunks: list[Chunk], kind: str) -> None:
        """Queue chunks; `kind` is content, slate (nothing to play) or filler (late)."""
        for chunk in chunks:
            if self.origin is None:
                # The first chunk is due now: however long the first process took to
                # start, the stream is paced from its first bytes. (A new viewer gets
                # a burst anyway: the hub starts it at the last keyframe.)
                self.origin = self.clock() - (chunk.clock - START) / TICKS
            self.queue.append((chunk, kind))
            self.last_clock = max(self.last_clock, chunk.clock)

    def due(self) -> tuple[bytes, str | None]:
        """The chunks whose time has come, joined, and the kind of the last one."""
        now = self.now()
        out: list[bytes] = []
        kind: str | None = None
        queue = self.queue
        while queue and queue[0][0].clock <= now:
            chunk, kind = queue.popleft()
            out.append(chunk.data)
        if out:
            self.started = True
            self._room.set()
        return b"".join(out), kind

    def starving(self) -> bool:
        """Viewers have had everything and nothing more is ready."""
        return self.started and not self.queue and self.now() - self.last_clock > FILL_AFTER

    def has_room(self) -> bool:
        return self.ahead() < self.workahead

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._room.clear()
            await self._room.wait()
