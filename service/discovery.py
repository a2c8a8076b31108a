"""HDHomeRun discovery on UDP (port 65001): how Plex, Jellyfin's "Detect" and
`hdhomerun_config discover` find tuners on the network.

A packet is a big-endian type and payload length, the payload, and a CRC-32 of both
(little-endian). A discovery payload is a list of tag-length-value fields; a request
names the device type and id it looks for (or the wildcard), and the answer gives the
device's type, id, tuner count and the URLs of its HTTP interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from loguru import logger

from service import deviceid
from service.config import Settings
from service.exposure import is_loopback
from service.tuner import DEVICE_AUTH, Tuner
from telemetry.metrics import Metrics

DISCOVER_REQ = 0x0002
DISCOVER_RPY = 0x0003
TAG_DEVICE_TYPE = 0x01
TAG_DEVICE_ID = 0x02
TAG_TUNER_COUNT = 0x10
TAG_LINEUP_URL = 0x27
TAG_BASE_URL = 0x2A
TAG_DEVICE_AUTH = 0x2B
TAG_MULTI_TYPE = 0x2D  # newer clients ask for several device types at once
DEVICE_TYPE_TUNER = 0x00000001
WILDCARD = 0xFFFFFFFF
MAX_PACKET = 1460
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

Field = tuple[int, bytes]


class MalformedPacket(ValueError):
    """Not a well-formed HDHomeRun packet: too short, a bad CRC, a field past the end."""


def encode(packet_type: int, fields: list[Field]) -> bytes:
    payload = b"".join(_tag_length(tag, len(value)) + value for tag, value in fields)
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes")
    frame = struct.pack(">HH", packet_type, len(payload)) + payload
    return frame + struct.pack("<I", zlib.crc32(frame))


def decode(packet: bytes) -> tuple[int, list[Field]]:
    """The packet's type and fields; MalformedPacket when it is not a well-formed one."""
    if len(packet) < 8:
        raise MalformedPacket(f"{len(packet)} bytes")
    packet_type, length = struct.unpack_from(">HH", packet)
    if len(packet) != 4 + length + 4:
        raise MalformedPacket(f"{len(packet)} bytes for a payload of {length}")
    (crc,) = struct.unpack_from("<I", packet, 4 + length)
    if zlib.crc32(packet[: 4 + length]) != crc:
        raise MalformedPacket("bad CRC")
    return packet_type, list(_fields(packet[4 : 4 + length]))


def _tag_length(tag: int, length: int) -> bytes:
    if length <= 0x7F:
        return bytes((tag, length))
    if length > 0x7FFF:
        raise ValueError(f"field of {length} bytes")
    return bytes((tag, (length & 0x7F) | 0x80, length >> 7))


def _fields(payload: bytes) -> Iterator[Field]:
    position = 0
    while position < len(payload):
        if position + 2 > len(payload):
            raise MalformedPacket("a field's header past the end")
        tag, length = payload[position], payload[position + 1]
        position += 2
        if length & 0x80:
            if position >= len(payload):
                raise MalformedPacket("a field's length past the end")
            length = (length & 0x7F) | (payload[position] << 7)
            position += 1
        if position + length > len(payload):
            raise MalformedPacket("a field's value past the end")
        yield tag, payload[position : position + length]
        position += length


@dataclass(frozen=True, slots=True)
class DiscoverRequest:
    device_types: frozenset[int]  # empty: any
    device_id: int  # WILDCARD: any

    @classmethod
    def of(cls, packet: bytes) -> DiscoverRequest:
        """The discovery request in `packet`; MalformedPacket when it is not one."""
        packet_type, fields = decode(packet)
        if packet_type != DISCOVER_REQ:
            raise MalformedPacket(f"packet type {packet_type:#06x}")
        types: set[int] = set()
        device_id = WILDCARD
        for tag, value in fields:
            if tag in (TAG_DEVICE_TYPE, TAG_MULTI_TYPE):
                if not value or len(value) % 4:
                    raise MalformedPacket(f"a device type of {len(value)} bytes")
                types.update(struct.unpack(f">{len(value) // 4}I", value))
            elif tag == TAG_DEVICE_ID:
                if len(value) != 4:
                    raise MalformedPacket(f"a device id of {len(value)} bytes")
                (device_id,) = struct.unpack(">I", value)
        return cls(frozenset(types), device_id)

    def wants(self, device_id: int) -> bool:
        """Whether a tuner with `device_id` answers this request."""
        type_matches = not self.device_types or bool(
            self.device_types & {DEVICE_TYPE_TUNER, WILDCARD}
        )
        return type_matches and self.device_id in (WILDCARD, device_id)


def answer(tuner: Tuner, base_url: str) -> bytes:
    fields: list[Field] = [
        (TAG_DEVICE_TYPE, struct.pack(">I", DEVICE_TYPE_TUNER)),
        (TAG_DEVICE_ID, struct.pack(">I", tuner.device_id)),
        (TAG_TUNER_COUNT, bytes((min(tuner.tuner_count, 255),))),
        (TAG_DEVICE_AUTH, DEVICE_AUTH.encode()),
        (TAG_BASE_URL, base_url.encode()),
        (TAG_LINEUP_URL, f"{base_url}/lineup.json".encode()),
    ]
    return encode(DISCOVER_RPY, fields)


