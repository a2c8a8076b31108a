"""The last hour of every channel for the status page's charts: what the service already
counts (bytes sent, viewers, restarts), sampled every `INTERVAL` seconds into a ring of
`POINTS` samples per channel, so memory stays fixed whatever the uptime.

One clock for all channels: they are sampled together, so the times are kept once.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.clock import Clock

if TYPE_CHECKING:
    from service.types import AppState

INTERVAL = 10.0
POINTS = 360  # an hour of samples
WINDOW = INTERVAL * POINTS


@dataclass(frozen=True, slots=True)
class Sample:
    output_bytes: float  # sent since the start (a counter)
    viewers: int
    restarts: int  # since the start (a counter)


@dataclass(frozen=True, slots=True)
class Series:
    """One channel's charts, oldest first; a rate is None where no earlier sample exists."""

    output_bits_per_second: list[float | None]
    viewers: list[int]
    restarts: list[int | None]  # in each interval


def _floats(points: int) -> array[float]:
    return array("d", bytes(8 * points))


def _counts(points: int) -> array[int]:
    return array("q", bytes(8 * points))


class History:
    def __init__(self, channels: Iterable[int], *, points: int = POINTS) -> None:
        self.points = points
        # Fixed-size columns; the oldest sample is overwritten.
        self._times = _floats(points)
        self._bytes = {n: _floats(points) for n in channels}
        self._viewers = {n: _counts(points) for n in self._bytes}
        self._restarts = {n: _counts(points) for n in self._bytes}
        self._next = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def record(self, at: float, samples: Mapping[int, Sample]) -> None:
        """Every channel's sample taken at `at` (unix seconds); a channel left out keeps
        its last values."""
        index = self._next
        previous = (index - 1) % self.points
        self._times[index] = at
        for number, sent in self._bytes.items():
            viewers, restarts = self._viewers[number], self._restarts[number]
            sample = samples.get(number)
            if sample is None and self._count:
                sample = Sample(sent[previous], viewers[previous], restarts[previous])
            elif sample is None:
                sample = Sample(0.0, 0, 0)
            sent[index] = sample.output_bytes
            viewers[index] = sample.viewers
            restarts[index] = sample.restarts
        self._next = (index + 1) % self.points
        self._count = min(self._count + 1, self.points)

    def _order(self) -> list[int]:
        start = (self._next - self._count) % self.points
        return [(start + i) % self.points for i in range(self._count)]

    def times(self) -> list[float]:
        return [self._times[i] for i in self._order()]

    def series(self, number: int) -> Series:
        order = self._order()
        times = self._times
        sent = self._bytes[number]
        restarts = self._restarts[number]
        rates: list[float | None] = []
        counts: list[int | None] = []
        for position, index in enumerate(order):
            if position == 0:
                rates.append(None)
                counts.append(None)
                continue
            before = order[position - 1]
            elapsed = times[index] - times[before]
            # A counter never goes back; a clock that did gives no rate.
            rate = (sent[index] - sent[before]) * 8 / elapsed if elapsed > 0 else None
            rates.append(None if rate is None else round(max(rate, 0.0), 1))
            counts.append(max(restarts[index] - restarts[before], 0))
        viewers = [self._viewers[number][i] for i in order]
        return Series(rates, viewers, counts)

    def restarts_since(self, number: int, since: float, now_total: int) -> int:
        """Restarts from `since` (unix seconds) to now, `now_total` being the count now.

        The counter starts at zero with the service: while the ring holds every sample
        since then, the count is whatever happened after `since`, or all of it."""
        order = self._order()
        restarts = self._restarts[number]
        baseline = 0  # before the first sample: the service's start
        for position, index in enumerate(order):
            if self._times[index] >= since:
                if position > 0 or self._count == self.points:
                    baseline = restarts[index]
                break
        else:
            if order:  # every sample is older than `since`: the latest is the closest
                baseline = restarts[order[-1]]
        return max(now_total - baseline, 0)


async def sample_forever(
    history: History,
    take: Callable[[], Mapping[int, Sample]],
    *,
    interval: float = INTERVAL,
    wall: Clock = time.time,
) -> None:
    """Record `take()` now and every `interval` seconds after, until cancelled."""
    while True:
        history.record(wall(), take())
        await asyncio.sleep(interval)


def channel_samples(state: AppState) -> dict[int, Sample]:
    """Every channel's counters now: bytes sent as the metric counts them."""
    sent: dict[str, float] = {}
    for family in state.metrics.channel_output_bytes.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                sent[sample.labels["channel"]] = sample.value
    now = state.channels.wall()
    views = {number: channel.view(now) for number, channel in state.channels.channels.items()}
    return {
        number: Sample(sent.get(str(number), 0.0), view.viewers, view.restarts)
        for number, view in views.items()
    }


async def keep_history(history: History, state: AppState) -> None:
    await sample_forever(history, lambda: channel_samples(state))
