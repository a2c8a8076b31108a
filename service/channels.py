"""The set of channels: media scans, playout rebuilds, on-demand starts and idle stops."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import Tracer

from service.clock import Clock
from service.config import ChannelConfig, Settings
from service.errors import (
    ChannelNotFound,
    ChannelNotRunning,
    ChannelUnavailable,
    ServiceStopping,
)
from service.hub import Hub, Subscription, ViewerDropped
from service.media import MediaItem, MediaScanner, Skipped
from service.playout import Entry, ItemPlan, Playout
from service.pool import ProcessPool
from service.restart import RestartPolicy
from service.runner import ChannelRunner, ChannelState, ItemSkip, LastCrash
from service.slate import SlateClip
from telemetry.metrics import Metrics

# Why viewers were ended when another instance of the cluster took the channel over.
MOVED = "moved"


@dataclass(frozen=True)
class ProcessView:
    """The ffmpeg of the moment: what it plays (None: the slate) and since when."""

    pid: int
    uptime: float
    plan: ItemPlan | None


@dataclass(frozen=True)
class ChannelView:
    """One reading of a channel, for the API and the pages. Made in one go on the event
    loop, so it is never half-updated: a state and the process it names belong together."""

    number: int
    config: ChannelConfig
    state: ChannelState
    viewers: int
    uptime: float | None  # since the channel's start; process changes do not reset it
    process: ProcessView | None  # None between two processes
    restarts: int
    failure: str | None
    last_output_wall: float | None
    current: Entry | None
    following: Entry | None  # what plays after `current`
    last_crash: LastCrash | None  # kept after the channel healed
    media_items: int
    skipped_media: tuple[Skipped, ...]
    skipped_items: tuple[ItemSkip, ...]
    workahead: float
    horizon: float

    def known_paths(self) -> list[str]:
        """Every media path the view may mention: to cut out of texts shown without paths."""
        entries = [e for e in (self.current, self.following) if e is not None]
        return [
            *self.config.media,
            *(s.path for s in self.skipped_media),
            *(s.path for s in self.skipped_items),
            *(e.item.path for e in entries),
        ]


@dataclass(eq=False)
class Channel:
    """One channel and what the API may see and do of it (`view`, `guide`, `restart`);
    its parts (runner, hub, playout) are the service's own."""

    config: ChannelConfig
    hub: Hub
    playout: Playout
    runner: ChannelRunner
    skipped: list[Skipped] = field(default_factory=list)
    viewers: int = 0
    idle_stop: asyncio.Task[None] | None = None
    empty_reported: bool = False  # "nothing to play" was logged: once, not every rescan

    @property
    def number(self) -> int:
        return self.config.number

    @property
    def items(self) -> tuple[MediaItem, ...]:
        """The playable media of the last scan, in schedule order."""
        return self.playout.items

    def guide(self, start: float, end: float) -> list[Entry]:
        """The schedule's entries between two wall-clock times."""
        return self.playout.guide(start, end)

    def view(self, now: float) -> ChannelView:
        """What the channel is doing at wall-clock time `now`."""
        runner = self.runner
        process = None
        pid, spawned_at = runner.pid, runner.spawned_at
        if pid is not None and spawned_at is not None:
            process = ProcessView(pid, runner.clock() - spawned_at, runner.item)
        uptime = None
        if runner.running and runner.started_at is not None:
            uptime = runner.clock() - runner.started_at
        current = self.playout.entry_at(now)
        return ChannelView(
            number=self.number,
            config=self.config,
            state=runner.state,
            viewers=self.viewers,
            uptime=uptime,
            process=process,
            restarts=runner.restarts,
            failure=runner.failure,
            last_output_wall=runner.last_output_wall,
            current=current,
            following=None if current is None else self.playout.entry_at(current.end),
            last_crash=runner.last_crash,
            media_items=len(self.playout.items),
            skipped_media=tuple(self.skipped),
            skipped_items=tuple(runner.skips.values()),
            workahead=runner.workahead,
            horizon=self.playout.horizon(now),
        )

    def failure_now(self) -> str | None:
        """Why the channel cannot be watched now (it failed), else None."""
        runner = self.runner
        if runner.state == ChannelState.FAILED:
            return runner.failure or "failed"
        return None

    def restart(self) -> str:
        """The operator's restart: reset a failed channel ("reset"), or replace a running
        one's process now, outside the budget ("restarted"); ChannelNotRunning otherwise."""
        runner = self.runner
        if runner.state == ChannelState.FAILED:
            runner.reset()
            return "reset"
        if runner.running and runner.restart_now():
            return "restarted"
        raise ChannelNotRunning(self.number)