def local_address_towards(remote: str) -> str:
    """This machine's address that a packet to `remote` leaves from (a route lookup:
    connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((remote, 9))
        address: str = probe.getsockname()[0]
        return address


class BaseUrls:
    """The HTTP base URL to give a requester: one it can reach, or None."""

    def __init__(
        self,
        settings: Settings,
        local_address: Callable[[str], str] = local_address_towards,
    ) -> None:
        server = settings.server
        self.public_url = server.public_url.rstrip("/") if server.public_url else None
        self.host = server.host
        self.port = server.port
        self.bound = settings.hdhomerun.discovery_address
        self.local_address = local_address

    def for_requester(self, remote: str) -> str | None:
        if self.public_url is not None:
            return self.public_url
        try:
            local = self.local_address(remote) if self.bound == "0.0.0.0" else self.bound
        except OSError:  # no route back
            return None
        host = self.host
        if host in WILDCARD_HOSTS:
            host = local
        # Served on loopback only: only a requester on this machine can reach it.
        elif is_loopback(host) and not (is_loopback(remote) or remote == local):
            return None
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


class Responder(asyncio.DatagramProtocol):
    """Answers discovery requests for this tuner; ignores everything else."""

    def __init__(self, tuner: Tuner, urls: BaseUrls, metrics: Metrics) -> None:
        self.tuner = tuner
        self.urls = urls
        self.metrics = metrics
        self.transport: asyncio.DatagramTransport | None = None
        # Set while answers wait in the transport's buffer beyond its high-water mark
        # (a flood): answers are dropped instead of queued without bound.
        self.paused = False
        self.unreachable_told = False  # the first unanswerable request is logged, once
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, but is one in all but name.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.metrics.discovery_requests.labels(outcome=self._handle(data, addr)).inc()

    def _handle(self, data: bytes, addr: tuple[str | object, ...]) -> str:
        if len(data) > MAX_PACKET:
            return "malformed"
        try:
            request = DiscoverRequest.of(data)
        except MalformedPacket:
            return "malformed"
        if not request.wants(self.tuner.device_id):
            return "other_device"
        remote = str(addr[0])
        base_url = self.urls.for_requester(remote)
        if base_url is None:
            if not self.unreachable_told:
                self.unreachable_told = True
                logger.info(
                    "HDHomeRun discovery request from {} not answered: it cannot reach"
                    " http://{}:{} (set [server] host or public_url to an address it"
                    " reaches); later ones are only counted",
                    remote, self.urls.host, self.urls.port,
                )  # fmt: skip
            return "unreachable"
        if self.transport is None or self.paused:
            return "dropped"
        self.transport.sendto(answer(self.tuner, base_url), addr)
        return "answered"

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer (the requester left): nothing to do.
        logger.debug("HDHomeRun discovery: {}", exc)


async def start_discovery(settings: Settings, tuner: Tuner, metrics: Metrics) -> Discovery | None:
    """Listen for discovery requests; None, with one WARNING, when the port cannot be
    had (the HTTP interface is served either way)."""
    hdhomerun = settings.hdhomerun
    where = f"{hdhomerun.discovery_address}:{hdhomerun.discovery_port}"
    if settings.server.port == 0 and not settings.server.public_url:
        logger.warning(
            "HDHomeRun discovery is off: [server] port = 0 leaves the HTTP port unknown"
            " until start; set a port or [server] public_url"
        )
        return None
    loop = asyncio.get_running_loop()
    # The socket is bound here, not by create_datagram_endpoint: uvloop leaves a transport
    # unclosed when its own bind fails (a port held by another program).
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((hdhomerun.discovery_address, hdhomerun.discovery_port))
        sock.setblocking(False)
        transport, responder = await loop.create_datagram_endpoint(
            lambda: Responder(tuner, BaseUrls(settings), metrics), sock=sock
        )
    except OSError as exc:
        sock.close()
        hint = " (another HDHomeRun service?)" if exc.errno == errno.EADDRINUSE else ""
        logger.warning(
            "HDHomeRun discovery is off: cannot listen on UDP {}: {}{}; clients can still"
            " add the tuner by its address",
            where, exc.strerror or exc, hint,
        )  # fmt: skip
        return None
    logger.info(
        "HDHomeRun discovery on UDP {} (device {})",
        where, deviceid.text(tuner.device_id),
    )  # fmt: skip
    return Discovery(transport, responder)


class Discovery:
    """The listening socket, until `close`."""

    def __init__(self, transport: asyncio.BaseTransport, responder: Responder) -> None:
        self.transport = transport
        self.responder = responder

    async def close(self, timeout: float = 1.0) -> None:
        """Stop answering (no client is sent to a service that is stopping) and wait,
        briefly, until the socket is closed."""
        self.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.responder.closed.wait()
