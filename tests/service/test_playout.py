from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.media import MediaItem
from service.playout import EPSILON, Entry, Playout, cycle_order, entries_from

EPOCH = 1_704_067_200.0  # 2024-01-01T00:00:00Z, the default epoch


def item(index: int, duration: float, video: str = "h264", audio: str | None = "aac") -> MediaItem:
    return MediaItem(f"/media/{index}.mp4", duration, f"clip {index}", video, audio, 320, 240)


def library(durations: Sequence[float]) -> list[MediaItem]:
    return [item(i, d) for i, d in enumerate(durations)]


def built(
    items: Sequence[MediaItem], now: float, horizon: float = 600.0, **kwargs: object
) -> Playout:
    playout = Playout(EPOCH, horizon, **kwargs)  # type: ignore[arg-type]
    playout.rebuild(items, now)
    return playout


def ideal(items: Sequence[MediaItem], t: float) -> tuple[MediaItem, float]:
    """Where an unshuffled loop anchored at EPOCH is at time t, computed independently."""
    total = math.fsum(i.duration for i in items)
    position = (t - EPOCH) % total
    for candidate in items:
        if position < candidate.duration:
            return candidate, position
        position -= candidate.duration
    return items[-1], items[-1].duration  # pragma: no cover - rounding at the very end


def assert_contiguous(entries: Sequence[Entry]) -> None:
    for previous, entry in itertools.pairwise(entries):
        assert entry.start == previous.end, (previous, entry)
        assert entry.duration > 0


def assert_anchored(items: Sequence[MediaItem], entry: Entry) -> None:
    """The entry's item is where an unshuffled loop from EPOCH puts it (up to rounding)."""
    total = math.fsum(i.duration for i in items)
    index = [i.path for i in items].index(entry.item.path)
    prefix = math.fsum(i.duration for i in items[:index])
    phase = (entry.start - entry.inpoint - EPOCH - prefix) % total
    assert min(phase, total - phase) < 1e-5, (entry, phase)


def test_short_library_is_looped_until_the_minimum_horizon() -> None:
    items = library([200.0, 200.0, 200.0])  # 10 minutes
    now = EPOCH + 12_345.0
    playout = built(items, now, horizon=1800.0)
    assert playout.horizon(now) >= 1800.0
    assert playout.entries[-1].end >= now + 1800.0
    assert_contiguous(playout.entries)
    assert playout.entries[0].start <= now < playout.entries[0].end
    # Everything up to the horizon is covered.
    for step in range(0, 1800, 7):
        assert playout.item_at(now + step) is not None


def test_rebuild_keeps_extending_as_time_passes() -> None:
    items = library([200.0, 100.0])
    playout = built(items, EPOCH, horizon=900.0)
    for minutes in range(1, 60, 7):
        now = EPOCH + 60.0 * minutes
        assert playout.rebuild(items, now) == "ok"
        assert playout.horizon(now) >= 900.0
        assert playout.entries[0].end > now
        assert_contiguous(playout.entries)


def test_item_at_follows_the_epoch_anchored_loop() -> None:
    items = library([30.0, 45.5, 12.25])
    now = EPOCH + 1_000_000.0
    playout = built(items, now)
    for t in (now, now + 10.0, now + 99.9, now + 300.0):
        found = playout.item_at(t)
        assert found is not None
        expected_item, expected_offset = ideal(items, t)
        assert found[0] == expected_item
        assert found[1] == pytest.approx(expected_offset, abs=1e-6)
    assert playout.item_at(now - 1000.0) is None


def test_empty_library_has_no_schedule() -> None:
    playout = Playout(EPOCH, 600.0)
    assert playout.rebuild([], EPOCH) == "empty"
    assert playout.entries == []
    assert playout.horizon(EPOCH) == 0.0
    assert playout.item_at(EPOCH) is None
    assert playout.plan(EPOCH, 3600.0, exists=lambda _: True) is None
    assert list(entries_from([], EPOCH, EPOCH)) == []


def test_library_emptied_keeps_the_current_item_to_its_end() -> None:
    items = library([100.0, 100.0])
    playout = built(items, EPOCH + 10.0)
    assert playout.rebuild([], EPOCH + 50.0) == "empty"
    assert [e.item for e in playout.entries] == [items[0]]
    assert playout.rebuild([], EPOCH + 100.0) == "empty"
    assert playout.entries == []


