from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any

import pytest

from service.hub import Hub, Subscription, ViewerDropped
from service.mpegts import PACKET_SIZE, PAT_PID, StartPoint, packets, pid, random_access
from tests.service.test_mpegts import make_ts


@pytest.fixture(scope="module")
def ts_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_ts(tmp_path_factory.mktemp("hub") / "gop.ts").read_bytes()


def chunks(data: bytes, packets_per_chunk: int = 7) -> Iterator[bytes]:
    size = packets_per_chunk * PACKET_SIZE
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def next_batch(sub: Subscription, iterator: AsyncIterator[bytes] | None = None) -> bytes:
    it = iterator or sub.batches()
    return await asyncio.wait_for(anext(it), 10.0)


def filler(count: int) -> bytes:
    """Packets on a PID that is neither PSI nor video: no keyframes, no tables."""
    return bytes([0x47, 0x01, 0x00, 0x10]).ljust(PACKET_SIZE, b"\xff") * count


async def test_every_viewer_gets_the_same_bytes() -> None:
    hub = Hub(1024 * PACKET_SIZE)
    subs = [hub.subscribe() for _ in range(3)]
    its = [s.batches() for s in subs]
    sent = [filler(3), filler(5)]
    for data in sent:
        assert hub.publish(data) == len(data)
    for sub, it in zip(subs, its, strict=True):
        assert await next_batch(sub, it) == b"".join(sent)
    assert hub.viewers == 3
    hub.unsubscribe(subs[0])
    assert hub.viewers == 2


