"""The guide page's grid: the next hours of every channel in half-hour columns, from the
same schedule (Playout.guide) and with the same titles as the XMLTV guide.

A programme is listed once, in the column where it starts (or the first one, when it
started before the grid); the columns it then fills whole are joined to that cell, as
in a printed guide. Items shorter than a column are listed in it, up to MAX_LISTED.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.playout import Entry
from service.xmltv import OFFLINE_TITLE, programme_title

SLOT = 1800.0
HOURS = 3.0
MAX_LISTED = 4


@dataclass(frozen=True, slots=True)
class Listed:
    title: str
    subtitle: str | None
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Cell:
    span: int  # columns
    programmes: tuple[Listed, ...]
    more: int  # programmes starting here that are not listed


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    name: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class Grid:
    start: float  # of the first column (it may have begun before now)
    now: float  # the schedule is shown from here on, as in the XMLTV guide
    end: float
    columns: tuple[float, ...]  # each column's start
    rows: tuple[Row, ...]


def listed(entry: Entry) -> Listed:
    """As the XMLTV guide lists it (the same title)."""
    item = entry.item
    return Listed(programme_title(item), item.programme.sub_title, entry.start, entry.end)


def window(now: float, hours: float = HOURS, slot: float = SLOT) -> tuple[float, ...]:
    """Column starts: from the column now is in, for `hours`."""
    first = math.floor(now / slot) * slot
    return tuple(first + i * slot for i in range(math.ceil(hours * 3600 / slot)))


def cells(entries: Sequence[Entry], columns: Sequence[float], slot: float = SLOT) -> list[Cell]:
    if not entries:
        offline = Listed(OFFLINE_TITLE, None, columns[0], columns[-1] + slot)
        return [Cell(len(columns), (offline,), 0)]
    result: list[Cell] = []
    owner: Entry | None = None  # the last programme listed so far
    position = 0
    for column in columns:
        column_end = column + slot
        if owner is not None and owner.start <= column and owner.end >= column_end:
            last = result[-1]
            result[-1] = Cell(last.span + 1, last.programmes, last.more)
            continue
        starting: list[Entry] = []
        while position < len(entries) and entries[position].start < column_end:
            starting.append(entries[position])
            position += 1
        if starting:
            owner = starting[-1]
        shown = tuple(listed(e) for e in starting[:MAX_LISTED])
        result.append(Cell(1, shown, len(starting) - len(shown)))
    return result


def row(number: int, name: str, entries: Sequence[Entry], columns: Sequence[float]) -> Row:
    return Row(number, name, tuple(cells(entries, columns)))
