"""Waiting in tests: poll a check until it holds, with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Short enough to notice a change quickly, long enough not to busy-loop on a shared machine.
POLL_INTERVAL = 0.05


def _attempts(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    ignore: tuple[type[Exception], ...],
) -> Callable[[], T | None]:
    """One call of `check` per call; raises once the deadline has passed without success."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None

    def attempt() -> T | None:
        nonlocal last_error
        try:
            result = check()
        except ignore as exc:
            last_error, result = exc, None
        if not result and time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        return result

    return attempt


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
    *,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `check` until it returns something truthy, and return that; fail with `what`
    after `timeout` seconds. Errors of the `ignore` types count as "not yet"."""
    attempt = _attempts(check, timeout, what, ignore)
    while not (result := attempt()):
        time.sleep(interval)
    return result


async def wait_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
) -> T:
    """`wait_for` for the event loop: other tasks run between the checks."""
    attempt = _attempts(check, timeout, what, ())
    # Polling is the point here: what is checked has no event to wait on.
    while not (result := attempt()):  # noqa: ASYNC110
        await asyncio.sleep(interval)
    return result
