"""Instances that share one configuration, each running its share of the channels.

Ownership is rendezvous hashing: each channel ranks the members by a hash of (member,
channel) and is run by the first live one, so a member that leaves moves only its own
channels, and every instance that sees the same live members agrees without talking.
A peer is live while its `/readyz` answers 200; it counts as down after `down_after`
failed checks in a row, and as up again at its first good one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from loguru import logger

from service.clock import Sleep
from service.config import ClusterSettings, Settings
from service.xmltv import instance_id
from telemetry.metrics import Metrics

# The paths that belong to one channel: its streams (MPEG-TS, HLS playlists and
# segments), its status and its restart.
CHANNEL_PATH = re.compile(
    r"^/(?:stream/(?P<stream>[0-9]+)(?:[./].*)?|api/channels/(?P<api>[0-9]+)(?:/restart)?)$"
)
OWNER_HEADER = "x-exstream-owner"
OWNER_ADDRESS_HEADER = "x-exstream-owner-address"


def channel_of_path(path: str) -> int | None:
    """The channel a request path belongs to, or None."""
    match = CHANNEL_PATH.match(path)
    if match is None:
        return None
    return int(match["stream"] or match["api"])


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    url: str  # "" for a lone instance: nobody else reaches it

    @property
    def address(self) -> str:
        """host:port, as a proxy names an upstream."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 80}"


def rendezvous(channel: int, names: Iterable[str]) -> list[str]:
    """The members in the channel's order of preference (highest random weight first)."""

    def weight(name: str) -> bytes:
        return hashlib.sha256(f"{name}\0{channel}".encode()).digest()

    return sorted(names, key=weight, reverse=True)


class Membership:
    """Who is live, and so who runs each channel."""

    def __init__(
        self, settings: ClusterSettings, channels: Iterable[int], metrics: Metrics
    ) -> None:
        self.me = settings.instance
        if settings.enabled:
            self.members = tuple(
                Member(n, u) for n, u in zip(settings.members, settings.peers, strict=True)
            )
        else:
            self.members = (Member(self.me, ""),)
        self.by_name = {m.name: m for m in self.members}
        self.channels = tuple(channels)
        self.metrics = metrics
        self.live = {m.name: True for m in self.members}
        metrics.instance_info.labels(member=self.me).set(1)
        for member in self.members:
            if member.name != self.me:
                metrics.cluster_peer_up.labels(peer=member.name).set(1)
        self._count()

    @property
    def peers(self) -> list[Member]:
        return [m for m in self.members if m.name != self.me]

    def owner(self, channel: int) -> Member:
        ranked = rendezvous(channel, self.by_name)
        name = next((n for n in ranked if self.live[n] or n == self.me), self.me)
        return self.by_name[name]

    def owns(self, channel: int) -> bool:
        return self.owner(channel).name == self.me

    def owned(self) -> set[int]:
        return {c for c in self.channels if self.owns(c)}

    def mark(self, name: str, live: bool) -> tuple[set[int], set[int]]:
        """Set a peer's liveness; the channels this instance gained and lost by it."""
        before = self.owned()
        self.live[name] = live
        self.metrics.cluster_peer_up.labels(peer=name).set(int(live))
        after = self.owned()
        self._count()
        return after - before, before - after

    def _count(self) -> None:
        for channel in self.channels:
            owned = self.owns(channel)
            self.metrics.channel_owned.labels(channel=str(channel)).set(int(owned))


Probe = Callable[[str, float], Awaitable[str | None]]


async def probe_ready(url: str, timeout: float) -> str | None:
    """None when `url`/readyz answers 200, else why not (a status line read by hand: the
    service needs no HTTP client but this)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            request = f"GET /readyz HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            status = (await reader.readline()).split()
    except TimeoutError:
        return f"no answer in {timeout:g}s"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    if len(status) < 2 or status[1] != b"200":
        return f"/readyz answered {b' '.join(status[1:]).decode(errors='replace') or 'nothing'}"
    return None


class PeerMonitor:
    """Checks every peer's /readyz each `check_interval`; on a change of who is live,
    calls `on_change` (which starts and stops channels)."""

    def __init__(
        self,
        membership: Membership,
        settings: ClusterSettings,
        on_change: Callable[[], Awaitable[None]],
        *,
        probe: Probe = probe_ready,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.membership = membership
        self.settings = settings
        self.on_change = on_change
        self.probe = probe
        self.sleep = sleep
        self.failures = {m.name: 0 for m in membership.peers}

    async def run(self) -> None:
        while True:
            await self.check()
            await self.sleep(self.settings.check_interval)

    async def check(self) -> None:
        peers = self.membership.peers
        timeout = self.settings.check_timeout
        results = await asyncio.gather(*(self.probe(p.url, timeout) for p in peers))
        changed = False
        for peer, problem in zip(peers, results, strict=True):
            changed |= self._record(peer, problem)
        if changed:
            await self.on_change()

    def _record(self, peer: Member, problem: str | None) -> bool:
        membership = self.membership
        was_live = membership.live[peer.name]
        self.failures[peer.name] = 0 if problem is None else self.failures[peer.name] + 1
        if problem is None and not was_live:
            gained, lost = membership.mark(peer.name, True)
            logger.info(
                "peer {} is up: channels {} move back to it from here",
                peer.name, _numbers(lost), peer=peer.name, channels=sorted(lost),
            )  # fmt: skip
            return True
        if (
            problem is not None
            and was_live
            and self.failures[peer.name] >= self.settings.down_after
        ):
            gained, lost = membership.mark(peer.name, False)
            logger.warning(
                "peer {} is down ({}): channels {} run here now",
                peer.name, problem, _numbers(gained), peer=peer.name, channels=sorted(gained),
            )  # fmt: skip
            return True
        return False


def _numbers(channels: set[int]) -> str:
    return ", ".join(str(c) for c in sorted(channels)) or "(none)"


def xmltv_instance(settings: Settings) -> str:
    """The middle part of XMLTV channel ids. Members share it (their playlists and guides
    must agree), so it comes from their names, not from a data directory of their own."""
    if settings.guide.instance or not settings.cluster.enabled:
        return instance_id(settings)
    names = "\0".join(sorted(settings.cluster.members))
    return hashlib.sha256(names.encode()).hexdigest()[:8]
