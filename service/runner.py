"""One channel's life: plan an item, get a process slot, splice its output onto the
channel's timeline, repeat; the pacer sends the timeline to the hub in real time.

Items follow each other on one timeline (service/splice.py) through a work-ahead of a
few seconds (service/timeline.py), so a handover, a restart or a late start never
reaches a viewer. An item that ends as planned is followed by the next at once; one
that cannot be played (ffmpeg fails on the file, or it ends early) is skipped with a
reason and the gap is filled with the slate. A process that crashes, stalls (the
health monitor kills it) or cannot be spawned goes through the restart policy and
resumes where the timeline is; when the policy refuses, the channel is `failed` until
the cool-down passes or an operator resets it. A spawn the machine is short of
resources for is not the channel's fault: it is retried with backoff, outside the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, Tracer

from service.clock import Clock
from service.config import ChannelConfig, Settings
from service.errors import (
    ChannelUnavailable,
    PoolError,
    RestartBudgetExhausted,
    ServiceStopping,
    ShortOfResources,
    SpawnFailed,
)
from service.ffmpeg import code_class, item_argv, slate_argv
from service.hub import Hub
from service.media import MediaItem
from service.playout import Gap, ItemPlan, Playout
from service.pool import ProcessPool
from service.process import ManagedProcess
from service.processrun import Ended, ProcessRun
from service.restart import Admission, RestartPolicy
from service.slate import SlateClip
from service.splice import Splicer
from service.timeline import FILL_STEP, Timeline
from telemetry.metrics import Metrics

FAILURES_BEFORE_RESTART = 3  # items failing in a row: the process, not the media, is broken
SLATE_WAIT = 2.0  # for the slate clip at start-up, before a slate process stands in


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

    reason: str  # exited, stalled, spawn_failed, resources, exhausted, rate_limited, closed
    detail: str
    link: SpanContext | None = None


@dataclass(frozen=True)
class LastCrash:
    """The channel's last crash, kept after it healed: what the status page shows."""

    reason: str
    detail: str
    at: float  # wall-clock time


