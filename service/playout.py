"""Schedule maths: which item plays at wall-clock time t, and from what offset.

The schedule is anchored at an epoch: the library plays in order (or in a seeded
shuffle per cycle) from the epoch on, looping, so it is the same after a restart.
`Playout` keeps the entries from now to at least `min_horizon` ahead and a rebuild
always extends them: there is no state in which it only reports a short schedule.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from service.grid import grid_frames
from service.media import MediaItem

EPSILON = 1e-6


@dataclass(frozen=True)
class Entry:
    start: float
    item: MediaItem
    inpoint: float = 0.0
    # Stored, not start + duration: the next entry starts at exactly this float, so
    # rounding never leaves a gap (or an overlap) between consecutive entries.
    end: float = field(kw_only=True)

    @property
    def duration(self) -> float:
        return self.end - self.start


def cycle_order(count: int, seed: int, cycle: int, shuffle: bool) -> list[int]:
    order = list(range(count))
    if shuffle:
        random.Random(f"exstream:{seed}:{cycle}").shuffle(order)
    return order


def entries_from(
    items: Sequence[MediaItem], epoch: float, t: float, *, seed: int = 0, shuffle: bool = False
) -> Iterator[Entry]:
    """The epoch-anchored schedule, from the entry that plays at `t` on, for ever."""
    total = math.fsum(item.duration for item in items)
    if not items or total <= 0:
        return
    cycle = math.floor((t - epoch) / total)
    while True:
        start = epoch + cycle * total
        order = cycle_order(len(items), seed, cycle, shuffle)
        for position, index in enumerate(order):
            item = items[index]
            # Each cycle ends on its epoch-anchored time, so rounding never accumulates.
            last = position == len(order) - 1
            end = epoch + (cycle + 1) * total if last else start + item.duration
            if end > t + EPSILON:
                yield Entry(start, item, end=end)
            start = end
        cycle += 1


class Playout:
    def __init__(
        self,
        epoch: float,
        min_horizon: float,
        *,
        seed: int = 0,
        shuffle: bool = False,
    ) -> None:
        self.epoch = epoch
        self.min_horizon = min_horizon
        self.seed = seed
        self.shuffle = shuffle
        self.items: tuple[MediaItem, ...] = ()
        self.entries: list[Entry] = []
        self._starts: list[float] = []

    def rebuild(self, items: Sequence[MediaItem], now: float) -> str:
        """Bring the schedule up to date; returns the result label (ok, replaced, empty)."""
        items = tuple(items)
        result = "ok"
        if items != self.items:
            current = self.entry_at(now)
            self.items = items
            self.entries = [current] if current is not None else []
            result = "replaced"
        self.ensure(now)
        return result if self.items else "empty"

    def ensure(self, now: float, *, drop: bool = True) -> None:
        """Drop what has ended and keep at least `min_horizon` scheduled from `now`."""
        if drop and self.entries and self.entries[0].end <= now:
            self.entries = [e for e in self.entries if e.end > now]
        if self.items:
            self._extend(now)
        self._starts = [e.start for e in self.entries]

    def _extend(self, now: float) -> None:
        until = now + self.min_horizon
        if self.entries and self.entries[-1].end >= until:
            return
        after = self.entries[-1].end if self.entries else now
        for entry in self._continuation(after, joined=bool(self.entries)):
            self.entries.append(entry)
            if entry.end >= until:
                break

    def _continuation(self, after: float, *, joined: bool) -> Iterator[Entry]:
        """The schedule from `after` on.

        `joined`: `after` is the end of a scheduled entry, and the next entries meet it
        exactly; otherwise `after` is now, and the first entry is the one playing then.
        """
        generated = entries_from(
            self.items, self.epoch, after, seed=self.seed, shuffle=self.shuffle
        )
        previous_end: float | None = after if joined else None
        for entry in generated:
            if previous_end is not None:
                inpoint = entry.inpoint
                if entry.start < previous_end - EPSILON:
                    # After a library change: join the new schedule mid-item, on time.
                    inpoint += previous_end - entry.start
                # Otherwise it starts within rounding of the previous end: meet exactly.
                entry = Entry(previous_end, entry.item, inpoint, end=entry.end)
            elif entry.start > after:
                # `after` is within EPSILON of an item's end: the next one covers it.
                entry = Entry(after, entry.item, entry.inpoint, end=entry.end)
            previous_end = entry.end
            yield entry

    def guide(self, start: float, end: float) -> list[Entry]:
        """Entries between `start` and `end` (e.g. 24 h of guide), beyond the horizon too."""
        entries = self.between(start, end)
        if self.entries and self.items and self.entries[-1].end < end:
            for entry in self._continuation(self.entries[-1].end, joined=True):
                if entry.start >= end:
                    break
                entries.append(entry)
        return entries

    def entry_at(self, t: float) -> Entry | None:
        index = bisect.bisect_right(self._starts, t) - 1
        if index < 0:
            return None
        entry = self.entries[index]
        return entry if entry.start <= t < entry.end else None

    def item_at(self, t: float) -> tuple[MediaItem, float] | None:
        entry = self.entry_at(t)
        if entry is None:
            return None
        return entry.item, entry.inpoint + (t - entry.start)

    def horizon(self, now: float) -> float:
        return max(0.0, self.entries[-1].end - now) if self.entries else 0.0

    def between(self, start: float, end: float) -> list[Entry]:
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        return [e for e in self.entries[first:] if e.start < end and e.end > start]

    def plan(
        self,
        at: float,
        *,
        fps: int,
        segment_max: float,
        playable: Callable[[MediaItem, float], bool] | None = None,
    ) -> ItemPlan | Gap:
        """What a new process should play from schedule time `at` (the end of what the
        channel has produced so far): the rest of the entry on air, in whole grid units
        of frames, or a gap to fill when it cannot be played."""
        self.ensure(at, drop=False)  # `at` runs ahead of now: keep the entry on air
        entry = self.entry_at(at)
        if entry is None:
            return Gap(None if not self.items else at + 1.0)
        grid = grid_frames(fps)
        seek = entry.inpoint + max(0.0, at - entry.start)
        if entry.end - at < grid / fps / 2:
            # A sliver of the entry is left (rounding to whole frames): the next one
            # starts now and absorbs it, so the schedule never drifts by more.
            following = self.entry_at(entry.end)
            if following is None:
                return Gap(at + 1.0)
            entry, seek = following, following.inpoint
        if playable is not None and not playable(entry.item, at):
            return Gap(entry.end)
        duration = min(entry.end - at, segment_max)
        frames = max(grid, round(duration * fps / grid) * grid)
        return ItemPlan(entry.item, seek, frames, at, entry.end)


@dataclass(frozen=True)
class ItemPlan:
    """One process's work: `frames` video frames of `item` from `seek` seconds in."""

    item: MediaItem
    seek: float
    frames: int
    schedule_start: float  # wall-clock time the schedule gives its first frame
    entry_end: float  # where the schedule's entry ends

    def seconds(self, fps: int) -> float:
        return self.frames / fps


@dataclass(frozen=True)
class Gap:
    """Nothing can be played from now until `until` (None: nothing is scheduled at all)."""

    until: float | None
