from __future__ import annotations

from service.media import MediaItem
from service.metadata import Programme
from service.playout import Entry
from service.web.guidegrid import MAX_LISTED, SLOT, Cell, cells, window
from service.xmltv import OFFLINE_TITLE, programme_title

START = 1_800_000_000.0  # a column boundary (a multiple of SLOT)


def item(name: str, *, show: str | None = None, title: str | None = None) -> MediaItem:
    return MediaItem(
        f"/media/{name}.mkv", 60.0, name, "h264", "aac", 640, 360,
        programme=Programme(show=show, title=title),
    )  # fmt: skip


def entries(*spans: tuple[str, float, float]) -> list[Entry]:
    return [Entry(START + a, item(name), end=START + b) for name, a, b in spans]


def titles(grid: list[Cell]) -> list[list[str]]:
    return [[p.title for p in c.programmes] for c in grid]


def test_the_window_starts_at_the_column_now_is_in() -> None:
    columns = window(START + 700, hours=1.5)
    assert columns == (START, START + SLOT, START + 2 * SLOT)


def test_a_long_programme_joins_the_columns_it_fills() -> None:
    columns = window(START, hours=2)
    grid = cells(entries(("News", 0, 600), ("Film", 600, 6000), ("Late", 6000, 7200)), columns)
    # The film starts in column 0 and fills columns 1 and 2: one cell of 3; column 3
    # lists what starts there (the film's end is not listed again).
    assert [c.span for c in grid] == [3, 1]
    assert titles(grid) == [["News", "Film"], ["Late"]]


def test_a_programme_on_air_before_the_grid_is_listed_first() -> None:
    columns = window(START + 100, hours=1)
    grid = cells(entries(("Early", -300, 900), ("Next", 900, 3000)), columns)
    assert titles(grid) == [["Early", "Next"], []]
    assert [c.span for c in grid] == [1, 1]


def test_short_items_are_listed_up_to_a_limit_and_counted() -> None:
    columns = window(START, hours=0.5)
    spans = [(f"Clip {i}", i * 60.0, (i + 1) * 60.0) for i in range(30)]
    (cell,) = cells(entries(*spans), columns)
    assert len(cell.programmes) == MAX_LISTED
    assert cell.more == 30 - MAX_LISTED


def test_short_items_across_a_boundary_do_not_join_columns() -> None:
    columns = window(START, hours=1)
    spans = [(f"Clip {i}", i * 7.0, (i + 1) * 7.0) for i in range(600)]
    grid = cells(entries(*spans), columns)
    assert [c.span for c in grid] == [1, 1]


def test_a_channel_with_nothing_scheduled_is_offline_as_in_the_xmltv_guide() -> None:
    columns = window(START, hours=1)
    (cell,) = cells([], columns)
    assert cell.span == 2
    assert [p.title for p in cell.programmes] == [OFFLINE_TITLE]


def test_titles_are_the_xmltv_guide_titles() -> None:
    assert programme_title(item("the.film.2019")) == "the.film.2019"
    assert programme_title(item("s01e02", show="The Show", title="Pilot")) == "The Show"
    assert programme_title(item("x", title="A Film")) == "A Film"
