"""What loguru logs while a test runs, each record read the way the test asserts on it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

T = TypeVar("T")


@contextlib.contextmanager
def capturing(read: Callable[[Record], T], level: str = "DEBUG") -> Iterator[list[T]]:
    """`read(record)` of every record at `level` or above, until the block ends."""
    found: list[T] = []
    handler = logger.add(lambda message: found.append(read(message.record)), level=level)
    try:
        yield found
    finally:
        logger.remove(handler)


def message(record: Record) -> str:
    return record["message"]


def level_and_message(record: Record) -> tuple[str, str]:
    return record["level"].name, record["message"]