def test_library_change_mid_item_keeps_it_and_joins_the_new_schedule_on_time() -> None:
    old = library([100.0, 100.0])
    playout = built(old, EPOCH + 10.0)
    new = [*old, item(7, 50.0)]
    now = EPOCH + 30.0
    assert playout.rebuild(new, now) == "replaced"
    current = playout.entries[0]
    assert current.item == old[0]
    assert (current.start, current.end) == (EPOCH, EPOCH + 100.0)
    joined = playout.entries[1]
    # The new 250 s loop plays old[1] over [100, 200): joined at its start, no inpoint.
    assert (joined.item, joined.start, joined.inpoint) == (old[1], EPOCH + 100.0, 0.0)
    assert_contiguous(playout.entries)
    for t in (EPOCH + 150.0, EPOCH + 220.0, EPOCH + 260.0, EPOCH + 500.0):
        found = playout.item_at(t)
        assert found is not None
        assert found[0] == ideal(new, t)[0]
        assert found[1] == pytest.approx(ideal(new, t)[1], abs=1e-6)


def test_library_change_joins_mid_item_with_an_inpoint() -> None:
    old = library([100.0, 100.0])
    playout = built(old, EPOCH + 10.0)
    new = [item(5, 40.0), item(6, 80.0)]  # a 120 s loop: at t=100 it is 60 s into item 6
    playout.rebuild(new, EPOCH + 30.0)
    joined = playout.entries[1]
    assert joined.item == new[1]
    assert joined.start == EPOCH + 100.0
    assert joined.inpoint == pytest.approx(60.0)
    assert joined.end == pytest.approx(EPOCH + 120.0)
    found = playout.item_at(EPOCH + 110.0)
    assert found is not None
    assert found[0] == new[1]
    assert found[1] == pytest.approx(70.0)
    assert_contiguous(playout.entries)


def test_shuffle_is_seeded_per_cycle() -> None:
    assert cycle_order(5, 1, 0, shuffle=False) == [0, 1, 2, 3, 4]
    assert cycle_order(8, 1, 0, shuffle=True) == cycle_order(8, 1, 0, shuffle=True)
    assert sorted(cycle_order(8, 1, 3, shuffle=True)) == list(range(8))
    orders = {tuple(cycle_order(6, seed, 0, shuffle=True)) for seed in range(20)}
    assert len(orders) >= 15  # 720 possible orders: distinct seeds almost always differ
    cycles = {tuple(cycle_order(6, 1, cycle, shuffle=True)) for cycle in range(20)}
    assert len(cycles) >= 15


def test_different_seeds_give_different_schedules() -> None:
    items = library([10.0, 20.0, 30.0, 40.0, 50.0])
    now = EPOCH + 5000.0

    def sequence(seed: int) -> list[str]:
        return [e.item.path for e in built(items, now, seed=seed, shuffle=True).entries[:12]]

    assert sequence(1) == sequence(1)
    assert len({tuple(sequence(seed)) for seed in range(10)}) >= 8


durations = st.lists(st.floats(min_value=0.2, max_value=4000.0), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    durations=durations,
    offset=st.floats(min_value=-1e7, max_value=1e9),
    probe=st.floats(min_value=0.0, max_value=0.99),
    shuffle=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_schedule_invariants(
    durations: list[float], offset: float, probe: float, shuffle: bool, seed: int
) -> None:
    items = library(durations)
    now = EPOCH + offset
    playout = built(items, now, horizon=600.0, seed=seed, shuffle=shuffle)
    entries = playout.entries
    assert_contiguous(entries)
    assert entries[0].start <= now < entries[0].end
    assert playout.horizon(now) >= 600.0
    t = now + probe * 600.0
    found = playout.item_at(t)
    assert found is not None
    played, at = found
    assert 0.0 <= at < played.duration
    # Built separately, later, the schedule agrees where the two overlap.
    later = built(items, t, horizon=600.0, seed=seed, shuffle=shuffle)
    again = later.item_at(t)
    assert again is not None
    # Equal offsets, or both at the same item boundary (the end of one play, the start
    # of the next) up to rounding.
    gap = abs(again[1] - at) % played.duration
    assert min(gap, played.duration - gap) < 1e-5, (again, found)
    if not shuffle:
        for entry in entries:
            assert_anchored(items, entry)


@settings(max_examples=200, deadline=None)
@given(
    old=durations,
    new=durations,
    offset=st.floats(min_value=0.0, max_value=1e8),
    elapsed=st.floats(min_value=0.0, max_value=1.0),
)
def test_library_change_invariants(
    old: list[float], new: list[float], offset: float, elapsed: float
) -> None:
    before = library(old)
    after = [item(100 + i, d) for i, d in enumerate(new)]
    now = EPOCH + offset
    playout = built(before, now)
    current = playout.entries[0]
    later = current.start + elapsed * current.duration
    if later >= current.end:
        later = current.start
    playout.rebuild(after, later)
    entries = playout.entries
    assert entries[0] == current
    assert_contiguous(entries)
    assert playout.horizon(later) >= 600.0
    for entry in entries[1:]:
        assert 0.0 <= entry.inpoint < entry.item.duration
        assert_anchored(after, entry)  # on the new schedule's time
    assert all(e.end - e.start > EPSILON / 2 for e in entries)


def test_plan_starts_at_the_seek_offset_of_the_current_entry() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH + 130.0)
    segment = playout.plan(EPOCH + 130.0, 1000.0, exists=lambda _: True)
    assert segment is not None
    assert segment.seek == pytest.approx(30.0)
    assert segment.parts[0].path == items[1].path
    assert segment.parts[0].inpoint == 0.0
    assert segment.parts[0].duration == pytest.approx(100.0)
    assert segment.duration >= 600.0 - 30.0 - 1e-6 or segment.duration >= 1000.0


