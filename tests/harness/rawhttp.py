"""HTTP/1.1 GETs on one raw keep-alive connection, cheap enough for hundreds of clients in
one process: a body is either kept (a playlist) or only counted, read into a scratch buffer
that every connection shares (no copy of it is kept)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

MAX_HEAD = 16384
MAX_CHUNK_LINE = 1024
NO_BODY = (204, 304)
# Shared by every connection on one thread: the event loop reads into it and the parser
# looks at each read before the next one overwrites it.
SCRATCH = bytearray(1 << 18)


class HttpError(Exception):
    """A response that could not be read whole: what went wrong, with the path."""


class _Unanswered(HttpError):
    """The connection closed before any byte of the response came."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    length: int  # body bytes received
    first: int | None  # the body's first byte, None for an empty body
    body: bytes  # the body if it was kept, else b""


class _Part(enum.Enum):
    HEAD = enum.auto()
    DATA = enum.auto()  # Content-Length bytes, or a chunk's
    CHUNK_SIZE = enum.auto()
    CHUNK_END = enum.auto()  # the CRLF after a chunk's data
    TRAILER = enum.auto()


class Reading:
    """One response as it arrives: the head, then a Content-Length or chunked body."""

    def __init__(self, path: str, keep: bool, done: asyncio.Future[Reply]) -> None:
        self.path = path
        self.done = done
        self.part = _Part.HEAD
        self.head = bytearray()
        self.line = bytearray()  # a chunk-size or trailer line being read
        self.status = 0
        self.remaining = 0  # bytes of the body, or of the current chunk, still to come
        self.chunked = False
        self.closes = False  # the server said it closes the connection after this one
        self.kept: bytearray | None = bytearray() if keep else None
        self.length = 0
        self.first: int | None = None
        self.received = 0  # every byte, for the idle timeout
        self.watched = 0
        self.watchdog: asyncio.TimerHandle | None = None

    def feed(self, buffer: bytearray, stop: int) -> None:
        """Reads buffer[:stop], the bytes that just came."""
        self.received += stop
        at = self._head(buffer, stop) if self.part is _Part.HEAD else 0
        while at < stop and not self.done.done():
            if self.part is _Part.DATA:
                at = self._data(buffer, at, stop)
            elif self.part is _Part.CHUNK_END:
                at = self._chunk_end(buffer, at, stop)
            else:
                at = self._line(buffer, at, stop)
        if at < stop:
            raise HttpError(f"GET {self.path}: {stop - at} bytes after the response's end")

    def _head(self, buffer: bytearray, stop: int) -> int:
        before = len(self.head)
        self.head += buffer[: min(stop, MAX_HEAD - before)]
        end = self.head.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(self.head) >= MAX_HEAD:
                raise HttpError(f"GET {self.path}: a response head longer than {MAX_HEAD} bytes")
            return stop
        self._parse_head(bytes(self.head[:end]).decode("latin-1"))
        return end + 4 - before

    def _parse_head(self, text: str) -> None:
        status_line, *lines = text.split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise HttpError(f"GET {self.path}: not an HTTP/1.x status line: {status_line!r}")
        self.status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.closes = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        if self.status in NO_BODY:
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked, self.part = True, _Part.CHUNK_SIZE
        elif (length := headers.get("content-length", "")).isdigit():
            self.remaining, self.part = int(length), _Part.DATA
            if self.remaining == 0:
                self._finish()
        else:
            raise HttpError(
                f"GET {self.path}: {self.status} with neither Content-Length nor chunked"
                " encoding (a body read to the connection's close is not supported)"
            )

    def _data(self, buffer: bytearray, at: int, stop: int) -> int:
        take = min(self.remaining, stop - at)
        if self.first is None and take:
            self.first = buffer[at]
        if self.kept is not None:
            self.kept += buffer[at : at + take]
        self.length += take
        self.remaining -= take
        if self.remaining == 0:
            if self.chunked:
                self.part = _Part.CHUNK_END
            else:
                self._finish()
        return at + take

    def _chunk_end(self, buffer: bytearray, at: int, stop: int) -> int:
        take = min(stop - at, 2 - len(self.line))
        self.line += buffer[at : at + take]
        if len(self.line) < 2:
            return stop
        if self.line != b"\r\n":
            raise HttpError(f"GET {self.path}: a chunk not followed by CRLF")
        self.line.clear()
        self.part = _Part.CHUNK_SIZE
        return at + take

    def _line(self, buffer: bytearray, at: int, stop: int) -> int:
        """A chunk-size line, or a trailer line (the empty one ends the body)."""
        end = buffer.find(b"\n", at, stop)
        self.line += buffer[at : stop if end < 0 else end + 1]
        if len(self.line) > MAX_CHUNK_LINE:
            raise HttpError(f"GET {self.path}: a chunk-size or trailer line too long")
        if end < 0:
            return stop
        line = bytes(self.line).rstrip(b"\r\n")
        self.line.clear()
        if self.part is _Part.TRAILER:
            if not line:
                self._finish()
        else:
            try:
                self.remaining = int(line.split(b";")[0], 16)
            except ValueError:
                raise HttpError(f"GET {self.path}: a bad chunk size {line[:40]!r}") from None
            self.part = _Part.DATA if self.remaining else _Part.TRAILER
        return end + 1

    def _finish(self) -> None:
        if self.done.done():
            return  # cancelled
        body = bytes(self.kept) if self.kept is not None else b""
        self.done.set_result(Reply(self.status, self.length, self.first, body))

    def fail(self, error: HttpError) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def lost(self) -> None:
        if self.received == 0:
            self.fail(_Unanswered(f"GET {self.path}: the server closed the connection unanswered"))
        elif self.part is _Part.HEAD:
            self.fail(HttpError(f"GET {self.path}: the connection closed within the head"))
        else:
            expected = "a chunked body" if self.chunked else f"{self.length + self.remaining}"
            self.fail(
                HttpError(
                    f"GET {self.path}: the connection closed after {self.length} body bytes"
                    f" of {expected}: a truncated body"
                )
            )


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, scratch: bytearray) -> None:
        self.scratch = scratch
        self.transport: asyncio.Transport | None = None
        self.reading: Reading | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        reading = self.reading
        try:
            if reading is None:
                raise HttpError(f"{nbytes} bytes nobody asked for")
            reading.feed(self.scratch, nbytes)
        except HttpError as error:
            if reading is not None:
                reading.fail(error)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reading is not None:
            self.reading.lost()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Connection:
    """GETs to the server of `base` (http://HOST:PORT), one at a time, on one keep-alive
    connection: opened at the first, reopened when the server closed it (once, if it closed
    it just as a request went out). Each response must come with no pause longer than
    `timeout` s."""

    def __init__(
        self,
        base: str,
        *,
        timeout: float = 10.0,
        scratch: bytearray = SCRATCH,
        user_agent: str = "exstream-tests",
    ) -> None:
        url = urlsplit(base)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"not an http://HOST[:PORT] URL: {base!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.timeout = timeout
        self.scratch = scratch
        self.opened = 0  # connections opened so far
        self._headers = f"Host: {url.netloc}\r\nUser-Agent: {user_agent}\r\n\r\n".encode()
        self._protocol: _Protocol | None = None

    async def get(self, path: str, *, keep_body: bool = True) -> Reply:
        reused = self._protocol is not None and not self._protocol.closed
        if not reused:
            await self._connect()
        try:
            return await self._exchange(path, keep_body)
        except _Unanswered:
            if not reused:
                raise
            await self._connect()
            return await self._exchange(path, keep_body)

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None

    async def _connect(self) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self.scratch), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from None
        self._protocol = protocol
        self.opened += 1

    async def _exchange(self, path: str, keep_body: bool) -> Reply:
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        loop = asyncio.get_running_loop()
        reading = Reading(path, keep_body, loop.create_future())
        protocol.reading = reading
        protocol.transport.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._headers)
        reading.watchdog = loop.call_later(self.timeout, self._watch, reading)
        try:
            reply = await reading.done
        finally:
            reading.watchdog.cancel()
            protocol.reading = None
            if not reading.done.done() or reading.done.cancelled() or reading.done.exception():
                protocol.abort()  # cancelled or failed mid-response: its bytes are unread
        if reading.closes:
            protocol.abort()
        return reply

    def _watch(self, reading: Reading) -> None:
        """Fails `reading` if no byte came in the last `timeout` s, else looks again later."""
        if reading.received == reading.watched:
            reading.fail(HttpError(f"GET {reading.path}: no byte for {self.timeout:g} s"))
            return
        reading.watched = reading.received
        reading.watchdog = asyncio.get_running_loop().call_later(self.timeout, self._watch, reading)
