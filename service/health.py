"""Health: a pure classification of channel snapshots, and the loop that acts on it.

A process is stalled when it has owed frames for `stall_timeout`, or for a second
while the channel's work-ahead has drained below half: then it is replaced while
viewers are still served from what is left, so they never see the stall.

Only a stalled process is acted on here (its group is killed, the runner restarts it
through the policy, and the restart span links back to this check). An exited process
is seen by its runner at once; a channel on the slate, an idle on-demand channel and a
failed channel are states, not faults to restart.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import Tracer

from service.clock import Clock, Sleep
from service.runner import ChannelRunner, ChannelState
from telemetry.metrics import Metrics


class Verdict(enum.StrEnum):
    HEALTHY = "healthy"
    STARTING = "starting"
    EXITED = "exited"
    STALLED = "stalled"
    NO_CONTENT = "no_content"
    IDLE = "idle"
    FAILED = "failed"


@dataclass(frozen=True)
class HealthSnapshot:
    channel: str
    state: ChannelState
    supervised: bool  # the runner's task is alive
    pid: int | None  # the running process, if any
    exit_code: int | None  # set when the process ended and the runner has not moved on
    # Seconds the current process has owed whole frames (since it started, or last gave
    # some, or the work-ahead last had room for more): not counted while the work-ahead
    # is full, since then a healthy process waits too.
    since_output: float | None
    stall_timeout: float
    workahead: float = 0.0  # seconds of stream ready ahead of the viewers
    workahead_target: float = 0.0  # the configured work-ahead


# A process that has owed frames this long while the work-ahead drained below half its
# target is stalled: killed now, it is replaced before viewers run out of stream.
OWED_WHILE_DRAINING = 1.0


def _stalled(snapshot: HealthSnapshot) -> bool:
    since = snapshot.since_output
    if since is None:
        return False
    if since > snapshot.stall_timeout:
        return True
    draining = snapshot.workahead < snapshot.workahead_target / 2
    return draining and since > OWED_WHILE_DRAINING


def classify(snapshot: HealthSnapshot) -> Verdict:
    if snapshot.state == ChannelState.FAILED:
        return Verdict.FAILED
    if not snapshot.supervised or snapshot.state == ChannelState.STOPPED:
        return Verdict.IDLE
    if snapshot.exit_code is not None:
        return Verdict.EXITED
    if snapshot.pid is None:
        return Verdict.STARTING
    if _stalled(snapshot):
        return Verdict.STALLED
    if snapshot.state == ChannelState.SLATE:
        return Verdict.NO_CONTENT
    if snapshot.state in (ChannelState.STARTING, ChannelState.RESTARTING):
        return Verdict.STARTING
    return Verdict.HEALTHY


def snapshot_of(runner: ChannelRunner, now: float, stall_timeout: float) -> HealthSnapshot:
    proc = runner.process
    return HealthSnapshot(
        channel=runner.key,
        state=runner.state,
        supervised=runner.running,
        pid=proc.pid if proc is not None and proc.returncode is None else None,
        exit_code=proc.returncode if proc is not None else None,
        since_output=runner.since_progress(now),
        stall_timeout=stall_timeout,
        workahead=runner.workahead,
        workahead_target=runner.settings.stream.workahead,
    )


class HealthMonitor:
    def __init__(
        self,
        runners: Callable[[], Iterable[ChannelRunner]],
        *,
        check_interval: float,
        stall_timeout: float,
        metrics: Metrics,
        tracer: Tracer | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.runners = runners
        self.check_interval = check_interval
        self.stall_timeout = stall_timeout
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("exstream")
        self.clock = clock
        self.sleep = sleep
        self.verdicts: dict[str, Verdict] = {}

    async def run(self) -> None:
        while True:
            await self.sleep(self.check_interval)
            self.check()

    def check(self) -> dict[str, Verdict]:
        now = self.clock()
        for runner in self.runners():
            snapshot = snapshot_of(runner, now, self.stall_timeout)
            verdict = classify(snapshot)
            if self.verdicts.get(runner.key) != verdict:  # a change, not every check
                logger.bind(channel=runner.key).debug(
                    "channel {} health: {} ({})", runner.key, verdict.value, snapshot,
                    verdict=verdict.value,
                )  # fmt: skip
            self.verdicts[runner.key] = verdict
            if verdict == Verdict.STALLED:
                self._stalled(runner, snapshot)
        return dict(self.verdicts)

    def _stalled(self, runner: ChannelRunner, snapshot: HealthSnapshot) -> None:
        attributes: dict[str, str | float | int] = {
            "exstream.channel": runner.key,
            "exstream.reason": Verdict.STALLED.value,
            "exstream.since_output_seconds": snapshot.since_output or 0.0,
            "process.pid": snapshot.pid or 0,
        }
        with self.tracer.start_as_current_span("health.check", attributes=attributes) as span:
            since = snapshot.since_output or 0.0
            limit = self.stall_timeout if since > self.stall_timeout else OWED_WHILE_DRAINING
            logger.bind(channel=runner.key).warning(
                "channel {} stalled: no output for {:.1f}s (limit {:g}s, work-ahead {:.1f}s),"
                " killing pid {}",
                runner.key, since, limit, snapshot.workahead, snapshot.pid, reason="stalled",
            )  # fmt: skip
            runner.kill_stalled(span.get_span_context())


async def measure_loop_lag(metrics: Metrics, interval: float = 0.5) -> None:
    """Sleep `interval` over and over; how late each wake-up comes is the loop's lag."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - before - interval))
