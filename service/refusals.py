"""Refused clients: the reports of refusals, and the live log tails' slots.

Each refusal is counted by its caller, but a flood of them (thousands of idle
connections, a client retrying a full log tail) makes one log line per reason and per
interval, with how many there were, never one line per refusal."""

from __future__ import annotations

import time
from collections import Counter

from loguru import logger

from service.clock import Clock
from service.errors import ExstreamError
from telemetry.metrics import Metrics

REPORT_INTERVAL = 60.0
TAIL_RETRY_AFTER = 10


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


class TooManyLogTails(ExstreamError):
    code = "too_many_log_tails"
    status_code = 503

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Closed after the answer: a client retrying in a loop holds no idle connection.
        self.headers = {"Retry-After": str(TAIL_RETRY_AFTER), "Connection": "close"}
        super().__init__(limit)

    def __str__(self) -> str:
        return f"all {self.limit} live log tails are in use; retry later"

    def __repr__(self) -> str:
        return f"TooManyLogTails(limit={self.limit!r})"


class TailSlots:
    """Live tails against `[server] max_log_tails`: a slot is taken before the response
    starts and given back when it ends, however it ends."""

    def __init__(self, limit: int, metrics: Metrics, report: RefusalReport | None = None) -> None:
        self.limit = limit
        self.metrics = metrics
        self.report = report if report is not None else RefusalReport()
        self.open = 0

    def check(self) -> None:
        """Refuse if every slot is taken: before any work, so a flood of tails costs little."""
        if self.open >= self.limit:
            self.metrics.log_tails_rejected.inc()
            self.report.record("live log tail", "log_tail_limit", f"{self.limit} open")
            raise TooManyLogTails(self.limit)

    def take(self) -> None:
        self.check()
        self.open += 1
        self.metrics.log_tails.set(self.open)

    def give_back(self) -> None:
        self.open -= 1
        self.metrics.log_tails.set(self.open)
