from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.grid import grid_frames
from service.media import MediaItem
from service.playout import EPSILON, Entry, Gap, ItemPlan, Playout, cycle_order, entries_from

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
    assert playout.plan(EPOCH, fps=25, segment_max=3600.0) == Gap(None)
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


def test_plan_is_the_rest_of_the_entry_on_air_in_whole_grids() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH + 130.0)
    plan = playout.plan(EPOCH + 130.0, fps=25, segment_max=3600.0)
    # 70 s left: 1750 frames, rounded to 219 grids of 8 frames.
    assert plan == ItemPlan(items[1], 30.0, 1752, EPOCH + 130.0, EPOCH + 200.0)


def test_plan_is_bounded_by_segment_max() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH + 130.0)
    plan = playout.plan(EPOCH + 130.0, fps=25, segment_max=10.0)
    assert isinstance(plan, ItemPlan)
    assert plan.frames == 248  # 250 frames rounded to whole grids of 8
    # The next process goes on from where this one ends, in the same entry.
    at = EPOCH + 130.0 + plan.seconds(25)
    following = playout.plan(at, fps=25, segment_max=10.0)
    assert isinstance(following, ItemPlan)
    assert following.item == items[1]
    assert following.seek == pytest.approx(39.92)
    assert following.schedule_start == at


@pytest.mark.parametrize(("fps", "grid"), [(25, 8), (24, 64), (30, 16)])
def test_plan_is_at_least_one_grid(fps: int, grid: int) -> None:
    items = library([100.0, 100.0])
    playout = built(items, EPOCH)
    half = grid / fps / 2
    at = EPOCH + 100.0 - half * 1.2  # a little more than half a grid left
    plan = playout.plan(at, fps=fps, segment_max=3600.0)
    assert isinstance(plan, ItemPlan)
    assert (plan.item, plan.frames, plan.entry_end) == (items[0], grid, EPOCH + 100.0)
    assert playout.plan(EPOCH, fps=fps, segment_max=0.01) == ItemPlan(
        items[0], 0.0, grid, EPOCH, EPOCH + 100.0
    )


def test_a_sliver_of_an_entry_is_absorbed_by_the_next() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH)
    at = EPOCH + 199.9  # 0.1 s left: less than half a grid (0.16 s at 25 fps)
    plan = playout.plan(at, fps=25, segment_max=3600.0)
    # The next entry starts now, from its start: 100.1 s, 2502.5 frames, 313 grids.
    assert plan == ItemPlan(items[2], 0.0, 2504, at, EPOCH + 300.0)


def test_unplayable_item_is_a_gap_to_the_end_of_its_entry() -> None:
    items = library([100.0, 100.0, 100.0])
    playout = built(items, EPOCH)
    asked: list[tuple[str, float]] = []

    def playable(candidate: MediaItem, at: float) -> bool:
        asked.append((candidate.path, at))
        return candidate != items[1]

    assert playout.plan(EPOCH + 130.0, fps=25, segment_max=60.0, playable=playable) == Gap(
        EPOCH + 200.0
    )
    # A sliver before it: the gap is the next entry's, whose item is the one asked about.
    assert playout.plan(EPOCH + 99.95, fps=25, segment_max=60.0, playable=playable) == Gap(
        EPOCH + 200.0
    )
    assert asked == [(items[1].path, EPOCH + 130.0), (items[1].path, EPOCH + 99.95)]
    plan = playout.plan(EPOCH + 200.0, fps=25, segment_max=60.0, playable=playable)
    assert isinstance(plan, ItemPlan)
    assert plan.item == items[2]


def test_plan_of_a_joined_entry_keeps_its_inpoint() -> None:
    playout = built(library([100.0, 100.0]), EPOCH + 10.0)
    new = [item(5, 40.0), item(6, 80.0)]
    playout.rebuild(new, EPOCH + 30.0)
    plan = playout.plan(EPOCH + 110.0, fps=25, segment_max=3600.0)
    assert isinstance(plan, ItemPlan)
    assert plan.item == new[1]
    assert plan.seek == pytest.approx(70.0)  # joined 60 s in, and 10 s since
    assert plan.frames == 248  # 10 s left: 250 frames in whole grids
    assert plan.entry_end == pytest.approx(EPOCH + 120.0)


def test_planning_ahead_keeps_the_entry_on_air() -> None:
    items = library([100.0, 100.0, 100.0])
    now = EPOCH + 50.0
    playout = built(items, now, horizon=300.0)
    plan = playout.plan(now + 260.0, fps=25, segment_max=3600.0)  # the work-ahead
    assert isinstance(plan, ItemPlan)
    assert plan.item == items[0]  # the loop's next cycle
    assert playout.item_at(now) == (items[0], 50.0)  # still known: viewers watch it
    assert playout.horizon(now + 260.0) >= 300.0
    playout.ensure(now + 150.0)  # dropping is for the present, not for planning
    assert playout.item_at(now) is None
    assert playout.item_at(now + 150.0) == (items[2], 0.0)


@settings(max_examples=150, deadline=None)
@given(
    durations=st.lists(st.floats(min_value=0.05, max_value=40.0), min_size=1, max_size=6),
    offset=st.floats(min_value=0.0, max_value=1e7),
    fps=st.sampled_from([24, 25, 30, 50, 60]),
    segment_max=st.sampled_from([1.0, 7.5, 3600.0]),
)
def test_producing_plan_after_plan_never_drifts_by_half_a_grid(
    durations: list[float], offset: float, fps: int, segment_max: float
) -> None:
    """A channel plays plan after plan, each from where the last one ended: the
    schedule's time of each plan's first frame stays within half a grid of it."""
    items = library(durations)
    start = EPOCH + offset
    playout = built(items, start, horizon=60.0)
    grid = grid_frames(fps)
    half = grid / fps / 2
    produced = 0
    while produced < 120 * fps:
        at = start + produced / fps
        plan = playout.plan(at, fps=fps, segment_max=segment_max)
        assert isinstance(plan, ItemPlan)
        assert plan.schedule_start == at
        assert plan.frames % grid == 0
        assert plan.frames >= grid
        entry = next(e for e in playout.entries if e.end == plan.entry_end)
        assert plan.item == entry.item
        scheduled = entry.start + (plan.seek - entry.inpoint)
        assert abs(scheduled - at) <= half + 1e-6, (scheduled, at)
        if entry == playout.entry_at(at):
            # Never a sliver: less than half a grid left goes to the next entry.
            assert entry.end - at >= half - 1e-6
        assert 0.0 <= plan.seek - entry.inpoint < entry.duration
        wanted = min(entry.end - at, segment_max)
        if wanted >= half:
            assert abs(plan.seconds(fps) - wanted) <= half + 1e-6
        else:
            assert plan.frames == grid
        produced += plan.frames


def test_tiny_durations_stay_contiguous_and_never_loop_for_ever() -> None:
    items = library([0.1, 1e-3, 0.7])
    now = EPOCH + 123_456.789
    playout = built(items, now, horizon=60.0)
    assert_contiguous(playout.entries)
    assert playout.horizon(now) >= 60.0
