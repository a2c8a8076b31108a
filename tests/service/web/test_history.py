from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from service.web.history import History, Sample, sample_forever
from tests.polling import wait_until


def test_rates_are_bits_per_second_between_samples() -> None:
    history = History([1], points=10)
    history.record(100.0, {1: Sample(0.0, 0, 0)})
    history.record(110.0, {1: Sample(12_500.0, 2, 0)})
    history.record(120.0, {1: Sample(37_500.0, 3, 1)})
    series = history.series(1)
    assert series.output_bits_per_second == [None, 10_000.0, 20_000.0]
    assert series.viewers == [0, 2, 3]
    assert series.restarts == [None, 0, 1]
    assert history.times() == [100.0, 110.0, 120.0]


def test_the_ring_keeps_the_last_points_only() -> None:
    history = History([1], points=3)
    for i in range(7):
        history.record(float(i), {1: Sample(float(i * 10), i, i)})
    assert history.count == 3
    assert history.times() == [4.0, 5.0, 6.0]
    assert history.series(1).viewers == [4, 5, 6]
    assert history.series(1).output_bits_per_second == [None, 80.0, 80.0]


def test_a_channel_left_out_keeps_its_last_values() -> None:
    history = History([1, 2], points=4)
    history.record(0.0, {1: Sample(5.0, 1, 2), 2: Sample(7.0, 3, 4)})
    history.record(10.0, {1: Sample(15.0, 1, 2)})
    assert history.series(2).viewers == [3, 3]
    assert history.series(2).output_bits_per_second == [None, 0.0]
    assert history.series(2).restarts == [None, 0]


def test_a_clock_that_went_back_gives_no_rate() -> None:
    history = History([1], points=4)
    history.record(10.0, {1: Sample(0.0, 0, 0)})
    history.record(5.0, {1: Sample(100.0, 0, 0)})
    assert history.series(1).output_bits_per_second == [None, None]


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (0.0, 5),  # before the first sample, the ring not full: all since the start
        (15.0, 3),  # from the sample at 20 s (2 restarts then)
        (100.0, 1),  # after the last sample (4 then)
    ],
)
def test_restarts_since(since: float, expected: int) -> None:
    history = History([1], points=10)
    for t, restarts in ((10.0, 1), (20.0, 2), (30.0, 4)):
        history.record(t, {1: Sample(0.0, 0, restarts)})
    assert history.restarts_since(1, since, now_total=5) == expected


def test_restarts_since_counts_from_the_oldest_sample_once_the_ring_is_full() -> None:
    history = History([1], points=2)
    for t, restarts in ((10.0, 1), (20.0, 2), (30.0, 4)):
        history.record(t, {1: Sample(0.0, 0, restarts)})
    # The ring holds 20 s and 30 s: what happened before 20 s is out of the window.
    assert history.restarts_since(1, 0.0, now_total=5) == 3


def test_restarts_since_without_samples_is_everything() -> None:
    assert History([1]).restarts_since(1, 0.0, now_total=2) == 2


async def test_sampling_records_at_once_and_every_interval() -> None:
    history = History([1], points=1000)
    taken: list[int] = []

    def take() -> dict[int, Sample]:
        taken.append(len(taken))
        return {1: Sample(float(len(taken)), 0, 0)}

    clock = itertools.count()
    task = asyncio.create_task(
        sample_forever(history, take, interval=0.01, wall=lambda: float(next(clock)))
    )
    try:
        await wait_until(lambda: history.count >= 3, 5, "three samples")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert history.times()[:3] == [0.0, 1.0, 2.0]
