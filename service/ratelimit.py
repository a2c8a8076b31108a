"""The shared start-up token bucket.

Waiting is a loop: compute the time to the next token, sleep through the injected
`sleep`, look again. It never recurses (the service this replaces did, and died of
RecursionError under a restart storm). Waiters are served first come, first served:
only the head of the queue sleeps for a token, the rest wait on a FIFO lock. A waiter
that is cancelled or times out takes nothing and leaves the queue at once.
Each waiter costs O(1): 10,000 of them are fine.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from service.clock import Clock, Sleep
from service.errors import RateLimited

# Refill arithmetic in floats can land a hair below a whole token after sleeping exactly
# the computed time; without this tolerance the head would sleep ever-smaller amounts.
EPSILON = 1e-9


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
        # FIFO of waiters; only the head sleeps for a token, each hands over to the next.
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    async def acquire(self, timeout: float | None = None) -> float:
        """Wait for one token; returns the seconds waited.

        Raises RateLimited when no token can be had within `timeout` (checked against the
        injected clock before each sleep, so a doomed wait fails at once).
        """
        started = self._clock()
        deadline = None if timeout is None else started + timeout
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            if self._queue[0] is not turn:
                try:
                    async with asyncio.timeout(timeout):
                        await turn
                except TimeoutError:
                    raise RateLimited(self._clock() - started) from None
            while True:
                self._refill()
                if self._tokens >= 1 - EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return self._clock() - started
                needed = (1 - self._tokens) / self.rate
                if deadline is not None and self._clock() + needed > deadline:
                    raise RateLimited(self._clock() - started)
                await self._sleep(needed)
        finally:
            self._leave(turn)

    def _leave(self, turn: asyncio.Future[None]) -> None:
        if self._queue and self._queue[0] is turn:
            self._queue.popleft()
        else:
            self._queue.remove(turn)  # cancelled or timed out while queued: rare
        if self._queue and not self._queue[0].done():
            self._queue[0].set_result(None)
