"""The log store: loguru entries in SQLite (WAL), written in batches by a background thread.

`append` is the loguru sink: it only puts the entry on a bounded queue, from whichever
thread logged, and drops (counted) when the queue is full. One writer thread redacts,
inserts in batches, enforces retention and wakes the live tails. Reads run in worker
threads on their own connections, so neither side blocks the event loop.

The store is never needed by the rest of the service: a read-only or full disk turns it
off (entries dropped and counted, reads 503) until it can write again, and a damaged
file is moved aside and created again (service/logfile.py, service/storage.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.config import LogSettings
from service.entryid import encode_id
from service.logfile import Connect, LogFile
from service.storage import DAMAGED, Fault, StoreHealth
from telemetry.logging import redact, redact_value
from telemetry.metrics import LOG_DROP_REASONS, Metrics

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
RETENTION_CHUNK = 10_000

_COLUMNS = "id, time_us, level, message, logger, channel, trace_id, span_id, extra"

_encode_json = json.JSONEncoder(ensure_ascii=False, default=str).encode


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
_WAKE = object()  # a reader found damage: the writer deals with it now


class LogStore:
    """Entries in SQLite; a disk fault or a damaged file degrades the store, never the
    service (service/logfile.py): entries that cannot be stored are dropped and counted,
    reads that cannot be answered raise LogStoreUnavailable (503)."""

    def __init__(
        self,
        path: Path,
        settings: LogSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        batch_size: int = 2000,
        retention_interval: float = 60.0,
        reopen_interval: float = 10.0,
        connect: Connect = sqlite3.connect,
    ) -> None:
        self.path = path
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.batch_size = batch_size
        self.retention_interval = retention_interval
        self.health = StoreHealth(
            "logs",
            "log store",
            "log entries are dropped (counted in exstream_logs_dropped_total)",
            metrics,
            path=path,
            clock=clock,
        )
        self.file = LogFile(
            path,
            self.health,
            reopen_interval=reopen_interval,
            connect=connect,
            on_change=self._wake_threadsafe,
            on_damage=self._wake_writer,
        )
        self._queue: queue.Queue[object] = queue.Queue(settings.queue_size)
        self._dropped = {r: metrics.logs_dropped.labels(reason=r) for r in LOG_DROP_REASONS}
        self._gate = threading.Lock()  # an entry is either queued before close, or counted
        self._accepting = True
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self.closing = False

    @property
    def queries(self) -> int:
        """Statements run on read connections; tests count them."""
        return self.file.queries

    # -- writing ---------------------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> None:
        """The loguru sink: never blocks; drops (counted) when the writer is behind or the
        store is closed."""
        with self._gate:
            if not self._accepting:
                self._dropped["closed"].inc()
                return
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self._dropped["queue_full"].inc()

    @property
    def backlog(self) -> int:
        """Entries waiting for the writer."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Open the file and start the writer; never raises: a store that cannot open its
        file starts off and tries again every `reopen_interval` seconds."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.file.open)
        self._writer = threading.Thread(target=self._run, name="logstore-writer", daemon=True)
        self._writer.start()

    def _run(self) -> None:
        self.file.verify()
        next_retention = time.monotonic()
        stop = False
        while not stop:
            due = next_retention if self.file.db is not None else self.file.reopen_at
            batch, flushes, stop = self._take(max(0.0, due - time.monotonic()))
            self.file.heal()
            if batch:
                self._store([self._row(entry) for entry in batch])
            if self.file.db is not None and time.monotonic() >= next_retention:
                more = self._retain_or_heal(self.file.db)
                next_retention = time.monotonic() + (0.0 if more else self.retention_interval)
            for flush in flushes:
                flush.done.set()
        self.file.stop()

    def _take(self, timeout: float) -> tuple[list[dict[str, Any]], list[_Flush], bool]:
        """The next batch of entries, the flushes queued among them, and whether to stop."""
        batch: list[dict[str, Any]] = []
        flushes: list[_Flush] = []
        try:
            item: object = self._queue.get(timeout=timeout)
        except queue.Empty:
            return batch, flushes, False
        while True:
            if item is _STOP:
                return batch, flushes, True
            if isinstance(item, _Flush):
                flushes.append(item)
            elif isinstance(item, dict):
                batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, flushes, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, flushes, False

    def _store(self, rows: list[tuple[Any, ...]]) -> None:
        if self.file.db is None:
            self._dropped["unavailable"].inc(len(rows))
            return
        if not self.file.write(rows):
            self._dropped["write_failed"].inc(len(rows))
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
        with self.file.borrow() as connection:
            while self._retain(connection):
                pass

    def _retain_or_heal(self, connection: sqlite3.Connection) -> bool:
        try:
            return self._retain(connection)
        except sqlite3.Error as exc:
            fault = Fault.of(exc)
            if fault.reason == DAMAGED:
                self.file.failed(fault)
            else:  # the next insert tells whether the store can write
                print(f"log store: retention failed: {exc}", file=sys.stderr)
            return False

    def _retain(self, connection: sqlite3.Connection) -> bool:
        """Delete at most a chunk of expired rows per call; True when more remain."""
        cutoff = int((self.clock() - self.settings.retention_days * 86400) * 1_000_000)
        (newest,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
        # Rows go only from the old end and AUTOINCREMENT never reuses ids, so
        # keeping ids above newest - max_rows keeps at most max_rows rows.
        floor = newest - self.settings.max_rows
        by_age = connection.execute(
            "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE time_us < ? LIMIT ?)",
            (cutoff, RETENTION_CHUNK),
        ).rowcount
        by_rows = connection.execute(
            "DELETE FROM entries WHERE id IN"
            " (SELECT id FROM entries WHERE id <= ? ORDER BY id LIMIT ?)",
            (floor, RETENTION_CHUNK),
        ).rowcount
        return by_age >= RETENTION_CHUNK or by_rows >= RETENTION_CHUNK

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything appended so far is stored (tests, benchmarks)."""
        if self._writer is None or not self._writer.is_alive():
            raise RuntimeError("the log store is not running")
        marker = _Flush()
        await asyncio.to_thread(self._queue.put, marker, True, timeout)
        if not await asyncio.to_thread(marker.done.wait, timeout):
            raise TimeoutError("log store writer did not catch up")

    def _wake_writer(self) -> None:
        with contextlib.suppress(queue.Full):  # a full queue: the writer is awake anyway
            self._queue.put_nowait(_WAKE)

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
        self.file.closing = True
        self._wake()

    async def close(self, timeout: float = 5.0) -> None:
        """Store what was appended before, count what comes after (dropped, `closed`)."""
        self.close_streams()
        with self._gate:
            self._accepting = False
        writer = self._writer
        if writer is not None and writer.is_alive():
            with contextlib.suppress(queue.Full):
                await asyncio.to_thread(self._queue.put, _STOP, True, timeout)
            await asyncio.to_thread(writer.join, timeout)
        self._dropped["closed"].inc(self._discard_queued())
        self.file.close()

    def _discard_queued(self) -> int:
        """Entries the writer will never take (it stopped, or did not in time)."""
        count = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return count
            count += isinstance(item, dict)

    # -- reading -----------------------------------------------------------------------------

    def get_sync(self, key: int) -> LogEntry | None:
        rows = self.file.fetch(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (key,))
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
        return [_entry(row) for row in self.file.fetch(sql, [*args, limit])]

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
            rows = self.file.fetch(first, (where.since_us - TIME_SLACK_US,))
            conditions.append("id >= ?")
            params.append(int(rows[0][0]) if rows else 1 << 62)
        if where.until_us is not None:
            rows = self.file.fetch(first, (where.until_us + TIME_SLACK_US,))
            if rows:
                conditions.append("id < ?")
                params.append(int(rows[0][0]))
        return conditions, params

    def last_key_sync(self) -> int:
        (key,) = self.file.fetch("SELECT COALESCE(MAX(id), 0) FROM entries", ())[0]
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