class ChannelRegistry:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: ProcessPool,
        policy: RestartPolicy,
        scanner: MediaScanner,
        metrics: Metrics,
        tracer: Tracer | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        slate: SlateClip | None = None,
        owner: Callable[[int], str | None] = lambda number: None,
    ) -> None:
        self.settings = settings
        self.owner = owner  # the other instance that runs a channel; None: this one
        self.scanner = scanner
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("exstream")
        self.wall = wall
        self.closing = False
        self._stopping: set[asyncio.Task[None]] = set()
        self.channels: dict[int, Channel] = {}
        epoch = settings.playout.epoch.timestamp()
        for config in settings.channels:
            key = str(config.number)
            hub = Hub(
                settings.stream.buffer_bytes,
                on_drop=functools.partial(self._dropped, key),
            )
            playout = Playout(
                epoch, settings.playout.min_horizon, seed=config.seed or 0, shuffle=config.shuffle
            )
            runner = ChannelRunner(
                config, settings, hub=hub, playout=playout, pool=pool, policy=policy,
                metrics=metrics, slate=slate, tracer=self.tracer, clock=clock, wall=wall,
            )  # fmt: skip
            self.channels[config.number] = Channel(config, hub, playout, runner)
            metrics.channel_viewers.labels(channel=key).set(0)

    def _dropped(self, key: str, reason: str) -> None:
        self.metrics.viewer_drops.labels(channel=key, reason=reason).inc()
        logger.bind(channel=key).warning("viewer of channel {} dropped: {}", key, reason)

    def runners(self) -> list[ChannelRunner]:
        return [c.runner for c in self.channels.values()]

    def get(self, number: int) -> Channel:
        channel = self.channels.get(number)
        if channel is None:
            raise ChannelNotFound(str(number))
        return channel

    # --- media and playout ---------------------------------------------------------------

    async def refresh(self, channel: Channel) -> str:
        """Rescan the channel's media and rebuild its playout; returns the rebuild result."""
        key = str(channel.number)
        with self.tracer.start_as_current_span(
            "media.scan", attributes={"exstream.channel": key}
        ) as span:
            scan = await self.scanner.scan(channel.config.media)
            span.set_attribute("exstream.items", len(scan.items))
            span.set_attribute("exstream.skipped", len(scan.skipped))
        known = {s.path for s in channel.skipped}
        for skipped in scan.skipped:
            if skipped.path not in known:
                self.metrics.media_skipped.labels(reason=skipped.reason).inc()
                logger.bind(channel=key).warning(
                    "skipping {} ({}): {}", skipped.path, skipped.reason, skipped.detail,
                    path=skipped.path, reason=skipped.reason,
                )  # fmt: skip
        channel.skipped = scan.skipped
        with self.tracer.start_as_current_span(
            "playout.rebuild", attributes={"exstream.channel": key}
        ) as span:
            result = channel.playout.rebuild(scan.items, self.wall())
            horizon = channel.playout.horizon(self.wall())
            span.set_attribute("exstream.result", result)
            span.set_attribute("exstream.horizon_seconds", horizon)
        self.metrics.playout_rebuilds.labels(channel=key, result=result).inc()
        self.metrics.playout_horizon.labels(channel=key).set(horizon)
        self.metrics.media_items.labels(channel=key).set(len(scan.items))
        if result == "empty":
            if channel.playout.items or not channel.empty_reported:
                logger.bind(channel=key).warning("channel {} has nothing to play: slate", key)
            channel.empty_reported = True
        else:
            channel.empty_reported = False
            channel.runner.content_changed()
        return result

    async def refresh_all(self) -> None:
        for channel in self.channels.values():
            await self.refresh(channel)

    async def run_rebuilds(self) -> None:
        while True:
            await asyncio.sleep(self.settings.playout.rebuild_interval)
            for channel in self.channels.values():
                try:
                    await self.refresh(channel)
                except Exception:
                    self.metrics.playout_rebuilds.labels(
                        channel=str(channel.number), result="error"
                    ).inc()
                    logger.bind(channel=str(channel.number)).exception("playout rebuild failed")

    # --- viewers -------------------------------------------------------------------------

    def start_always_on(self) -> None:
        for channel in self.channels.values():
            if channel.config.always_on and self.owner(channel.number) is None:
                channel.runner.start()

    async def rebalance(self) -> None:
        """After the cluster's live members changed: stop the channels another instance
        runs now (their viewers reconnect to it), start the always-on ones run here."""
        for channel in self.channels.values():
            elsewhere = self.owner(channel.number)
            if elsewhere is None or not channel.runner.running or self.closing:
                continue
            logger.bind(channel=str(channel.number)).info(
                "channel {} now runs on {}: stopping it here", channel.number, elsewhere,
                peer=elsewhere,
            )  # fmt: skip
            if channel.idle_stop is not None:
                channel.idle_stop.cancel()
                channel.idle_stop = None
            channel.hub.end_viewers(MOVED)
            await channel.runner.stop()
        if not self.closing:
            self.start_always_on()

    def admit(self, number: int) -> Channel:
        """The channel a viewer asks for, if it may watch it now: ChannelNotFound,
        ServiceStopping (shutting down) or ChannelUnavailable (failed) otherwise."""
        channel = self.get(number)
        if self.closing:
            raise ServiceStopping()
        if (failure := channel.failure_now()) is not None:
            raise ChannelUnavailable(number, failure)
        return channel

    @asynccontextmanager
    async def watch(self, number: int) -> AsyncIterator[Subscription]:
        """A viewer's hold on a channel: starts it on demand, stops it after the idle grace."""
        channel = self.admit(number)
        self.add_viewer(channel)
        try:
            await channel.runner.ensure_started()
            await channel.runner.wait_ready(self.settings.stream.start_timeout)
            if self.closing:
                raise ServiceStopping()
            try:
                sub = channel.hub.subscribe()
            except ViewerDropped:
                raise ServiceStopping() from None
            try:
                yield sub
            finally:
                channel.hub.unsubscribe(sub)
        finally:
            self.remove_viewer(channel)

    def add_viewer(self, channel: Channel) -> None:
        """One more viewer holds the channel: a pending idle stop is called off."""
        channel.viewers += 1
        self._viewers_changed(channel)

    def remove_viewer(self, channel: Channel) -> None:
        """A viewer left: the last one's leaving starts the idle grace."""
        channel.viewers -= 1
        self._viewers_changed(channel)

    def _viewers_changed(self, channel: Channel) -> None:
        self.metrics.channel_viewers.labels(channel=str(channel.number)).set(channel.viewers)
        if channel.viewers > 0:
            if channel.idle_stop is not None:
                channel.idle_stop.cancel()
                channel.idle_stop = None
        elif not channel.config.always_on and not self.closing and channel.idle_stop is None:
            # A fresh context: the stop belongs to no viewer's request (nor its trace).
            channel.idle_stop = asyncio.create_task(
                self._stop_when_idle(channel), context=contextvars.Context()
            )

    async def _stop_when_idle(self, channel: Channel) -> None:
        await asyncio.sleep(channel.config.idle_grace)
        # From here on a new viewer does not cancel this task: it waits for the stop to
        # finish (the runner's lifecycle lock) and then starts the channel afresh.
        channel.idle_stop = None
        task = asyncio.current_task()
        assert task is not None
        self._stopping.add(task)
        try:
            # A failed channel stays failed (and refuses viewers) until its cool-down.
            runner = channel.runner
            if channel.viewers == 0 and runner.running and runner.state != ChannelState.FAILED:
                logger.bind(channel=str(channel.number)).info(
                    "channel {} idle for {:g}s: stopping", channel.number, channel.config.idle_grace
                )
                await channel.runner.stop()
        finally:
            self._stopping.discard(task)

    # --- shutdown ------------------------------------------------------------------------

    def close_hubs(self) -> None:
        """End every viewer's stream (the first step of shutdown)."""
        self.closing = True
        for channel in self.channels.values():
            channel.hub.close()

    async def stop_all(self, timeout: float) -> None:
        self.closing = True
        for channel in self.channels.values():
            if channel.idle_stop is not None:
                channel.idle_stop.cancel()
        await asyncio.gather(*(c.runner.stop(timeout, close=True) for c in self.channels.values()))
