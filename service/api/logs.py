"""`/api/logs`: pages of stored entries, one entry by id, and a live tail (SSE).

Route order is the contract: literal paths first, then the id routes typed by the
`entry_id` convertor (only well-formed ids match), then catch-alls that answer a
malformed id with a JSON 400 instead of a 404 route miss.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterable
from datetime import UTC, datetime, timedelta, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import service.entryid  # registers the entry_id convertor  # noqa: F401
from service.entryid import InvalidToken, TokenKind, decode, encode_cursor
from service.errors import ExstreamError
from service.logfile import LogStoreUnavailable
from service.logstore import LEVELS, LogFilter, LogStore, micros
from service.refusals import TailSlots
from service.types import app_state

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TAIL_BATCH = 500
KEEPALIVE_SECONDS = 15.0
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))"
)
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


class InvalidParameter(ExstreamError):
    code = "invalid_parameter"
    status_code = 400

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(name, problem)

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}"

    def __repr__(self) -> str:
        return f"InvalidParameter(name={self.name!r}, problem={self.problem!r})"


class EntryNotFound(ExstreamError):
    code = "entry_not_found"
    status_code = 404

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(entry_id)

    def __str__(self) -> str:
        return f"no log entry {self.entry_id!r} (never existed or removed by retention)"


class TailResponse(StreamingResponse):
    def __init__(self, content: AsyncIterable[str], slots: TailSlots) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.give_back()


def parse_rfc3339(name: str, text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidParameter(name, f"not an RFC 3339 date-time with an offset: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone, sign, zone_hours, zone_minutes = match.groups()[6:]
    offset = timedelta()
    if zone not in ("Z", "z"):
        offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        offset = -offset if sign == "-" else offset
    try:
        moment = datetime(
            year, month, day, hour, minute, min(second, 59), tzinfo=timezone(offset)
        ) + timedelta(microseconds=int(((fraction or ".0")[1:] + "000000")[:6]))
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidParameter(name, f"not a valid date-time: {text!r} ({exc})") from None


def parse_filter(request: Request) -> LogFilter:
    params = request.query_params
    min_level = None
    if level := params.get("level"):
        min_level = LEVELS.get(level.upper())
        if min_level is None:
            raise InvalidParameter("level", f"must be one of {', '.join(LEVELS)}")
    trace_id = params.get("trace_id") or None
    if trace_id is not None:
        if not _TRACE_ID.fullmatch(trace_id):
            raise InvalidParameter("trace_id", "must be 32 hexadecimal characters")
        trace_id = trace_id.lower()
    since = params.get("since")
    until = params.get("until")
    since_us = micros(parse_rfc3339("since", since)) if since else None
    until_us = micros(parse_rfc3339("until", until)) if until else None
    return LogFilter(
        min_level=min_level,
        channel=parse_channel(params.get("channel")),
        since_us=since_us,
        until_us=until_us,
        q=params.get("q") or None,
        trace_id=trace_id,
    )


def parse_channel(raw: str | None) -> str | None:
    """A channel number as the entries store it (`7`, also written `007`), or None."""
    if raw is None or raw == "":
        return None
    # Length first: int() refuses over 4300 digits with a ValueError.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 5 or int(raw) < 1:
        raise InvalidParameter("channel", "must be a channel number from 1 to 99999")
    return str(int(raw))


def parse_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidParameter("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def decode_token(request: Request, kind: TokenKind, text: str) -> int:
    """Validate before any lookup; rejections are counted by kind."""
    try:
        return decode(kind, text)
    except InvalidToken:
        app_state(request).metrics.logs_invalid_id.labels(kind=kind).inc()
        raise


def store_of(request: Request) -> LogStore:
    return app_state(request).logs


async def list_entries(request: Request) -> JSONResponse:
    where = parse_filter(request)
    limit = parse_limit(request)
    cursor = request.query_params.get("cursor")
    before = decode_token(request, "cursor", cursor) if cursor is not None else None
    page = await store_of(request).page(where, before, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return JSONResponse(
        {
            "entries": [entry.as_json() for entry in page],
            "next_cursor": encode_cursor(page[-1].key) if more else None,
        }
    )


async def get_entry(request: Request) -> JSONResponse:
    entry_id: str = request.path_params["entry_id"]
    key = decode_token(request, "entry_id", entry_id)
    entry = await store_of(request).get(key)
    if entry is None:
        raise EntryNotFound(entry_id)
    return JSONResponse(entry.as_json())


async def reject_entry_id(request: Request) -> JSONResponse:
    """Reached only by segments the convertor refused: the codec names what is wrong."""
    decode_token(request, "entry_id", request.path_params["entry_id"])
    return await get_entry(request)  # unreachable: the convertor and the codec agree


async def stream_entries(request: Request) -> StreamingResponse:
    slots = app_state(request).tails
    slots.check()
    where = parse_filter(request)
    store = store_of(request)
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        after = decode_token(request, "entry_id", last_event_id.strip())
    else:
        after = await store.last_key()
    # Taken after the last await: the response that gives it back starts right away.
    slots.take()
    return TailResponse(tail(store, where, after), slots)


async def tail(
    store: LogStore, where: LogFilter, after: int, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncGenerator[str, None]:
    """Entries after `after`, then each new one as it is committed, until the store closes."""
    yield ": exstream log tail\n\n"
    while not store.closing:
        changed = store.changed()
        try:
            entries = await store.after(where, after, TAIL_BATCH)
        except LogStoreUnavailable as exc:
            # The headers are sent: say why in a comment, and try again at the next commit
            # (the store's return wakes tails too) or keep-alive.
            entries = []
            yield f": {exc}\n\n"
        for entry in entries:
            yield f"id: {entry.id}\ndata: {json.dumps(entry.as_json(), ensure_ascii=False)}\n\n"
            after = entry.key
        if len(entries) == TAIL_BATCH or store.closing:
            continue
        try:
            async with asyncio.timeout(keepalive):
                await changed.wait()
        except TimeoutError:
            yield ": keep-alive\n\n"


ROUTES = [
    Route("/api/logs/entries", list_entries, methods=["GET"]),
    Route("/api/logs/stream", stream_entries, methods=["GET"]),
    Route("/api/logs/entries/{entry_id:entry_id}", get_entry, methods=["GET"]),
    Route("/api/logs/{entry_id:entry_id}", get_entry, methods=["GET"]),  # the old API's path
    Route("/api/logs/entries/{entry_id}", reject_entry_id, methods=["GET"]),
    Route("/api/logs/{entry_id}", reject_entry_id, methods=["GET"]),
]
