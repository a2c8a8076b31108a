"""One channel's HLS: while it has HLS viewers, its hub output is cut into segments.

The feed is one more reader of the channel's hub, like an MPEG-TS viewer: the same
bytes, no second encoder, nothing on disk. It starts with the channel's first HLS
viewer and stops with its last; the playlist then lists nothing (its segments stay
fetchable a while, for players that read it just before), and the next viewer's
segments start a new run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import secrets
import time

from loguru import logger

from service.channels import MOVED, Channel
from service.clock import Clock
from service.config import Settings
from service.errors import ChannelUnavailable, ServiceStopping
from service.hls.playlist import MediaPlaylist, Segment
from service.hls.segmenter import TICKS, Cut, Segmenter
from service.hub import ViewerDropped
from telemetry.metrics import Metrics

RETRY = 1.0  # seconds between tries to read a channel that could not start


def new_run() -> str:
    """An id no earlier run had, in this process or an earlier one: segment URLs never
    change meaning, so caches may keep them."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(3)}"


class HlsFeed:
    def __init__(
        self,
        channel: Channel,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.metrics = metrics
        self.wall = wall
        self.key = str(channel.number)
        hls = settings.hls
        self.target = math.ceil(hls.segment_seconds)
        self.playlist = MediaPlaylist(self.target, hls.window, run=new_run, clock=clock)
        self.failure: str | None = None  # why the channel gives no segments, while it does not
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None  # frees the retired segments
        # Read at each scrape: segments leave memory with time, not only with events.
        metrics.hls_segments.labels(channel=self.key).set_function(self._held)
        metrics.hls_segment_bytes.labels(channel=self.key).set_function(self._held_bytes)
        self._changed = asyncio.Event()
        fps = settings.ffmpeg.fps
        frame = round(TICKS / fps)
        self._segmenter_args = (
            round(hls.segment_seconds * TICKS),
            max(1, round(settings.ffmpeg.gop_seconds * fps)) * frame,
            frame,
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            # A fresh context: the feed outlives the request that started it (and its trace).
            self._task = asyncio.create_task(
                self._feed(), name=f"hls-{self.key}", context=contextvars.Context()
            )

    def stop(self) -> None:
        """Stop cutting (the last HLS viewer left); the segments go once nobody could
        still ask for them."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._retire()
        self.failure = None

    def _retire(self) -> None:
        """List nothing more; free the segments' memory once nobody may ask for them,
        whether or not anything asks before."""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = self.playlist.retire()
        self._expiry = asyncio.get_running_loop().call_later(
            delay + 0.1, self.playlist.expire, context=contextvars.Context()
        )

    async def close(self, timeout: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(task, return_exceptions=True)

    async def wait_for_segment(self, timeout: float) -> None:
        """Until the playlist lists a segment; ChannelUnavailable when the channel
        cannot give one within `timeout`."""
        number = self.channel.number
        try:
            async with asyncio.timeout(timeout):
                while not self.playlist.segments:
                    if (failure := self.channel.failure_now()) is not None:
                        raise ChannelUnavailable(number, failure)
                    await self._changed.wait()
        except TimeoutError:
            reason = self.failure or f"no segment within {timeout:g}s"
            raise ChannelUnavailable(number, reason) from None

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _feed(self) -> None:
        runner, hub = self.channel.runner, self.channel.hub
        log = logger.bind(channel=self.key)
        while True:
            try:
                await runner.ensure_started()
                await runner.wait_ready(self.settings.stream.start_timeout)
                sub = hub.subscribe()
            except (ServiceStopping, ViewerDropped):
                return  # shutting down
            except ChannelUnavailable as exc:
                self.failure = exc.reason
                self._notify()
                await asyncio.sleep(RETRY)
                continue
            self.failure = None
            self.playlist.break_run()
            segmenter = Segmenter(*self._segmenter_args)
            spent = 0.0
            try:
                async for batch in sub.batches():
                    began = time.perf_counter()
                    cuts = segmenter.feed(batch)
                    spent += time.perf_counter() - began
                    for cut in cuts:
                        self.metrics.hls_segment_build.observe(spent)
                        spent = 0.0
                        self._add(cut)
                return  # the hub closed: shutting down
            except ViewerDropped as exc:
                self.failure = exc.reason
                self._notify()
                if exc.reason == MOVED:
                    # Its players go to the instance that runs it now: starting it again
                    # here would run it twice. A request sent here again starts a new feed
                    # (with a new run of segments).
                    log.info("channel {} runs on another instance now: no HLS here", self.key)
                    self._retire()
                    return
                log.warning(
                    "HLS of channel {} lost the stream ({}): a new run", self.key, exc.reason
                )
            finally:
                hub.unsubscribe(sub)

    def _add(self, cut: Cut) -> Segment:
        if cut.discontinuity:
            self.playlist.break_run()
        segment = self.playlist.add(
            cut.data, cut.duration / TICKS, ended_at=self.wall(), codec=cut.codec
        )
        self._notify()
        return segment

    def _held(self) -> float:
        return len(self.playlist.held)

    def _held_bytes(self) -> float:
        return sum(len(s.data) for s in self.playlist.held)
