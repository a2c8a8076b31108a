"""The log store's SQLite file across disk faults and damage.

The writer's connection and a pool of readers' connections to one file that may go away:
a read-only or full disk turns the store off (reads raise LogStoreUnavailable, 503) until
a reopen works; a damaged file is moved aside and created again, and readers still on the
old file are closed when they come back to the pool (each file has a generation).
The writer thread calls every method except `fetch` and `borrow`, which readers call.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from service.errors import ExstreamError
from service.storage import (
    DAMAGED,
    STORE_ERRORS,
    Fault,
    StoreHealth,
    check_integrity,
    open_store,
    replace_damaged,
)

SCHEMA = """
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
INSERT = (
    "INSERT INTO entries (time_us, level_no, level, message, logger, channel, trace_id,"
    " span_id, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Connect = Callable[..., sqlite3.Connection]


class LogStoreUnavailable(ExstreamError):
    """A read the log store cannot answer now: it is off (a read-only or full disk), its
    file is being created again after damage, or the service is shutting down."""

    code = "log_store_unavailable"
    status_code = 503

    def __init__(self, reason: str, problem: str) -> None:
        self.reason = reason
        self.problem = problem
        super().__init__(reason, problem)

    def __str__(self) -> str:
        return f"the log store cannot answer now ({self.reason}): {self.problem}"

    def __repr__(self) -> str:
        return f"LogStoreUnavailable(reason={self.reason!r}, problem={self.problem!r})"


class LogFile:
    def __init__(
        self,
        path: Path,
        health: StoreHealth,
        *,
        reopen_interval: float = 10.0,
        connect: Connect = sqlite3.connect,
        on_change: Callable[[], None] = lambda: None,
        on_damage: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.health = health
        self.reopen_interval = reopen_interval
        self.connect = connect
        self.on_change = on_change  # a file came or went: wake the live tails
        self.on_damage = on_damage  # a reader found damage: wake the writer
        self.db: sqlite3.Connection | None = None  # the writer's; None while off
        self.reopen_at = 0.0  # monotonic time of the next reopen while off
        self.closing = False
        self.queries = 0  # statements run on read connections; tests count them
        self._generation = 0
        self._serving: int | None = None  # the generation readers may use; None while off
        self._damage: Fault | None = None  # found by a reader, for the writer to deal with
        self._last_key = 0  # the highest id handed out, kept above after a replacement
        self._readers: queue.SimpleQueue[tuple[sqlite3.Connection, int]] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- the writer's side -------------------------------------------------------------------

    def open(self, verify: bool = False) -> None:
        """Open (or create) the file; a damaged one is replaced; off when that fails."""
        self._switch(open_store(self.path, lambda: self._create(verify), self.health))

    def _create(self, verify: bool = False) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        connection = self.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(SCHEMA)
            if verify:
                check_integrity(connection)
            self._continue_keys(connection, new)
        except BaseException:
            connection.close()
            raise
        return connection

    def _continue_keys(self, connection: sqlite3.Connection, new: bool) -> None:
        """A file that replaces a damaged one hands out ids above every id of the old one
        (unknown when its header was damaged: then above the time in microseconds), so an
        old cursor or Last-Event-ID never points into the new file."""
        (newest,) = connection.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
        floor = self._last_key
        if new and self.health.moved:
            floor = max(floor, time.time_ns() // 1000)
        if newest < floor:
            connection.execute("DELETE FROM sqlite_sequence WHERE name = 'entries'")
            connection.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('entries', ?)", (floor,)
            )
        self._last_key = max(newest, floor)

    def _switch(self, db: sqlite3.Connection | None) -> None:
        """Use `db` from now on (None: off until the next reopen)."""
        with self._lock:
            old, self.db = self.db, db
            if db is not None:
                self._generation += 1
                self._connections.append(db)
            self._serving = self._generation if db is not None else None
        if old is not None:
            self._forget(old)
        if db is None:
            self.reopen_at = time.monotonic() + self.reopen_interval
        else:
            self.health.recover()
        self.on_change()

    def replace(self, fault: Fault) -> None:
        self._switch(None)  # readers answer 503 meanwhile
        self._switch(replace_damaged(self.path, fault, self._create, self.health))

    def verify(self) -> None:
        """Read every page once (start-up does not wait for it): damage that no statement
        would meet for a while is found now."""
        if self.db is None:
            return
        try:
            check_integrity(self.db)
        except STORE_ERRORS as exc:
            self.failed(Fault.of(exc))

    def failed(self, fault: Fault) -> None:
        """A statement failed: a damaged file is replaced; anything else is reported (the
        file stays in use, so the first write that works again ends it)."""
        if fault.reason == DAMAGED:
            self.replace(fault)
        else:
            self.health.degrade(fault)

    def heal(self) -> None:
        """Deal with damage a reader found; reopen an unusable file when it is time."""
        with self._lock:
            damage, self._damage = self._damage, None
        if damage is not None and self.db is not None:
            self.replace(damage)
        if self.db is None and time.monotonic() >= self.reopen_at:
            self.open(verify=True)

    def write(self, rows: list[tuple[Any, ...]]) -> bool:
        """Insert `rows` (once more into the new file if this one is damaged); False when
        they could not be stored, and the health says why."""
        for _ in range(2):
            if self.db is None:
                return False
            try:
                self._insert(self.db, rows)
            except sqlite3.Error as exc:
                fault = Fault.of(exc)
                self.failed(fault)
                if fault.reason != DAMAGED:
                    return False
            else:
                self.health.recover()
                return True
        return False

    def _insert(self, connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        try:
            connection.execute("BEGIN")
            connection.executemany(INSERT, rows)
            connection.execute("COMMIT")
            (key,) = connection.execute("SELECT last_insert_rowid()").fetchone()
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        self._last_key = max(self._last_key, key)

    def stop(self) -> None:
        with self._lock:
            self._serving = None

    # -- the readers' side -------------------------------------------------------------------

    def fetch(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        connection, generation = self._reader()
        try:
            rows = connection.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            self._forget(connection)
            fault = Fault.of(exc)
            if fault.reason == DAMAGED:
                self._report_damage(generation, fault)
            raise LogStoreUnavailable(fault.reason, fault.detail) from None
        self._readers.put((connection, generation))
        return rows

    @contextlib.contextmanager
    def borrow(self) -> Iterator[sqlite3.Connection]:
        """A connection of the caller's own, closed afterwards."""
        connection, _ = self._reader()
        try:
            yield connection
        finally:
            self._forget(connection)

    def _reader(self) -> tuple[sqlite3.Connection, int]:
        with self._lock:
            serving = self._serving
        if serving is None:
            fault = self.health.fault
            if self.closing:
                raise LogStoreUnavailable("closed", "the service is shutting down")
            if fault is not None:
                raise LogStoreUnavailable(fault.reason, fault.detail)
            raise LogStoreUnavailable("opening", "the log store file is being opened; retry")
        while True:
            try:
                connection, generation = self._readers.get_nowait()
            except queue.Empty:
                break
            if generation == serving:
                return connection, generation
            self._forget(connection)
        try:
            # mode=rw: a reader never creates the file (the writer does, with its schema).
            uri = f"{self.path.absolute().as_uri()}?mode=rw"
            connection = self.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            fault = Fault.of(exc)
            raise LogStoreUnavailable(fault.reason, fault.detail) from None
        connection.set_trace_callback(self._count)
        with self._lock:
            self._connections.append(connection)
        return connection, serving

    def _count(self, statement: str) -> None:
        with self._lock:
            self.queries += 1

    def _report_damage(self, generation: int, fault: Fault) -> None:
        with self._lock:
            if generation != self._serving:
                return  # that file is replaced already
            self._damage = fault
        self.on_damage()

    def _forget(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def close(self) -> None:
        """Close every connection (the writer has stopped)."""
        with self._lock:
            self._serving = None
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
