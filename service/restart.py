"""The restart policy: a supervisor's budget, tenacity backoff and a global in-flight cap.

At most `max_restarts` restarts of a channel within `restart_window` (OTP / systemd
style); between attempts an exponential backoff with jitter (tenacity's
`wait_exponential_jitter`); at most `max_in_flight` restarts under way across all
channels. A refused restart raises RestartBudgetExhausted: the channel goes to
`failed` until the cool-down passes or an operator resets it. A spawn the machine had
no resources for (file descriptors, memory) is retried with the same backoff through
`defer`, which spends no budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from service.clock import Clock, Sleep
from service.errors import RestartBudgetExhausted


@dataclass(eq=False)
class Admission:
    attempt: int
    _release: Callable[[], None] | None

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


class RestartPolicy:
    def __init__(
        self,
        max_restarts: int,
        window: float,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_in_flight: int = 8,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # The waits are tenacity's: exponential from backoff_initial, capped, with jitter.
        # The attempt number is the channel's restarts within the window, not a count of
        # consecutive calls, so the policy asks the retrying object for its wait rather
        # than letting it drive a loop.
        self._retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max), sleep=sleep
        )
        self._slots = asyncio.Semaphore(max_in_flight)
        self._history: dict[str, deque[float]] = {}

    def recent(self, channel: str) -> int:
        """Restarts of `channel` within the window ending now."""
        history = self._history.get(channel)
        if not history:
            return 0
        horizon = self.clock() - self.window
        while history and history[0] <= horizon:
            history.popleft()
        return len(history)

    def check(self, channel: str) -> int:
        """The attempt number the next restart would be; raises when the budget is spent."""
        recent = self.recent(channel)
        if recent >= self.max_restarts:
            raise RestartBudgetExhausted(int(channel), recent, self.window)
        return recent + 1

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before restart number `attempt` (1 is the first)."""
        state = RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        return float(self._retrying.wait(state))

    async def admit(self, channel: str) -> Admission:
        """Admit one restart: budget check, backoff sleep, then an in-flight slot.

        Raises RestartBudgetExhausted when the budget is spent. The caller releases the
        slot once the new process is up (or has failed).
        """
        attempt = self.check(channel)
        await self.sleep(self.backoff(attempt))
        attempt = self.check(channel)
        await self._slots.acquire()
        self._history.setdefault(channel, deque()).append(self.clock())
        self.in_flight += 1
        return Admission(attempt, self._release)

    async def defer(self, failures: int) -> None:
        """Back off before the next spawn after `failures` in a row that the machine was
        short of resources for: the same backoff, but outside the budget, which is for
        channels that are broken, not for a machine that is busy."""
        await self.sleep(self.backoff(failures))

    def _release(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    def reset(self, channel: str) -> None:
        self._history.pop(channel, None)
