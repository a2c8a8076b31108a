"""The work-ahead: chunks queued by the producer, released when the clock reaches them.

Driven by the FakeClock: nothing here waits for real time.
"""

from __future__ import annotations

import asyncio

import pytest

from service.config import FfmpegSettings
from service.splice import START, TICKS, Chunk, Splicer
from service.timeline import FILL_AFTER, Timeline
from tests.conftest import FakeClock
from tests.polling import wait_until
from tests.service.test_splice import make_slate

BURST = 0.0  # the first chunk is due at once, no earlier
WALL = 1_800_000_000.0  # the schedule's time when the timeline starts


def timeline(clock: FakeClock, workahead: float = 5.0) -> Timeline:
    return Timeline(Splicer(25, "T"), clock=clock, wall=lambda: WALL, workahead=workahead)


def chunk(seconds: float, data: bytes = b"x") -> Chunk:
    """A chunk due `seconds` into the timeline."""
    return Chunk(data, START + round(seconds * TICKS))


def started(clock: FakeClock, workahead: float = 5.0) -> Timeline:
    """A timeline whose first chunk (at 0 s) went out: `now` is BURST seconds past it."""
    line = timeline(clock, workahead)
    line.push([chunk(0.0, b"first,")], "content")
    assert line.due() == (b"first,", "content")
    return line


def test_the_clock_starts_with_the_first_chunk_a_burst_early(clock: FakeClock) -> None:
    line = timeline(clock)
    assert line.now() == line.splicer.clock  # nothing yet: where the splicer is
    clock.advance(7.0)  # however long the first process takes to start
    assert line.now() == line.splicer.clock
    line.push([chunk(0.0, b"a"), chunk(BURST, b"b"), chunk(BURST + 0.04, b"c")], "content")
    # Players start at once: the first BURST seconds of stream are due now.
    assert abs(line.now() - (START + BURST * TICKS)) <= 1  # up to float rounding
    assert line.due() == (b"ab", "content")
    clock.advance(0.05)
    assert line.due() == (b"c", "content")
    clock.advance(1.5)
    assert abs(line.now() - (START + (BURST + 1.55) * TICKS)) <= 1


def test_schedule_time_follows_what_was_produced(clock: FakeClock) -> None:
    line = timeline(clock)
    assert line.schedule_time() == WALL  # the time of the first frame to make
    assert line.splicer.load_slate(make_slate(FfmpegSettings(width=160, height=120)))
    line.push(line.splicer.fill(1.0), "slate")  # 25 frames
    assert line.schedule_time() == WALL + 1.0
    clock.advance(0.3)  # the clock does not matter: only what was produced
    assert line.schedule_time() == WALL + 1.0
    line.push(line.splicer.fill(0.4), "slate")
    assert line.schedule_time() == pytest.approx(WALL + 1.4)


def test_chunks_are_released_when_the_clock_reaches_them(clock: FakeClock) -> None:
    line = started(clock)
    line.push([chunk(BURST + 0.5, b"b")], "content")
    line.push([chunk(BURST + 0.5, b"c")], "slate")
    line.push([chunk(BURST + 1.0, b"d")], "filler")
    assert line.due() == (b"", None)  # nothing more is due yet
    clock.advance(0.49)
    assert line.due() == (b"", None)
    clock.advance(0.01)
    assert line.due() == (b"bc", "slate")  # joined; the kind of the last one
    clock.advance(5.0)
    assert line.due() == (b"d", "filler")
    assert line.due() == (b"", None)


def test_pushing_no_chunks_changes_nothing(clock: FakeClock) -> None:
    line = timeline(clock)
    line.push([], "content")
    assert not line.queue
    assert line.origin is None  # the clock starts with a chunk, not with nothing
    assert line.ahead() == 0.0
    assert line.due() == (b"", None)