@dataclass(frozen=True)
class ItemSkip:
    """An item that could not play to its end: skipped, the gap filled with the slate."""

    path: str
    reason: str  # failed, no_output, ended_early
    detail: str


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
        slate: SlateClip | None = None,
        tracer: Tracer | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.config = config
        self.settings = settings
        self.key = str(config.number)
        self.hub = hub
        self.playout = playout
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.slate = slate
        self.tracer = tracer or trace.get_tracer("exstream")
        self.clock = clock
        self.wall = wall
        self.state = ChannelState.STOPPED
        self.run: ProcessRun | None = None  # the process of the moment, and its run
        self.last_output_at: float | None = None
        self.last_output_wall: float | None = None
        self.failure: str | None = None
        self.failed_at: float | None = None
        self.restarts = 0
        self.last_crash: LastCrash | None = None
        self.started_at: float | None = None
        self.skips: dict[str, ItemSkip] = {}  # path -> why it does not play now
        self.timeline = self._new_timeline()
        self._skip_until: dict[str, float] = {}  # path -> schedule time it is skipped to
        self._failures = 0
        self._shortage = 0  # spawns in a row the machine had no resources for
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._reset = asyncio.Event()
        self.closed = False
        self._lifecycle = asyncio.Lock()  # a start waits for a stop under way, and back
        self.metrics.set_channel_state(self.key, self.state)
        self.metrics.channel_up.labels(channel=self.key).set_function(lambda: float(self.up))
        self.metrics.channel_workahead.labels(channel=self.key).set_function(lambda: self.workahead)

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
        """Streaming (content or slate) and output went out within the stall timeout."""
        if self.state not in (ChannelState.RUNNING, ChannelState.SLATE):
            return False
        last = self.last_output_at
        return last is not None and self.clock() - last <= self.settings.health.stall_timeout

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def workahead(self) -> float:
        """Seconds of stream ready ahead of the viewers (0 when the channel is stopped)."""
        return self.timeline.ahead() if self.running else 0.0

    @property
    def process(self) -> ManagedProcess | None:
        return self.run.process if self.run is not None else None

    @property
    def item(self) -> ItemPlan | None:
        """What the process of the moment plays (None: the slate, or no process)."""
        return self.run.item if self.run is not None else None

    @property
    def spawned_at(self) -> float | None:
        return self.run.spawned_at if self.run is not None else None

    @property
    def pid(self) -> int | None:
        proc = self.process
        return proc.pid if proc is not None and proc.returncode is None else None

    def since_progress(self, now: float) -> float | None:
        """Seconds the live process has been expected to give frames and has not."""
        return self.run.since_progress(now) if self.run is not None else None

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
        self.run = None
        self.last_output_at = None
        self.hub.discontinuity()
        self._set_state(ChannelState.STOPPED)

    def kill_stalled(self, cause: SpanContext | None) -> None:
        """Called by the health monitor: end the process group; the runner restarts it."""
        if self.run is not None:
            self.run.kill_stalled(cause)

    def content_changed(self) -> None:
        """The media were scanned again: files that failed may play now, and a slate
        process gives way to them."""
        self.skips.clear()
        self._skip_until.clear()
        run = self.run
        if run is not None and run.item is None:
            run.replace()

    def restart_now(self) -> bool:
        """Operator restart of a running process: a planned end, outside the budget. The
        next process resumes where the timeline is, so viewers see nothing of it.

        False when there is no process to restart (the channel is starting or restarting).
        """
        return self.run is not None and self.run.replace()

    def reset(self) -> None:
        """Operator reset of a failed channel: forget the restart history, try again."""
        self.policy.reset(self.key)
        self._reset.set()

    # --- the loop ----------------------------------------------------------------------

    def _new_timeline(self) -> Timeline:
        splicer = Splicer(self.settings.ffmpeg.fps, self.config.name)
        return Timeline(
            splicer, clock=self.clock, wall=self.wall, workahead=self.settings.stream.workahead
        )

    async def _supervise(self) -> None:
        self._shortage = 0
        self.timeline = self._new_timeline()
        self.hub.discontinuity()
        pacer = asyncio.create_task(self._pace(), name=f"pacer-{self.key}")
        try:
            await self._produce()
        finally:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer

    async def _produce(self) -> None:
        log = logger.bind(channel=self.key)
        span: Span | None = self._span("channel.start")
        admission: Admission | None = None
        while True:
            self._load_slate()  # also fills audio gaps at joins after a cut
            plan = self.playout.plan(
                self.timeline.schedule_time(),
                fps=self.settings.ffmpeg.fps,
                segment_max=self.settings.playout.segment_max,
                playable=self._playable,
            )
            if isinstance(plan, Gap):
                if await self._fill(plan):
                    if span is not None:
                        self._started(span, None, admission)
                        span = admission = None
                    continue
                # No slate clip (making it failed): a process plays the slate instead.
                crash = await self._play(plan, span, admission)
            else:
                crash = await self._play(plan, span, admission)
            if crash is not None and crash.reason == ShortOfResources.reason:
                await self._wait_for_resources(crash, span, admission)
                continue  # plan again; the attempt under way (span, admission) goes on
            span = admission = None
            if crash is None:
                continue
            self.last_crash = LastCrash(crash.reason, crash.detail, self.wall())
            self.metrics.unhealthy.labels(channel=self.key, reason=crash.reason).inc()
            log.warning(
                "channel {} {}: {}", self.key, crash.reason, crash.detail, reason=crash.reason
            )
            admitted = await self._admit(crash)
            if admitted is None:
                span = self._span("channel.start")  # after a reset or the cool-down
                continue
            span, admission = admitted

    async def _admit(self, crash: Crash) -> tuple[Span, Admission] | None:
        """Through the restart policy; None when it refused and the channel failed."""
        log = logger.bind(channel=self.key)
        links = [Link(crash.link)] if crash.link is not None else None
        span = self._span("channel.restart", links, reason=crash.reason)
        if not self.timeline.started:
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
                log.error(
                    "channel {} failed: {} (last: {})", self.key, exc, crash.detail,
                    reason="budget_exhausted",
                )  # fmt: skip
            if not await self._failed(f"{exc} (last: {crash.reason}: {crash.detail})"):
                raise asyncio.CancelledError from None  # idle and on demand: stop here
            return None
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
        return span, admission

    async def _wait_for_resources(
        self, crash: Crash, span: Span | None, admission: Admission | None
    ) -> None:
        """A spawn failed for lack of file descriptors, memory or processes: the machine's
        fault, not the channel's, so no restart budget is spent. Try again after a backoff
        (viewers see slate meanwhile); one WARNING per episode, the API's `failure` says why.
        """
        self._shortage += 1
        if self._shortage == 1:
            logger.bind(channel=self.key).warning(
                "channel {} cannot start a process: {}; retrying", self.key, crash.detail,
                reason=crash.reason,
            )  # fmt: skip
        self.failure = crash.detail
        if admission is not None:
            admission.release()  # an in-flight slot is for starting, not for waiting
        try:
            await self.policy.defer(self._shortage)
        except BaseException:
            if span is not None:
                span.end()
            raise

    def _shortage_over(self) -> None:
        if self._shortage:
            logger.bind(channel=self.key).info(
                "channel {} is no longer short of resources ({} spawn(s) failed for lack of them)",
                self.key, self._shortage, reason=ShortOfResources.reason,
            )  # fmt: skip
            self._shortage = 0
            self.failure = None

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
        self.timeline = self._new_timeline()
        self.hub.discontinuity()
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
        self._failures = 0
        self.failure = None
        self.failed_at = None
        self.timeline = self._new_timeline()
        self._set_state(ChannelState.STARTING if again else ChannelState.STOPPED)
        return again

    # --- pacing and filler -------------------------------------------------------------

    async def _pace(self) -> None:
        interval = self.settings.stream.chunk_interval
        while True:
            await asyncio.sleep(interval)
            self._release()

    def _release(self) -> None:
        timeline = self.timeline
        data, kind = timeline.due()
        if data:
            published = self.hub.publish(data)
            self.last_output_at = self.clock()
            self.last_output_wall = self.wall()
            self.metrics.channel_output_bytes.labels(channel=self.key).inc(published)
            self.metrics.channel_last_output.labels(channel=self.key).set(self.last_output_wall)
            if kind == "content":
                self._set_state(ChannelState.RUNNING)
            elif kind == "slate":
                self._set_state(ChannelState.SLATE)
            elif self.state not in (ChannelState.RUNNING, ChannelState.SLATE):
                self._set_state(ChannelState.RUNNING)
        elif timeline.starving() and self._load_slate():
            # Nothing is ready (a late or stalled process): the slate, not a frozen
            # picture; the process's output resumes on its next keyframe.
            timeline.push(timeline.splicer.fill(FILL_STEP), "filler")
            self.metrics.channel_filler.labels(channel=self.key, reason="starved").inc(FILL_STEP)
            logger.bind(channel=self.key).debug(
                "channel {} has nothing ready: {:g}s of slate", self.key, FILL_STEP
            )

    def _load_slate(self) -> bool:
        splicer = self.timeline.splicer
        if not splicer.can_fill and self.slate is not None and self.slate.clip is not None:
            splicer.load_slate(self.slate.clip)
        return splicer.can_fill

    async def _fill(self, gap: Gap) -> bool:
        """Slate for a gap in the schedule (or no content at all); False when there is
        no slate clip to fill with."""
        timeline = self.timeline
        await timeline.wait_for_room()
        if not self._load_slate():
            if self.slate is not None:  # being made at start-up: it takes a moment
                await self.slate.wait(min(SLATE_WAIT, self.settings.stream.start_timeout))
            if not self._load_slate():
                return False
        seconds = FILL_STEP * 2
        if gap.until is not None:
            frame = 1 / self.settings.ffmpeg.fps
            seconds = min(seconds, max(frame, gap.until - timeline.schedule_time()))
        timeline.push(timeline.splicer.fill(seconds), "slate")
        reason = "no_content" if gap.until is None else "skipped"
        self.metrics.channel_filler.labels(channel=self.key, reason=reason).inc(seconds)
        return True

    # --- one process -------------------------------------------------------------------

    def _playable(self, item: MediaItem, at: float) -> bool:
        if item.path in self.skips and self._skip_until.get(item.path, float("inf")) > at:
            return False
        return Path(item.path).is_file()

    def _started(self, span: Span, first: Span | None, admission: Admission | None) -> None:
        if first is not None:
            first.end()
        span.set_attribute("exstream.outcome", "started")
        span.end()
        if admission is not None:
            admission.release()
            self.metrics.restarts.labels(channel=self.key, outcome="started").inc()

    def _argv(self, plan: ItemPlan | Gap) -> list[str]:
        log = logger.bind(channel=self.key)
        if isinstance(plan, ItemPlan):
            argv = item_argv(self.settings.ffmpeg, plan, self.key)
            log.debug(
                "channel {} plays {} from {:.2f}s for {} frames: {}",
                self.key, plan.item.path, plan.seek, plan.frames, shlex.join(argv),
                path=plan.item.path,
            )  # fmt: skip
            return argv
        seconds = None if plan.until is None else plan.until - self.timeline.schedule_time()
        argv = slate_argv(self.settings.ffmpeg, seconds, self.key)
        log.debug("channel {} plays slate for {}: {}", self.key,
                  "ever" if seconds is None else f"{seconds:.2f}s", shlex.join(argv))  # fmt: skip
        return argv

    async def _play(
        self, plan: ItemPlan | Gap, span: Span | None, admission: Admission | None
    ) -> Crash | None:
        """Run one process to its end; None when it ended as planned or its item was
        skipped, else why it crashed. `span` (a start or restart under way) ends at the
        first output, with `admission`'s slot released then."""
        run = ProcessRun(self.key, plan, pool=self.pool, timeline=self.timeline, clock=self.clock)
        first: list[Span] = []
        deferred = False  # the machine was short of resources: the attempt goes on

        def spawned(proc: ManagedProcess) -> None:
            self._shortage_over()
            self.run = run
            if span is not None:
                # Outside use_span here: name the parent, or the span would be a root.
                first.append(
                    self.tracer.start_span(
                        "channel.first_output",
                        context=trace.set_span_in_context(span),
                        attributes={"exstream.channel": self.key, "process.pid": proc.pid or 0},
                    )
                )

        def output() -> None:
            if span is not None:
                self._started(span, first[0] if first else None, admission)

        try:
            ended = await run.play(self._argv(plan), span, on_spawned=spawned, on_output=output)
        except PoolError as exc:
            if isinstance(exc, ShortOfResources):
                deferred = True
                return Crash(exc.reason, str(exc))
            if isinstance(exc, SpawnFailed):
                self._shortage_over()  # and a genuine failure now
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            return Crash(exc.reason, str(exc))
        except Exception as exc:
            # A bug or an I/O error must not kill the supervisor: it is a crash like any.
            logger.bind(channel=self.key).opt(exception=exc).error("channel {} error", self.key)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
            return Crash("error", repr(exc))
        finally:
            started = span is None or not span.is_recording()  # ended at the first output
            if admission is not None and not started and not deferred:
                admission.release()
                self.metrics.restarts.labels(channel=self.key, outcome="failed").inc()
            for open_span in [*first, span] if not (started or deferred) else ():
                if open_span is not None and open_span.is_recording():
                    open_span.set_status(Status(StatusCode.ERROR, "no output"))
                    open_span.end()
        return self._verdict(ended, plan)

    def _verdict(self, ended: Ended, plan: ItemPlan | Gap) -> Crash | None:
        code, produced, tail = ended.code, ended.produced, ended.tail
        log = logger.bind(channel=self.key)
        self.metrics.ffmpeg_exits.labels(channel=self.key, code_class=code_class(code)).inc()
        if ended.stalled is not None:
            return Crash("stalled", f"no output for too long, killed (code {code})", ended.stalled)
        if ended.replaced:
            log.info("channel {} process replaced on request", self.key)
            return None
        if not isinstance(plan, ItemPlan):
            if code == 0 and produced:
                return None
            detail = f"slate process exited with code {code} after {produced} frames"
            return Crash("exited", f"{detail}: {tail}" if tail else detail)
        path = plan.item.path
        fps = self.settings.ffmpeg.fps
        if code == 0 and produced >= plan.frames - fps:
            self._failures = 0
            return None
        if code < 0:
            detail = f"process killed by signal {-code} after {produced} frames"
            return Crash("exited", f"{detail}: {tail}" if tail else detail)
        if code == 0 and produced:
            skip = ItemSkip(path, "ended_early", f"{produced} of {plan.frames} frames")
            self._failures = 0
        elif code == 0 and plan.seek > 0:
            # Nothing after the seek point: the file is shorter than its scan said.
            skip = ItemSkip(path, "ended_early", f"nothing after {plan.seek:.1f} s")
            self._failures = 0
        else:
            reason = "failed" if code else "no_output"
            skip = ItemSkip(path, reason, tail or f"exit code {code}, {produced} frames")
            self._failures += 1
        # Skipped to where the schedule's entry ends; a rescan lets it try again.
        self.skips[path] = skip
        self._skip_until[path] = plan.entry_end if produced or plan.seek > 0 else float("inf")
        self.metrics.items_skipped.labels(channel=self.key, reason=skip.reason).inc()
        log.warning(
            "channel {} skips {} ({}): {}", self.key, path, skip.reason, skip.detail,
            path=path, reason=skip.reason,
        )  # fmt: skip
        if self._failures >= FAILURES_BEFORE_RESTART:
            self._failures = 0
            return Crash(
                "exited", f"{FAILURES_BEFORE_RESTART} items in a row failed: {skip.detail}"
            )
        return None
