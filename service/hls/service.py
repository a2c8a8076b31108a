"""HLS for every channel: sessions as viewers, and the feeds they keep going."""

from __future__ import annotations

import asyncio
import math
import secrets
import time

from loguru import logger
from prometheus_client import Counter

from service.channels import ChannelRegistry
from service.clock import Clock
from service.config import Settings
from service.errors import ChannelUnavailable
from service.hls.errors import HlsUnavailable
from service.hls.feed import HlsFeed
from service.hls.sessions import Sessions
from telemetry.metrics import Metrics

# A live player reloads the playlist about once per target duration: a session that
# skipped this many reloads has left.
SESSION_TARGETS = 3


class HlsService:
    def __init__(
        self,
        registry: ChannelRegistry,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.target = math.ceil(settings.hls.segment_seconds)
        self.feeds = {
            number: HlsFeed(channel, settings, metrics, clock=clock, wall=wall)
            for number, channel in registry.channels.items()
        }
        self.viewers = dict.fromkeys(self.feeds, 0)
        self._counters: dict[tuple[int, str, str], Counter] = {}
        self.sessions = Sessions(
            SESSION_TARGETS * self.target,
            settings.hls.max_sessions,
            joined=self._joined,
            left=self._left,
        )

    def feed(self, number: int) -> HlsFeed:
        self.registry.get(number)  # ChannelNotFound
        return self.feeds[number]

    def new_session(self) -> str:
        return secrets.token_urlsafe(16)

    def check(self, number: int) -> None:
        """The refusals a playlist request would get, without starting anything (HEAD)."""
        try:
            self.registry.admit(number)
        except ChannelUnavailable as exc:
            raise HlsUnavailable(number, exc.reason, self.target) from None

    async def watch(self, number: int, session: str) -> HlsFeed:
        """A playlist request of `session`: the channel's feed once it lists a segment."""
        self.check(number)
        self.sessions.touch(number, session)
        feed = self.feeds[number]
        feed.start()  # if it stopped meanwhile (the channel ran on another instance a while)
        if feed.playlist.segments:
            return feed  # a reload: nothing to wait for
        try:
            await feed.wait_for_segment(self.settings.stream.start_timeout)
        except ChannelUnavailable as exc:
            raise HlsUnavailable(number, exc.reason, self.target) from None
        return feed

    def count(self, number: int, kind: str, outcome: str) -> None:
        """One more HLS request of `kind` (playlist, multivariant, segment) on a channel."""
        key = (number, kind, outcome)
        counter = self._counters.get(key)
        if counter is None:
            requests = self.metrics.hls_requests
            counter = self._counters[key] = requests.labels(
                channel=str(number), kind=kind, outcome=outcome
            )
        counter.inc()

    def _joined(self, number: int) -> None:
        self.registry.add_viewer(self.registry.channels[number])
        self.viewers[number] += 1
        self.metrics.hls_viewers.labels(channel=str(number)).set(self.viewers[number])
        if self.viewers[number] == 1:
            logger.bind(channel=str(number)).info(
                "channel {} has an HLS viewer: cutting segments", number
            )
            self.feeds[number].start()

    def _left(self, number: int) -> None:
        self.registry.remove_viewer(self.registry.channels[number])
        self.viewers[number] -= 1
        self.metrics.hls_viewers.labels(channel=str(number)).set(self.viewers[number])
        if self.viewers[number] == 0:
            logger.bind(channel=str(number)).info(
                "channel {} has no HLS viewer left: no more segments cut", number
            )
            self.feeds[number].stop()

    async def close(self, timeout: float) -> None:
        self.sessions.close()
        await asyncio.gather(*(feed.close(timeout) for feed in self.feeds.values()))