def test_plan_is_bounded_by_segment_max() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH + 130.0, horizon=3600.0)
    segment = playout.plan(EPOCH + 130.0, 250.0, exists=lambda _: True)
    assert segment is not None
    assert segment.duration >= 250.0
    # It stops at the first part that reaches the bound.
    assert segment.duration - segment.parts[-1].duration < 250.0
    assert [p.path for p in segment.parts] == [items[1].path, items[2].path, items[0].path]


def test_plan_keeps_one_signature() -> None:
    items = [item(0, 100.0), item(1, 100.0), item(2, 100.0, audio=None), item(3, 100.0)]
    playout = built(items, EPOCH + 10.0)
    segment = playout.plan(EPOCH + 10.0, 3600.0, exists=lambda _: True)
    assert segment is not None
    assert [p.path for p in segment.parts] == [items[0].path, items[1].path]
    assert segment.has_audio
    following = playout.plan(EPOCH + 200.0, 3600.0, exists=lambda _: True)
    assert following is not None
    assert [p.path for p in following.parts] == [items[2].path]
    assert not following.has_audio


def test_plan_skips_missing_files() -> None:
    items = library([100.0, 100.0, 100.0, 100.0])
    playout = built(items, EPOCH + 10.0)
    missing = {items[0].path, items[2].path}

    def exists(path: str) -> bool:
        return path not in missing

    segment = playout.plan(EPOCH + 10.0, 3600.0, exists=exists)
    assert segment is not None
    # The current item is missing: start with the next one, from its beginning.
    assert segment.seek == 0.0
    # A missing file ends the segment rather than being played over.
    assert [p.path for p in segment.parts] == [items[1].path]
    assert playout.plan(EPOCH + 10.0, 3600.0, exists=lambda _: False) is None
    # The default check looks at the file system: these paths do not exist.
    assert playout.plan(EPOCH + 10.0, 3600.0) is None


def test_plan_of_a_joined_entry_keeps_its_inpoint() -> None:
    playout = built(library([100.0, 100.0]), EPOCH + 10.0)
    new = [item(5, 40.0), item(6, 80.0)]
    playout.rebuild(new, EPOCH + 30.0)
    segment = playout.plan(EPOCH + 110.0, 3600.0, exists=lambda _: True)
    assert segment is not None
    first = segment.parts[0]
    assert first.path == new[1].path
    assert first.inpoint == pytest.approx(60.0)
    assert first.duration == pytest.approx(20.0)
    assert segment.seek == pytest.approx(10.0)


def test_tiny_durations_stay_contiguous_and_never_loop_for_ever() -> None:
    items = library([0.1, 1e-3, 0.7])
    now = EPOCH + 123_456.789
    playout = built(items, now, horizon=60.0)
    assert_contiguous(playout.entries)
    assert playout.horizon(now) >= 60.0


def test_plan_ends_before_a_mid_item_join() -> None:
    old = library([100.0, 100.0])
    playout = built(old, EPOCH + 10.0)
    playout.rebuild([item(5, 40.0), item(6, 80.0)], EPOCH + 30.0)
    assert playout.entries[1].inpoint > 0
    segment = playout.plan(EPOCH + 50.0, 3600.0, exists=lambda _: True)
    assert segment is not None
    # The joined entry starts the next segment, where its inpoint becomes an exact seek.
    assert [p.path for p in segment.parts] == [old[0].path]