def test_ahead_is_what_is_queued_beyond_now(clock: FakeClock) -> None:
    line = started(clock)
    assert line.ahead() == 0.0
    line.push([chunk(BURST + 2.0)], "content")
    assert line.ahead() == 2.0
    line.push([chunk(BURST + 1.0)], "content")  # an earlier clock does not take it back
    assert line.ahead() == 2.0
    clock.advance(0.5)
    assert line.ahead() == 1.5
    clock.advance(5.0)
    assert line.ahead() == 0.0


def test_a_producer_never_runs_more_than_the_workahead_ahead(clock: FakeClock) -> None:
    """A producer that pushes whenever there is room, and a pacer every 0.1 s."""
    line = timeline(clock, workahead=3.0)
    step = 0.2  # seconds of timeline per chunk
    produced = 0  # chunks
    released = bytearray()
    highest = 0.0
    for _ in range(400):  # 40 s
        while line.has_room():
            line.push([chunk(produced * step, b"%d," % produced)], "content")
            produced += 1
            highest = max(highest, line.ahead())
        clock.advance(0.1)
        released += line.due()[0]
    assert 3.0 <= highest <= 3.0 + step
    assert produced * step >= BURST + 40.0 + 3.0 - step  # it kept the work-ahead full
    # Every chunk due by now went out, once, in order.
    numbers = [int(n) for n in released.decode().rstrip(",").split(",")]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= (BURST + 40.0) / step


async def test_wait_for_room_returns_once_a_release_makes_room(clock: FakeClock) -> None:
    line = started(clock, workahead=2.0)  # now: BURST s
    for seconds in (0.5, 1.0, 3.0):
        line.push([chunk(BURST + seconds)], "content")
    assert not line.has_room()  # 3 s ahead
    waiter = asyncio.create_task(line.wait_for_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(0.5)
    assert line.due()[0] == b"x"  # a release, and 2.5 s still ahead: waiting on
    await asyncio.sleep(0)
    assert not waiter.done()
    clock.advance(0.4)
    assert not line.has_room()  # 2.1 s
    clock.advance(0.2)
    assert line.has_room()  # 1.9 s
    await asyncio.sleep(0)
    assert not waiter.done()  # woken by a release, not by the clock alone
    assert line.due()[0] == b"x"
    await wait_until(waiter.done, 5.0, "wait_for_room to return")
    await waiter


async def test_wait_for_room_with_room_returns_at_once(clock: FakeClock) -> None:
    line = started(clock, workahead=2.0)
    line.push([chunk(BURST + 1.0)], "content")
    await asyncio.wait_for(line.wait_for_room(), 1.0)


def test_starving_only_after_a_release_and_a_dry_spell(clock: FakeClock) -> None:
    line = timeline(clock)
    clock.advance(10.0)
    assert not line.starving()  # nothing ever went out: starting, not starving
    line.push([chunk(seconds / 10) for seconds in range(11)], "content")  # 0 s to 1 s
    line.push([chunk(1.5)], "content")
    assert not line.starving()  # nothing went out yet
    assert line.due()[0] == b"x"  # the first chunk is due at once
    assert not line.starving()  # more is queued
    clock.advance(1.0)
    assert len(line.due()[0]) == 10
    clock.advance(0.5)
    assert line.due()[0] == b"x"
    assert not line.starving()  # the last one just went out
    dry = FILL_AFTER / TICKS
    assert dry == pytest.approx(0.2)
    clock.advance(dry - 0.01)
    assert not line.starving()
    clock.advance(0.02)
    assert line.starving()
    line.push([chunk(1.6)], "content")  # something is ready again (already late)
    assert not line.starving()
    assert line.due()[0] == b"x"
    assert not line.starving()  # 0.11 s since its time
    clock.advance(0.1)
    assert line.starving()


def test_a_start_is_not_starving(clock: FakeClock) -> None:
    line = timeline(clock)
    # A first process's first output: its PCR 0.7 s before its first picture.
    line.push([chunk(-0.7, b"first")], "content")
    assert line.due() == (b"first", "content")
    # No time has passed: the queue has not run dry for 0.2 s, and the pacer must not
    # cover the process's next chunk (and its GOP) with slate.
    assert not line.starving()
