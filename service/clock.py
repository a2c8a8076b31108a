"""The clock and sleep that policies take, injected so tests control time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
"""Seconds, monotonic (time.monotonic) or wall-clock (time.time) as the caller says."""
Sleep = Callable[[float], Awaitable[None]]
"""asyncio.sleep, or a fake that advances a fake clock."""
