from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import RateLimited
from service.ratelimit import TokenBucket
from tests.conftest import FakeClock


def max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def drain(bucket: TokenBucket, waiters: int, clock: FakeClock) -> list[float]:
    granted: list[float] = []

    async def one() -> None:
        await bucket.acquire()
        granted.append(clock())

    await asyncio.gather(*(one() for _ in range(waiters)))
    return granted


@pytest.fixture
def low_recursion_limit() -> Iterator[None]:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


async def test_ten_thousand_waiters_never_exceed_the_rate(
    clock: FakeClock, low_recursion_limit: None
) -> None:
    # The seed service's bucket recursed once per sleep and died here of RecursionError.
    bucket = TokenBucket(5, 5, clock=clock, sleep=clock.sleep)
    granted = await drain(bucket, 10_000, clock)
    assert len(granted) == 10_000
    assert max_in_window(granted, 1.0) <= 5 + 5  # burst, then the rate
    assert granted[-1] - granted[0] == pytest.approx((10_000 - 5) / 5, rel=1e-6)
    assert bucket.tokens >= 0


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    arrivals=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=60),
)
def test_rate_holds_for_any_arrival_pattern(rate: float, burst: int, arrivals: list[float]) -> None:
    async def scenario() -> list[float]:
        clock = FakeClock()
        bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
        granted: list[float] = []
        seen_tokens: list[float] = []

        async def arrive(delay: float) -> None:
            await asyncio.sleep(0)
            clock.advance(delay)
            await bucket.acquire()
            granted.append(clock())
            seen_tokens.append(bucket.tokens)

        for delay in arrivals:
            await arrive(delay)
        assert min(seen_tokens) >= 0
        return granted

    granted = asyncio.run(scenario())
    for window in (0.5, 1.0, 3.0):
        assert max_in_window(sorted(granted), window) <= burst + rate * window + 1e-6


async def test_waiters_are_served_in_arrival_order(clock: FakeClock) -> None:
    bucket = TokenBucket(1, 1, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def one(index: int) -> None:
        await bucket.acquire()
        order.append(index)

    tasks = []
    for index in range(50):
        tasks.append(asyncio.create_task(one(index)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == list(range(50))


async def test_a_cancelled_waiter_takes_nothing_and_frees_its_place() -> None:
    bucket = TokenBucket(10, 1)
    assert await bucket.acquire() == pytest.approx(0, abs=0.05)
    head = asyncio.create_task(bucket.acquire())
    queued = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    waited = await asyncio.wait_for(queued, 2)
    assert waited < 0.5
    assert bucket.waiting == 0


async def test_acquire_times_out_with_a_clear_error(clock: FakeClock) -> None:
    bucket = TokenBucket(0.1, 1, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    with pytest.raises(RateLimited) as error:
        await bucket.acquire(timeout=2)
    assert "no start-up token" in str(error.value)
    assert bucket.tokens < 1  # the failed waiter took nothing
    assert clock.sleeps == []  # a wait that cannot succeed in time fails at once


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0)
