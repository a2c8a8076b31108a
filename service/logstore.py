"""The log store: loguru entries in SQLite (WAL), written in batches by a background thread.

`append` is the loguru sink: it only puts the entry on a bounded queue, from whichever
thread logged, and drops (counted) when the queue is full. One writer thread redacts,
inserts in batches, enforces retention and wakes the live tails. Reads run in worker
threads on their own connections, so neither side blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import queue
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.config import LogSettings
from service.entryid import encode_id
from telemetry.metrics import Metrics

LEVELS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "SUCCESS": 25,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
DEFAULT_LEVEL_NO = LEVELS["INFO"]  # custom loguru levels are filed as INFO
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REDACTED = "[REDACTED]"
RETENTION_CHUNK = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us INTEGER NOT NULL,
    level_no INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    logger TEXT,
    channel TEXT,
    trace_id TEXT,
    span_id TEXT,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time_us);
CREATE INDEX IF NOT EXISTS entries_level ON entries (level_no, id);
CREATE INDEX IF NOT EXISTS entries_channel ON entries (channel, id) WHERE channel IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_trace ON entries (trace_id, id) WHERE trace_id IS NOT NULL;
"""
_COLUMNS = "id, time_us, level, message, logger, channel, trace_id, span_id, extra"
_INSERT = (
    "INSERT INTO entries (time_us, level_no, level, message, logger, channel, trace_id,"
    " span_id, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# Secrets: values after these markers are replaced before anything is stored.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;}]+")
_AUTH_HEADER = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|digest|token|negotiate)\s+)?"
    r"[^\s\"',;}]+"
)
_KEY_VALUE = re.compile(
    r"(?i)((?:password|passwd|token|secret)[\w.-]*)"
    r"(=|[\"']\s*:\s*[\"']|:\s+)([^\s&\"',;}]+)"
)
# A cheap first pass: most messages have none of these, and skip the substitutions.
_MAYBE_SECRET = re.compile(r"(?i)bearer|authorization|passw|token|secret")
_SECRET_KEY = re.compile(r"(?i)password|passwd|token|secret|authorization|api_?key|cookie")
_encode_json = json.JSONEncoder(ensure_ascii=False, default=str).encode


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {
            k: REDACTED if _secret_key(str(k)) and v is not None else redact_value(v)
            for k, v in value.items()
        }
    return value


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def rfc3339_of(time_us: int) -> str:
    return (EPOCH + timedelta(microseconds=time_us)).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class LogEntry:
    key: int
    time: str
    level: str
    message: str
    logger: str | None
    channel: str | None
    trace_id: str | None
    span_id: str | None
    extra: dict[str, Any]

    @property
    def id(self) -> str:
        return encode_id(self.key)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "level": self.level,
            "message": self.message,
            "logger": self.logger,
            "channel": self.channel,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "extra": self.extra,
        }


TIME_SLACK_US = 10_000_000  # far more than threads' disorder between logging and append


