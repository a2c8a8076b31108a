"""Stores on the data disk (the log store, the probe cache): faults, and saying so once.

Streaming never needs the disk. When a store cannot write (a read-only or full disk) or
its file is damaged, the store degrades instead of failing, and its `StoreHealth` says
so once per change: one WARNING line, the `exstream_storage_degraded` gauge and the
`/readyz` detail; one INFO line when it works again. A damaged file is moved aside,
never deleted: it is the operator's evidence.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from telemetry.metrics import Metrics

T = TypeVar("T")

DAMAGED = "damaged"
DISK_FULL = "disk_full"
UNWRITABLE = "unwritable"
IO_ERROR = "io_error"
SIDECARS = ("-wal", "-shm", "-journal")

_SQLITE_REASONS = {
    sqlite3.SQLITE_CORRUPT: DAMAGED,
    sqlite3.SQLITE_NOTADB: DAMAGED,
    sqlite3.SQLITE_FULL: DISK_FULL,
    sqlite3.SQLITE_READONLY: UNWRITABLE,
    sqlite3.SQLITE_CANTOPEN: UNWRITABLE,
    sqlite3.SQLITE_PERM: UNWRITABLE,
}
_OS_REASONS = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: UNWRITABLE,
    errno.EACCES: UNWRITABLE,
    errno.EPERM: UNWRITABLE,
    errno.ENOTDIR: UNWRITABLE,
    errno.EEXIST: UNWRITABLE,  # a file where the data directory should be
}


class StoreDamaged(Exception):
    """An integrity check found damage that no statement has run into yet."""


STORE_ERRORS = (sqlite3.Error, OSError, StoreDamaged)


@dataclass(frozen=True, slots=True)
class Fault:
    reason: str  # damaged, disk_full, unwritable, io_error
    detail: str

    @classmethod
    def of(cls, exc: BaseException) -> Fault:
        if isinstance(exc, StoreDamaged):
            return cls(DAMAGED, str(exc))
        if isinstance(exc, sqlite3.Error):
            code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
            return cls(_SQLITE_REASONS.get(code, IO_ERROR), str(exc))
        if isinstance(exc, OSError):
            reason = _OS_REASONS.get(exc.errno or 0, IO_ERROR)
            # The file's name only: /readyz shows the detail to anyone (logs have the path).
            where = f": {Path(os.fsdecode(exc.filename)).name}" if exc.filename else ""
            return cls(reason, f"{exc.strerror or exc}{where}")
        return cls(IO_ERROR, str(exc))


def check_integrity(connection: sqlite3.Connection) -> None:
    """Raise StoreDamaged (or sqlite3.DatabaseError) when any page is damaged.

    quick_check reads every page (about 0.4 s for a million log entries), so damage in
    pages that no query happens to touch is found too.
    """
    rows = connection.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        raise StoreDamaged("; ".join(str(row[0]) for row in rows[:3]))


def move_aside(path: Path, clock: Callable[[], float] = time.time) -> Path:
    """Rename a damaged database (and its journal files) to `<name>.damaged-<UTC time>`."""
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = path.with_name(f"{path.name}.damaged-{stamp}")
    attempt = 1
    while any(p.exists() for p in (copy, *(_sidecar(copy, s) for s in SIDECARS))):
        attempt += 1
        copy = path.with_name(f"{path.name}.damaged-{stamp}-{attempt}")
    if path.exists():
        path.rename(copy)
    # Moved with it: a journal left behind would be replayed into the new file.
    for suffix in SIDECARS:
        sidecar = _sidecar(path, suffix)
        if sidecar.exists():
            sidecar.rename(_sidecar(copy, suffix))
    return copy


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


class StoreHealth:
    """Whether one store on the data disk works, and why not; thread-safe.

    Only changes are reported (a log line, the gauge): a store that keeps failing the
    same way says so once, not once per failed write.
    """

    def __init__(
        self,
        store: str,
        name: str,
        consequence: str,
        metrics: Metrics | None = None,
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store  # the metric label: logs, probe_cache
        self.name = name
        self.path = path
        self.consequence = consequence
        self.metrics = metrics
        self.clock = clock
        self.fault: Fault | None = None
        self.since: float | None = None
        self.moved: list[str] = []
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return self.fault is not None

    def degrade(self, fault: Fault) -> None:
        with self._lock:
            if self.fault is not None and self.fault.reason == fault.reason:
                return
            self.fault = fault
            self.since = self.clock()
            if self.metrics is not None:
                self.metrics.storage_degraded.labels(store=self.store).set(1)
        logger.bind(store=self.store, reason=fault.reason, path=str(self.path)).warning(
            "{} degraded ({}): {}; {} until it recovers; streaming is not affected",
            self.name, fault.reason, fault.detail, self.consequence,
        )  # fmt: skip

    def recover(self) -> None:
        if self.fault is None:  # the common case, without the lock
            return
        with self._lock:
            if self.fault is None:
                return
            self.fault = None
            self.since = None
            if self.metrics is not None:
                self.metrics.storage_degraded.labels(store=self.store).set(0)
        logger.bind(store=self.store, path=str(self.path)).info("{} recovered", self.name)

    def moved_aside(self, copy: Path, fault: Fault) -> None:
        with self._lock:
            self.moved.append(str(copy))
        if self.metrics is not None:
            self.metrics.storage_damaged.labels(store=self.store).inc()
        logger.bind(store=self.store, reason=DAMAGED, path=str(copy)).warning(
            "{} was damaged ({}): moved aside to {} and created again",
            self.name, fault.detail, copy,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            fault, since, moved = self.fault, self.since, list(self.moved)
        report: dict[str, Any] = {"degraded": fault is not None}
        if fault is not None and since is not None:
            report["reason"] = fault.reason
            report["detail"] = fault.detail
            report["since"] = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        if moved:  # names only: /readyz is open to anyone, the log lines have the paths
            report["moved_aside"] = [Path(copy).name for copy in moved]
        return report


def open_store(path: Path, open_file: Callable[[], T], health: StoreHealth) -> T | None:
    """`open_file()`; a damaged file is moved aside and created again. None, with the
    health degraded, when the store cannot be opened."""
    try:
        return open_file()
    except STORE_ERRORS as exc:
        fault = Fault.of(exc)
    if fault.reason == DAMAGED:
        return replace_damaged(path, fault, open_file, health)
    health.degrade(fault)
    return None


def replace_damaged(
    path: Path, fault: Fault, open_file: Callable[[], T], health: StoreHealth
) -> T | None:
    """Move the damaged file aside and open a new one; None, degraded, when that fails."""
    try:
        copy = move_aside(path, health.clock)
    except OSError as exc:
        health.degrade(
            Fault(DAMAGED, f"{fault.detail}; cannot move it aside: {Fault.of(exc).detail}")
        )
        return None
    health.moved_aside(copy, fault)
    try:
        return open_file()
    except STORE_ERRORS as exc:
        health.degrade(Fault.of(exc))
        return None
