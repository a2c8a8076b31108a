"""Ways a SQLite file gets damaged on a disk, for the stores' tests (same bytes every run)."""

from __future__ import annotations

import random
from collections.abc import Callable

PAGE = 4096


def damaged_header(data: bytes) -> bytes:
    return bytes(100) + data[100:]


def random_bytes(data: bytes) -> bytes:
    return random.Random(11).randbytes(len(data))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def damaged_middle_pages(data: bytes) -> bytes:
    """Five pages a third of the way in: the header is fine and the file opens; only a
    statement that reads those pages (or an integrity check) finds the damage."""
    pages = len(data) // PAGE
    assert pages >= 20, "too small a file to damage in the middle"
    first = pages // 3
    noise = random.Random(7).randbytes(5 * PAGE)
    return data[: first * PAGE] + noise + data[(first + 5) * PAGE :]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "damaged header": damaged_header,
    "random bytes": random_bytes,
    "truncated": truncated,
    "damaged middle pages": damaged_middle_pages,
}
