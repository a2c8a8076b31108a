"""Reports of refused clients: each refusal is counted by its caller, but a flood of them
(thousands of idle connections, a client retrying a full log tail) makes one log line
per reason and per interval, with how many there were, never one line per refusal."""

from __future__ import annotations

import time
from collections import Counter

from loguru import logger

from service.ratelimit import Clock

REPORT_INTERVAL = 60.0


class RefusalReport:
    def __init__(self, *, interval: float = REPORT_INTERVAL, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._unreported: Counter[str] = Counter()
        self._reported_at: dict[str, float] = {}

    def record(self, what: str, reason: str, detail: str, *, level: str = "WARNING") -> bool:
        """Note one refusal of `what` (e.g. "client connection"); True if this one was logged.

        The first refusal for a reason is logged at once; later ones are logged with
        their count when `interval` has passed since the last line for that reason.
        """
        self._unreported[reason] += 1
        now = self._clock()
        last = self._reported_at.get(reason)
        if last is not None and now - last < self.interval:
            return False
        count = self._unreported.pop(reason)
        self._reported_at[reason] = now
        message = "{} refused ({}): {}"
        args: list[object] = [what, reason, detail]
        if count > 1:
            message += "; {} since the last report"
            args.append(count)
        logger.bind(reason=reason, count=count).log(level, message, *args)
        return True
