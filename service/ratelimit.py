"""The shared start-up token bucket.

Waiting is a loop: compute the time to the next token, sleep through the injected
`sleep`, look again. It never recurses (the service this replaces did, and died of
RecursionError under a restart storm). Waiters are served first come, first served:
only the head of the queue sleeps for a token, the rest wait on a FIFO lock. A waiter
that is cancelled or times out takes nothing and leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.errors import RateLimited

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._queue = asyncio.Lock()
        self.waiting = 0

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    def try_take(self) -> bool:
        """Take a token now if one is free and nobody is queued before us."""
        if self._queue.locked():
            return False
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self, timeout: float | None = None) -> float:
        """Wait for one token; returns the seconds waited.

        Raises RateLimited when no token can be had within `timeout` (checked against the
        injected clock before each sleep, so a doomed wait fails at once).
        """
        started = self._clock()
        deadline = None if timeout is None else started + timeout
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._queue.acquire()
            try:
                while True:
                    self._refill()
                    if self._tokens >= 1:
                        self._tokens -= 1
                        return self._clock() - started
                    needed = (1 - self._tokens) / self.rate
                    if deadline is not None and self._clock() + needed > deadline:
                        raise RateLimited(self._clock() - started)
                    await self._sleep(needed)
            finally:
                self._queue.release()
        except TimeoutError:
            raise RateLimited(self._clock() - started) from None
        finally:
            self.waiting -= 1
