"""uvicorn's httptools protocol, bounded against hostile clients.

A request head may take `max_header_bytes` and `header_timeout`, counted from the
connection (or from the first byte of a later request on a kept-alive one); a
connection that sends nothing in that time is closed as idle; at most
`max_connections` are served at once. Only the request head is watched: nothing runs
per body chunk or per response send.

Each request's scope carries the `exstream.abort` extension: `{"abort": callable}`
resets the connection at once, bytes not yet sent included (a viewer that stopped
reading), where closing would keep them until the client reads or leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import resource
import socket
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from loguru import logger
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.config import Settings
from service.refusals import RefusalReport
from telemetry.metrics import Metrics

ABORT_EXTENSION = "exstream.abort"
# Descriptors kept for everything but connections: stores, logs, the listening socket,
# and the pipes of each channel's processes (an item's process and the next one overlap).
RESERVED_FILES = 64
FILES_PER_CHANNEL = 8
MIN_CONNECTIONS = 16
# Used where the hard limit is "unlimited" (macOS), which the soft limit cannot be.
OPEN_FILES_CEILING = 1 << 20
CONNECTION_RETRY_AFTER = 5
_CODES = {"connection_limit": "too_many_connections"}
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a reset


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit (logged once); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        limit = OPEN_FILES_CEILING if soft == resource.RLIM_INFINITY else soft
        logger.info("open files limit {}", limit)
        return limit
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("open files limit {} (could not raise it to {}: {})", soft, target, exc)
        return soft
    logger.info("open files limit {} (raised from {})", target, soft)
    return target


def derived_max_connections(open_files: int, channels: int) -> int:
    """The connection cap that leaves the channels' processes their descriptors."""
    return max(MIN_CONNECTIONS, open_files - RESERVED_FILES - FILES_PER_CHANNEL * channels)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout: float


def client_limits(settings: Settings, open_files: int) -> ClientLimits:
    server = settings.server
    derived = derived_max_connections(open_files, len(settings.channels))
    if server.max_connections > derived:
        logger.warning(
            "server.max_connections {} leaves too few of the {} open files for the channels'"
            " processes (at most {} would): spawns may fail with 'Too many open files'",
            server.max_connections, open_files, derived,
        )  # fmt: skip
    return ClientLimits(
        max_connections=server.max_connections or derived,
        max_header_bytes=server.max_header_bytes,
        header_timeout=server.header_timeout,
    )


class ConnectionGuard:
    """What every connection of one server shares: the limits, the answers to refused
    connections, and the count and report of refusals."""

    def __init__(
        self, limits: ClientLimits, metrics: Metrics, report: RefusalReport | None = None
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.report = report if report is not None else RefusalReport()
        # reason -> (status or None to close without an answer, detail)
        self.answers: dict[str, tuple[int | None, str]] = {
            "header_too_large": (431, f"request head over {limits.max_header_bytes} bytes"),
            "header_timeout": (
                408,
                f"request head not complete within {limits.header_timeout:g}s",
            ),
            "idle": (None, f"no request within {limits.header_timeout:g}s"),
            "connection_limit": (503, f"{limits.max_connections} connections open"),
        }
        metrics.http_connections_limit.set(limits.max_connections)

    def refuse(self, reason: str) -> bytes:
        """Count and report a refusal; the bytes to answer with (empty: just close)."""
        self.metrics.http_connections_rejected.labels(reason=reason).inc()
        status, detail = self.answers[reason]
        # An idle connection may be a browser's speculative one: normal, not a warning.
        level = "INFO" if status is None else "WARNING"
        self.report.record("client connection", reason, detail, level=level)
        if status is None:
            return b""
        body = json.dumps({"error": _CODES.get(reason, reason), "detail": detail}).encode()
        phrase = http.HTTPStatus(status).phrase
        head = [
            f"HTTP/1.1 {status} {phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if status == 503:
            head.append(f"retry-after: {CONNECTION_RETRY_AFTER}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection; `guard` is set on the class that `protocol_class` makes."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.awaiting_head = True
        self.head_bytes = 0
        self.head_tail = b""
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.guard.limits.max_connections:
            self.transport = transport  # what connection_lost closes
            self._refuse("connection_limit")
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.awaiting_head:
            # Only the head counts: up to its blank line when this read holds it (a body
            # may follow in the same read). Checked before parsing, so an oversized head
            # is never buffered.
            seen = self.head_tail + data  # the blank line may straddle two reads
            end = seen.find(b"\r\n\r\n")
            self.head_bytes += len(data) if end < 0 else end + 4 - len(self.head_tail)
            self.head_tail = seen[-3:]
            if self.head_bytes > self.guard.limits.max_header_bytes:
                self._refuse("header_too_large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope.setdefault("extensions", {})[ABORT_EXTENSION] = {"abort": self.abort}
        if self.head_timer is None:  # a later request of a kept-alive connection
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_head = True
        self.head_bytes = 0
        self.head_tail = b""

    def abort(self) -> None:
        """Reset the connection now, discarding what the client has not read yet."""
        if self.cycle is not None:
            self.cycle.keep_alive = False
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # Without it the kernel keeps the socket and its unsent bytes after the close,
            # for as long as the client does not read.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        timeout = self.guard.limits.header_timeout
        self.head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing():
            self._refuse("header_timeout" if self.head_bytes else "idle")

    def _refuse(self, reason: str) -> None:
        self.refused = True
        self._disarm_head_timer()
        answer = self.guard.refuse(reason)
        # Never into the middle of a response (a pipelined request behind a stream).
        if answer and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(answer)
        self.transport.close()


def protocol_class(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), bound to one server's guard."""

    class Protocol(GuardedHttpToolsProtocol):
        pass

    Protocol.guard = guard
    return Protocol