@dataclass(frozen=True)
class LogFilter:
    """`min_level` means that level and above; `until_us` is exclusive; `q` ignores ASCII case."""

    min_level: int | None = None
    channel: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    q: str | None = None
    trace_id: str | None = None

    def conditions(self) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if self.channel is not None:
            # With a level too, "+" keeps SQLite on the (level_no, id) index, which walks
            # in id order; the channel index would scan the channel for rare levels.
            by_level = self.min_level is not None and self.trace_id is None
            where.append("+channel = ?" if by_level else "channel = ?")
            params.append(self.channel)
        if self.trace_id is not None:
            where.append("trace_id = ?")
            params.append(self.trace_id)
        if self.since_us is not None:
            where.append("time_us >= ?")
            params.append(self.since_us)
        if self.until_us is not None:
            where.append("time_us < ?")
            params.append(self.until_us)
        if self.q is not None:
            escaped = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("message LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        return where, params

    def levels(self) -> list[int | None]:
        """One query branch per level, so each walks the (level_no, id) index in order."""
        if self.min_level is None:
            return [None]
        return [no for no in sorted(set(LEVELS.values())) if no >= self.min_level]


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class LogStore:
    def __init__(
        self,
        path: Path,
        settings: LogSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        batch_size: int = 2000,
        retention_interval: float = 60.0,
    ) -> None:
        self.path = path
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.batch_size = batch_size
        self.retention_interval = retention_interval
        self.queries = 0  # statements run on read connections; tests count them
        self._queue: queue.Queue[object] = queue.Queue(settings.queue_size)
        self._accepting = True
        self._writer: threading.Thread | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self.closing = False

    # -- writing ---------------------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> None:
        """The loguru sink: never blocks, drops (counted) when the writer is behind."""
        if not self._accepting:
            return
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.metrics.logs_dropped.inc()

    @property
    def backlog(self) -> int:
        """Entries waiting for the writer."""
        return self._queue.qsize()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        connection = await asyncio.to_thread(self._connect, True)
        self._writer = threading.Thread(
            target=self._run, args=(connection,), name="logstore-writer", daemon=True
        )
        self._writer.start()

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 5000")
        if create:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
        with self._lock:
            self._connections.append(connection)
        return connection

    def _run(self, connection: sqlite3.Connection) -> None:
        next_retention = time.monotonic()
        stop = False
        while not stop:
            timeout = max(0.0, next_retention - time.monotonic())
            batch: list[dict[str, Any]] = []
            flushes: list[_Flush] = []
            try:
                item: object = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, _Flush):
                    flushes.append(item)
                elif isinstance(item, dict):
                    batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if batch:
                self._insert(connection, batch)
            if time.monotonic() >= next_retention:
                more = self._retain(connection)
                next_retention = time.monotonic() + (0.0 if more else self.retention_interval)
            for flush in flushes:
                flush.done.set()
        connection.close()

    def _insert(self, connection: sqlite3.Connection, batch: list[dict[str, Any]]) -> None:
        rows = [self._row(entry) for entry in batch]
        try:
            connection.execute("BEGIN")
            connection.executemany(_INSERT, rows)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            self.metrics.logs_dropped.inc(len(rows))
            # Not through loguru: that would feed the failing store again.
            print(f"log store: dropped {len(rows)} entries: {exc}", file=sys.stderr)
            return
        for level, count in collections.Counter(row[2] for row in rows).items():
            self.metrics.log_entries.labels(level=level).inc(count)
        self._wake_threadsafe()

    def _row(self, entry: dict[str, Any]) -> tuple[Any, ...]:
        try:
            time_us = micros(datetime.fromisoformat(str(entry.get("time"))))
        except (TypeError, ValueError, OverflowError):
            time_us = int(self.clock() * 1_000_000)
        level = str(entry.get("level") or "INFO")
        extra = redact_value(entry.get("extra") or {})
        return (
            time_us,
            LEVELS.get(level, DEFAULT_LEVEL_NO),
            level,
            redact(str(entry.get("message", ""))),
            _text(entry.get("logger")),
            _text(entry.get("channel")),
            _text(entry.get("trace_id")),
            _text(entry.get("span_id")),
            _encode_json(extra),
        )

    def enforce_retention(self) -> None:
        """Delete by age and row count now, on a connection of the caller's own."""
        connection = self._connect()
        try:
            while self._retain(connection):
                pass
        finally:
            self._forget(connection)

    def _retain(self, connection: sqlite3.Connection) -> bool:
        """Delete at most a chunk of expired rows per call; True when more remain."""
        cutoff = int((self.clock() - self.settings.retention_days * 86400) * 1_000_000)
        (newest,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
        # Rows go only from the old end and AUTOINCREMENT never reuses ids, so
        # keeping ids above newest - max_rows keeps at most max_rows rows.
        floor = newest - self.settings.max_rows
        try:
            by_age = connection.execute(
                "DELETE FROM entries WHERE id IN"
                " (SELECT id FROM entries WHERE time_us < ? LIMIT ?)",
                (cutoff, RETENTION_CHUNK),
            ).rowcount
            by_rows = connection.execute(
                "DELETE FROM entries WHERE id IN"
                " (SELECT id FROM entries WHERE id <= ? ORDER BY id LIMIT ?)",
                (floor, RETENTION_CHUNK),
            ).rowcount
        except sqlite3.Error as exc:
            print(f"log store: retention failed: {exc}", file=sys.stderr)
            return False
        return by_age >= RETENTION_CHUNK or by_rows >= RETENTION_CHUNK

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything appended so far is stored (tests, benchmarks)."""
        if self._writer is None or not self._writer.is_alive():
            raise RuntimeError("the log store is not running")
        marker = _Flush()
        await asyncio.to_thread(self._queue.put, marker, True, timeout)
        if not await asyncio.to_thread(marker.done.wait, timeout):
            raise TimeoutError("log store writer did not catch up")

    # -- waking live tails -------------------------------------------------------------------

    def changed(self) -> asyncio.Event:
        """An event set at the next commit (or close); take it before querying."""
        return self._changed

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(self._wake)

    def close_streams(self) -> None:
        """End every live tail now (called on the loop when the server begins shutdown)."""
        self.closing = True
        self._wake()

    async def close(self, timeout: float = 5.0) -> None:
        self.close_streams()
        self._accepting = False
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(queue.Full):
                await asyncio.to_thread(self._queue.put, _STOP, True, timeout)
            await asyncio.to_thread(writer.join, timeout)
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    # -- reading -----------------------------------------------------------------------------

    def _count(self, statement: str) -> None:
        with self._lock:
            self.queries += 1

    def _fetch(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        try:
            connection = self._readers.get_nowait()
        except queue.Empty:
            connection = self._connect()
            connection.set_trace_callback(self._count)
        try:
            return connection.execute(sql, tuple(params)).fetchall()
        finally:
            self._readers.put(connection)

    def _forget(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    def get_sync(self, key: int) -> LogEntry | None:
        rows = self._fetch(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (key,))
        return _entry(rows[0]) if rows else None

    def page_sync(self, where: LogFilter, before: int | None, limit: int) -> list[LogEntry]:
        """Newest first, keyset on the row id: entries with id < before."""
        return self._select(where, "id < ?" if before is not None else None, before, limit, "DESC")

    def after_sync(self, where: LogFilter, after: int, limit: int) -> list[LogEntry]:
        """Oldest first: entries with id > after (live tail, Last-Event-ID)."""
        return self._select(where, "id > ?", after, limit, "ASC")

    def _select(
        self, where: LogFilter, bound: str | None, key: int | None, limit: int, order: str
    ) -> list[LogEntry]:
        conditions, params = where.conditions()
        if bound is not None:
            conditions = [bound, *conditions]
            params = [key, *params]
        id_range, id_params = self._id_range(where)
        conditions, params = [*id_range, *conditions], [*id_params, *params]
        levels = where.levels()
        if not levels:
            return []
        branches: list[str] = []
        args: list[Any] = []
        for level in levels:
            clauses = conditions if level is None else ["level_no = ?", *conditions]
            sql = f"SELECT {_COLUMNS} FROM entries"
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            branches.append(f"SELECT * FROM ({sql} ORDER BY id {order} LIMIT ?)")
            args += [*([] if level is None else [level]), *params, limit]
        sql = " UNION ALL ".join(branches) + f" ORDER BY id {order} LIMIT ?"
        return [_entry(row) for row in self._fetch(sql, [*args, limit])]

    def _id_range(self, where: LogFilter) -> tuple[list[str], list[int]]:
        """Row-id bounds that contain a time window, found on the time index in O(log n).

        Rows are written in arrival order, so time grows with the row id up to the small
        disorder between threads; widening the window by TIME_SLACK_US keeps the bounds
        exact, and the time conditions themselves still decide. Without this, a window far
        from the newest entries is found by walking every newer row.
        """
        conditions: list[str] = []
        params: list[int] = []
        first = "SELECT id FROM entries WHERE time_us >= ? ORDER BY time_us LIMIT 1"
        if where.since_us is not None:
            rows = self._fetch(first, (where.since_us - TIME_SLACK_US,))
            conditions.append("id >= ?")
            params.append(int(rows[0][0]) if rows else 1 << 62)
        if where.until_us is not None:
            rows = self._fetch(first, (where.until_us + TIME_SLACK_US,))
            if rows:
                conditions.append("id < ?")
                params.append(int(rows[0][0]))
        return conditions, params

    def last_key_sync(self) -> int:
        (key,) = self._fetch("SELECT COALESCE(MAX(id), 0) FROM entries", ())[0]
        return int(key)

    async def get(self, key: int) -> LogEntry | None:
        return await asyncio.to_thread(self.get_sync, key)

    async def page(self, where: LogFilter, before: int | None, limit: int) -> list[LogEntry]:
        return await asyncio.to_thread(self.page_sync, where, before, limit)

    async def after(self, where: LogFilter, after: int, limit: int) -> list[LogEntry]:
        return await asyncio.to_thread(self.after_sync, where, after, limit)

    async def last_key(self) -> int:
        return await asyncio.to_thread(self.last_key_sync)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _entry(row: tuple[Any, ...]) -> LogEntry:
    key, time_us, level, message, logger, channel, trace_id, span_id, extra = row
    return LogEntry(
        key=key,
        time=rfc3339_of(time_us),
        level=level,
        message=message,
        logger=logger,
        channel=channel,
        trace_id=trace_id,
        span_id=span_id,
        extra=json.loads(extra),
    )
