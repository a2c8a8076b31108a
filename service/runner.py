"""One channel's life: plan a segment, get a process slot, pump bytes into the hub, repeat.

A segment that ends as planned (the process played its list and exited 0) is followed
by the next one at once. Anything else (a crash, a stall the health monitor killed, a
pool failure) goes through the restart policy; when it refuses, the channel is `failed`
until the cool-down passes or an operator resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, Tracer

from service.config import ChannelConfig, Settings
from service.errors import (
    ChannelUnavailable,
    PoolError,
    RestartBudgetExhausted,
    ServiceStopping,
)
from service.ffmpeg import (
    ManagedProcess,
    Segment,
    code_class,
    concat_list,
    segment_argv,
    slate_argv,
)
from service.hub import Hub
from service.playout import Playout
from service.pool import ProcessPool
from service.ratelimit import Clock
from service.restart import Admission, RestartPolicy
from telemetry.metrics import Metrics

TS_OFFSET_MARGIN = 2.0


class ChannelState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    SLATE = "slate"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(frozen=True)
class Crash:
    """Why a process ended when it should not have; `reason` is a metric label."""

    reason: str  # exited, stalled, spawn_failed, exhausted, rate_limited, closed
    detail: str
    link: SpanContext | None = None


class ChannelRunner:
    def __init__(
        self,
        config: ChannelConfig,
        settings: Settings,
        *,
        hub: Hub,
        playout: Playout,
        pool: ProcessPool,
        policy: RestartPolicy,
        metrics: Metrics,
        tracer: Tracer | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        work_dir: Path,
    ) -> None:
        self.config = config
        self.settings = settings
        self.key = str(config.number)
        self.hub = hub
        self.playout = playout
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("exstream")
        self.clock = clock
        self.wall = wall
        self.work_dir = work_dir
        self.state = ChannelState.STOPPED
        self.process: ManagedProcess | None = None
        self.segment: Segment | None = None
        self.spawned_at: float | None = None
        self.last_output_at: float | None = None
        self.last_output_wall: float | None = None
        self.failure: str | None = None
        self.failed_at: float | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stall: SpanContext | None = None
        self._switch = False
        self._reset = asyncio.Event()
        self.closed = False
        self._ts_offset = 0.0
        self._ts_floor = 0.0
        self._lifecycle = asyncio.Lock()  # a start waits for a stop under way, and back
        self.metrics.set_channel_state(self.key, self.state)
        self.metrics.channel_up.labels(channel=self.key).set_function(lambda: float(self.up))

    # --- state -------------------------------------------------------------------------

    def _set_state(self, state: ChannelState) -> None:
        if state != self.state:
            logger.bind(channel=self.key).info(
                "channel {} {} -> {}", self.key, self.state.value, state.value
            )
            self.state = state
            self.metrics.set_channel_state(self.key, state)
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    @property
    def up(self) -> bool:
        """Playing (content or slate) and output arrived within the stall timeout."""
        if self.state not in (ChannelState.RUNNING, ChannelState.SLATE):
            return False
        last = self.last_output_at
        return last is not None and self.clock() - last <= self.settings.health.stall_timeout

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def pid(self) -> int | None:
        proc = self.process
        return proc.pid if proc is not None and proc.returncode is None else None

    async def wait_ready(self, timeout: float) -> None:
        """Until the channel has output to give; ChannelUnavailable if it fails or times out."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.state == ChannelState.FAILED:
                        raise ChannelUnavailable(self.config.number, self.failure or "failed")
                    if self.running and self.state in (ChannelState.RUNNING, ChannelState.SLATE):
                        return
                    if not self.running:
                        raise ChannelUnavailable(self.config.number, "stopped")
                    await self._changed.wait()
        except TimeoutError:
            raise ChannelUnavailable(self.config.number, f"no output within {timeout:g}s") from None

    # --- control -----------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.started_at = self.clock()
        self.last_output_at = None
        self.failure = None
        self._set_state(ChannelState.STARTING)
        # A fresh context: the channel outlives the request that started it.
        self._task = asyncio.create_task(
            self._supervise(), name=f"channel-{self.key}", context=contextvars.Context()
        )

    async def ensure_started(self) -> None:
        async with self._lifecycle:
            if self.closed:
                raise ServiceStopping()
            self.start()

    async def stop(self, timeout: float = 5.0, *, close: bool = False) -> None:
        """Stop the channel; with `close` (shutdown) it cannot be started again."""
        async with self._lifecycle:
            self.closed = self.closed or close
            await self._stop(timeout)

    async def _stop(self, timeout: float) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(task, return_exceptions=True)
            except TimeoutError:
                logger.bind(channel=self.key).error("channel {} did not stop in time", self.key)
        self._task = None
        self.process = None
        self.last_output_at = None
        self._ts_floor = 0.0
        self.hub.discontinuity()
        self._set_state(ChannelState.STOPPED)

    def kill_stalled(self, cause: SpanContext | None) -> None:
        """Called by the health monitor: end the process group; the runner restarts it."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        self._stall = cause
        proc.signal_group(signal.SIGKILL)

    def content_changed(self) -> None:
        """The playout has content: if the slate plays, switch to it."""
        if self.process is not None and self.segment is None:
            self._switch = True
            self.process.signal_group(signal.SIGTERM)

    def restart_now(self) -> bool:
        """Operator restart of a running process: a planned end, outside the budget.

        False when there is no process to restart (the channel is starting or restarting).
        """
        if self.process is None:
            return False
        self._switch = True
        self.process.signal_group(signal.SIGTERM)
        return True

    def reset(self) -> None:
        """Operator reset of a failed channel: forget the restart history, try again."""
        self.policy.reset(self.key)
        self._reset.set()

    # --- the loop ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        log = logger.bind(channel=self.key)
        crash = await self._play(self._span("channel.start"), None)
        while True:
            if crash is None:
                crash = await self._play(self._span("channel.start"), None)
                continue
            if crash.reason != "reset":  # a reset is a fresh start through the policy
                self.metrics.unhealthy.labels(channel=self.key, reason=crash.reason).inc()
                log.warning(
                    "channel {} {}: {}", self.key, crash.reason, crash.detail, reason=crash.reason
                )
            links = [Link(crash.link)] if crash.link is not None else None
            span = self._span("channel.restart", links, reason=crash.reason)
            self._set_state(ChannelState.RESTARTING)
            try:
                with trace.use_span(span, end_on_exit=False):
                    admission = await self.policy.admit(self.key)
            except RestartBudgetExhausted as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("exstream.outcome", "refused")
                self.metrics.restarts.labels(channel=self.key, outcome="refused").inc()
                self.metrics.budget_exhausted.labels(channel=self.key).inc()
                with trace.use_span(span, end_on_exit=True):
                    log.error("channel {} failed: {}", self.key, exc, reason="budget_exhausted")
                if not await self._failed(str(exc)):
                    return
                crash = Crash("reset", "trying again after a reset or the cool-down")
                continue
            except BaseException:
                span.end()
                raise
            self.restarts += 1
            span.set_attribute("exstream.attempt", admission.attempt)
            with trace.use_span(span, end_on_exit=False):
                log.info(
                    "restart attempt {} of channel {}", admission.attempt, self.key,
                    attempt=admission.attempt, reason=crash.reason,
                )  # fmt: skip
            crash = await self._play(span, admission)

    def _span(self, name: str, links: list[Link] | None = None, **attributes: str) -> Span:
        attrs = {"exstream.channel": self.key}
        attrs.update({f"exstream.{k}": v for k, v in attributes.items()})
        return self.tracer.start_span(name, links=links, attributes=attrs)

    async def _failed(self, reason: str) -> bool:
        """Wait in state failed for the cool-down or an operator reset.

        Returns False when the supervisor should end instead of trying again: an
        on-demand channel whose cool-down passed waits for its next viewer, stopped.
        """
        self.failure = reason
        self.failed_at = self.clock()
        self._reset.clear()
        self._set_state(ChannelState.FAILED)
        self.hub.end_viewers("channel_failed")  # they would wait for bytes that never come
        log = logger.bind(channel=self.key)
        try:
            async with asyncio.timeout(self.settings.health.cooldown):
                await self._reset.wait()
            log.info("channel {} reset by an operator", self.key)
            again = True
        except TimeoutError:
            log.info("channel {} cool-down over", self.key)
            again = self.config.always_on
        self.policy.reset(self.key)
        self.failure = None
        self.failed_at = None
        self._set_state(ChannelState.STARTING if again else ChannelState.STOPPED)
        return again

    def _argv(self, segment: Segment | None) -> list[str]:
        # Past the end of the last process's output too: its offset plus its run time.
        elapsed = max(self.clock() - (self.started_at or self.clock()), self._ts_floor)
        # A later process starts its timestamps past anything the last one wrote: -re
        # paces input, so output can run a little ahead of the wall clock. Forward jumps
        # are harmless to players; backward ones are not.
        # Whole frames, so a decoder sees a clean gap and never two frames in one slot.
        frame = 1 / self.settings.ffmpeg.fps
        ts_offset = math.ceil((elapsed + TS_OFFSET_MARGIN) / frame) * frame if elapsed > 0 else 0.0
        self._ts_offset = ts_offset
        if segment is None:
            return slate_argv(self.settings.ffmpeg, ts_offset)
        list_path = self.work_dir / f"channel-{self.key}.ffconcat"
        list_path.write_text(concat_list(segment), encoding="utf-8")
        return segment_argv(self.settings.ffmpeg, segment, list_path, ts_offset)

    async def _play(self, span: Span, admission: Admission | None) -> Crash | None:
        """Run one process to its end; None when it ended as planned, else why it crashed."""
        self._stall = None
        self._switch = False
        first: Span | None = None
        segment: Segment | None = None
        produced = 0
        code: int | None = None
        tail = ""
        try:
            segment = self.playout.plan(self.wall(), self.settings.playout.segment_max)
            span.set_attribute("exstream.slate", segment is None)
            async with contextlib.AsyncExitStack() as process_scope:
                # Only the spawn runs in the span: it ends at the first output, the process
                # lives on after it.
                with trace.use_span(span, end_on_exit=False):
                    spawning = self.pool.spawn(self.key, self._argv(segment))
                    proc = await process_scope.enter_async_context(spawning)
                process_scope.callback(self._process_ended)
                self.process, self.segment, self.spawned_at = proc, segment, self.clock()
                self.hub.discontinuity()
                # Outside use_span here: name the parent, or the span would be a root.
                first = self.tracer.start_span(
                    "channel.first_output",
                    context=trace.set_span_in_context(span),
                    attributes={"exstream.channel": self.key},
                )
                first.set_attribute("process.pid", proc.pid or 0)
                produced = await self._pump(proc, segment, span, first, admission)
                code = await proc.wait()
                tail = " | ".join(list(proc.stderr_tail)[-3:])
        except PoolError as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            return Crash(exc.reason, str(exc))
        except Exception as exc:
            # A bug or an I/O error must not kill the supervisor: it is a crash like any.
            logger.bind(channel=self.key).opt(exception=exc).error("channel {} error", self.key)
            span.set_status(Status(StatusCode.ERROR, repr(exc)))
            return Crash("error", repr(exc))
        finally:
            if admission is not None:
                admission.release()
                if not produced:
                    self.metrics.restarts.labels(channel=self.key, outcome="failed").inc()
            for open_span in (first, span) if not produced else ():
                if open_span is not None:
                    open_span.set_status(Status(StatusCode.ERROR, "no output"))
                    open_span.end()
        return self._verdict(code, produced, segment, tail)

    def _process_ended(self) -> None:
        self.process = None
        self._ts_floor = self._ts_offset + (self.clock() - (self.spawned_at or 0.0))

    async def _pump(
        self,
        proc: ManagedProcess,
        segment: Segment | None,
        span: Span,
        first: Span,
        admission: Admission | None,
    ) -> int:
        interval = self.settings.stream.chunk_interval
        stdout = proc.stdout
        produced = 0
        while data := await stdout.read(4 * 1024 * 1024):
            # Only packets of the announced streams count as output: garbage is a stall.
            recognised = self.hub.recognised
            published = self.hub.publish(data)
            if published and self.hub.recognised > recognised:
                if not produced:
                    first.end()
                    span.set_attribute("exstream.outcome", "started")
                    span.end()
                    if admission is not None:
                        admission.release()
                        self.metrics.restarts.labels(channel=self.key, outcome="started").inc()
                    self._set_state(ChannelState.SLATE if segment is None else ChannelState.RUNNING)
                produced += published
                self.last_output_at = self.clock()
                self.last_output_wall = self.wall()
                self.metrics.channel_output_bytes.labels(channel=self.key).inc(published)
                self.metrics.channel_last_output.labels(channel=self.key).set(self.last_output_wall)
            # Let output gather: fewer, larger chunks make fan-out to many viewers cheap.
            await asyncio.sleep(interval)
        return produced

    def _verdict(
        self, code: int | None, produced: int, segment: Segment | None, tail: str
    ) -> Crash | None:
        assert code is not None
        self.metrics.ffmpeg_exits.labels(channel=self.key, code_class=code_class(code)).inc()
        if self._stall is not None:
            return Crash("stalled", f"no output for too long, killed (code {code})", self._stall)
        if self._switch:
            logger.bind(channel=self.key).info("channel {} leaves the slate for content", self.key)
            return None
        if code == 0 and produced and segment is not None:
            logger.bind(channel=self.key).info("channel {} finished a segment", self.key)
            return None
        detail = f"process exited with code {code} after {produced} bytes"
        return Crash("exited", f"{detail}: {tail}" if tail else detail)