async def test_new_viewer_starts_with_the_tables_before_the_keyframe_and_the_gop(
    ts_bytes: bytes,
) -> None:
    hub = Hub(64 * 1024 * 1024)
    published = bytearray()
    all_chunks = list(chunks(ts_bytes))
    for chunk in all_chunks[: len(all_chunks) * 2 // 3]:
        hub.publish(chunk)
        published += chunk
    sub = hub.subscribe()
    it = sub.batches()
    first = await next_batch(sub, it)
    start = StartPoint()
    keyframe = start.scan(bytes(published))
    assert keyframe is not None
    # The PAT and PMT as they were last sent before the keyframe, not the latest ones.
    before = [
        p for p in packets(bytes(published[:keyframe])) if pid(p) in (PAT_PID, *start.pmt_pids)
    ]
    assert first[: 2 * PACKET_SIZE] == bytes(before[-2]) + bytes(before[-1])
    assert pid(first[:PACKET_SIZE]) == PAT_PID
    assert first[2 * PACKET_SIZE :] == bytes(published[keyframe:])
    gop_start = first[2 * PACKET_SIZE : 3 * PACKET_SIZE]
    assert random_access(gop_start)
    assert pid(gop_start) == start.video_pid
    # Then the live stream, from where the hub was when the viewer came.
    rest = all_chunks[len(all_chunks) * 2 // 3]
    hub.publish(rest)
    assert await next_batch(sub, it) == rest


def continuity_breaks(data: bytes) -> list[tuple[int, int, int]]:
    """(pid, previous counter, counter) wherever a PID's continuity counter skips."""
    last: dict[int, int] = {}
    breaks = []
    for packet in packets(data):
        if not packet[3] & 0x10:  # no payload: the counter does not move
            continue
        counter = packet[3] & 0x0F
        previous = last.get(pid(packet))
        if previous is not None and counter != (previous + 1) % 16:
            breaks.append((pid(packet), previous, counter))
        last[pid(packet)] = counter
    return breaks


@pytest.mark.parametrize("joined_after", [11, 40, 83, 97, 150])
async def test_joining_viewer_sees_continuous_counters_on_the_tables(
    ts_bytes: bytes, joined_after: int
) -> None:
    hub = Hub(64 * 1024 * 1024)
    all_chunks = list(chunks(ts_bytes, 3))
    assert continuity_breaks(ts_bytes) == []
    for chunk in all_chunks[:joined_after]:
        hub.publish(chunk)
    sub = hub.subscribe()
    it = sub.batches()
    received = await next_batch(sub, it)
    for chunk in all_chunks[joined_after : joined_after + 30]:
        hub.publish(chunk)
        received += await next_batch(sub, it)
    start = StartPoint()
    start.scan(received)
    (pmt_pid,) = start.pmt_pids
    tables = [p for p in packets(received) if pid(p) in (PAT_PID, pmt_pid)]
    assert len(tables) > 4  # tables in the GOP after the keyframe, and more after that
    assert continuity_breaks(received) == []


async def test_viewer_before_any_keyframe_gets_no_preamble() -> None:
    hub = Hub(1024 * PACKET_SIZE)
    hub.publish(filler(4))
    sub = hub.subscribe()
    it = sub.batches()
    hub.publish(filler(2))
    assert await next_batch(sub, it) == filler(2)


async def test_discontinuity_forgets_the_gop(ts_bytes: bytes) -> None:
    hub = Hub(64 * 1024 * 1024)
    for chunk in chunks(ts_bytes[: 200 * PACKET_SIZE]):
        hub.publish(chunk)
    assert hub.subscribe().first
    hub.discontinuity()
    sub = hub.subscribe()
    assert sub.first == b""


async def test_slow_viewer_is_dropped_and_counted_others_are_not() -> None:
    drops: list[str] = []
    hub = Hub(10 * PACKET_SIZE, on_drop=drops.append)
    slow = hub.subscribe()
    fast = hub.subscribe()
    fast_it = fast.batches()
    for _ in range(20):
        hub.publish(filler(2))
        assert await next_batch(fast, fast_it) == filler(2)
    assert hub.lag(slow) == 20
    with pytest.raises(ViewerDropped) as caught:
        await next_batch(slow)
    assert caught.value.reason == "slow"
    assert str(caught.value) == "viewer dropped: slow"
    assert drops == ["slow"]
    assert slow not in hub.subscribers
    assert fast in hub.subscribers
    hub.publish(filler(1))
    assert await next_batch(fast, fast_it) == filler(1)
    hub.drop(slow, "again")  # dropping twice counts once
    assert drops == ["slow"]


async def test_viewer_within_the_ring_gets_everything_it_missed() -> None:
    hub = Hub(10 * PACKET_SIZE)
    sub = hub.subscribe()
    for _ in range(5):
        hub.publish(filler(2))
    assert await next_batch(sub) == filler(10)


async def test_close_ends_every_iterator() -> None:
    hub = Hub(1024 * PACKET_SIZE)
    waiting = hub.subscribe()
    behind = hub.subscribe()
    behind_it = behind.batches()

    async def drain(sub: Subscription) -> list[bytes]:
        return [batch async for batch in sub.batches()]

    task = asyncio.create_task(drain(waiting))
    await asyncio.sleep(0)  # let it block on the hub
    hub.publish(filler(2))
    hub.close()
    assert await asyncio.wait_for(task, 10.0) == [filler(2)]
    assert await next_batch(behind, behind_it) == filler(2)
    with pytest.raises(StopAsyncIteration):
        await next_batch(behind, behind_it)
    with pytest.raises(ViewerDropped):
        hub.subscribe()


async def test_garbage_from_the_producer_is_skipped_and_counted() -> None:
    hub = Hub(1024 * PACKET_SIZE)
    sub = hub.subscribe()
    assert hub.publish(b"\x00" * 100 + filler(3)) == 3 * PACKET_SIZE
    assert hub.skipped_bytes == 100
    assert await next_batch(sub) == filler(3)
    assert hub.publish(filler(1)[:50]) == 0  # a partial packet waits


class Tripwire:
    """Stands in for the subscriber set: any use of it fails the test."""

    def __getattribute__(self, name: str) -> Any:
        raise AssertionError(f"publish touched the subscribers ({name})")

    def __iter__(self) -> Iterator[Subscription]:
        raise AssertionError("publish iterated the subscribers")

    def __len__(self) -> int:
        raise AssertionError("publish counted the subscribers")


def count_calls(action: Any) -> int:
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


async def waiting_on(hub: Hub, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while hub.waiting < count:
        assert loop.time() < deadline, "viewers did not start waiting"
        await asyncio.sleep(0)


async def test_publish_does_no_work_per_subscriber(ts_bytes: bytes) -> None:
    data = list(chunks(ts_bytes[: 60 * PACKET_SIZE], 10))
    costs = []
    for viewers in (1, 500):
        hub = Hub(64 * 1024 * 1024)
        subs = [hub.subscribe() for _ in range(viewers)]
        tasks = [asyncio.create_task(next_batch(s)) for s in subs]
        await waiting_on(hub, viewers)
        real = hub.subscribers
        hub.subscribers = Tripwire()  # type: ignore[assignment]
        costs.append([count_calls(lambda c=chunk, h=hub: h.publish(c)) for chunk in data])
        hub.subscribers = real
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10.0)
        assert results == [b"".join(data)] * viewers
        hub.close()
    # The first publish wakes the viewers that wait (a group at a time); later ones, before
    # the viewers read, cost the same for 1 or 500 viewers: nothing is done per viewer.
    assert costs[0][1:] == costs[1][1:]


def test_ring_is_bounded_in_bytes() -> None:
    hub = Hub(10 * PACKET_SIZE)
    for _ in range(100):
        hub.publish(filler(3))
    assert hub.head == 100
    assert hub.tail >= 100 - 4
    assert hub.read_from(hub.tail) is not None
    assert hub.read_from(hub.tail - 1) is None
