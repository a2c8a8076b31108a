from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger
from prometheus_client import CollectorRegistry

from service.api.logs import tail
from service.app import create_app, log_store_of
from service.config import LogSettings, parse_settings
from service.errors import ConfigError
from service.logfile import LogStoreUnavailable
from service.logstore import LogFilter, LogStore, micros
from telemetry.logging import REDACTED, configure_logging, redact, redact_value
from telemetry.metrics import Metrics
from tests.damage import DAMAGES
from tests.harness.config import app_settings
from tests.loglines import capturing, level_and_message
from tests.polling import wait_until
from tests.service.api.conftest import running

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def entry(message: str, **fields: Any) -> dict[str, Any]:
    moment = fields.pop("at", NOW)
    return {
        "time": moment.isoformat(timespec="microseconds"),
        "level": fields.pop("level", "INFO"),
        "message": message,
        "logger": fields.pop("logger", "tests"),
        "channel": fields.pop("channel", None),
        "trace_id": fields.pop("trace_id", None),
        "span_id": fields.pop("span_id", None),
        "extra": fields.pop("extra", {}),
    }


StoreFactory = Callable[..., LogStore]


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    stores: list[LogStore] = []

    def make(**kwargs: Any) -> LogStore:
        settings = kwargs.pop("settings", LogSettings())
        store = LogStore(
            kwargs.pop("path", tmp_path / f"logs{len(stores)}.sqlite"),
            settings,
            Metrics(CollectorRegistry()),
            clock=kwargs.pop("clock", NOW.timestamp),
            **kwargs,
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def started(make_store: StoreFactory, **kwargs: Any) -> LogStore:
    store = make_store(**kwargs)
    await store.start()
    return store


def sample(store: LogStore, name: str, /, **labels: str) -> float:
    return store.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_entries_come_back_newest_first_with_their_fields(make_store: StoreFactory) -> None:
    store = await started(make_store)
    for i in range(5):
        store.append(entry(f"line {i}", channel="3", extra={"n": i}, at=NOW + timedelta(seconds=i)))
    await store.flush()
    page = await store.page(LogFilter(), None, 3)
    assert [e.message for e in page] == ["line 4", "line 3", "line 2"]
    newest = page[0]
    assert newest.channel == "3"
    assert newest.extra == {"n": 4}
    assert newest.time == (NOW + timedelta(seconds=4)).isoformat(timespec="microseconds")
    assert await store.get(newest.key) == newest
    assert newest.as_json()["id"] == newest.id
    rest = await store.page(LogFilter(), page[-1].key, 10)
    assert [e.message for e in rest] == ["line 1", "line 0"]
    assert sample(store, "exstream_log_entries_total", level="INFO") == 5


async def test_filters(make_store: StoreFactory) -> None:
    store = await started(make_store)
    trace = "ab" * 16
    rows = [
        entry("debug noise", level="DEBUG", at=NOW),
        entry("warn on 1", level="WARNING", channel="1", at=NOW + timedelta(seconds=1)),
        entry("ERROR 100% full_disk", level="ERROR", channel="2", at=NOW + timedelta(seconds=2)),
        entry("traced", trace_id=trace, at=NOW + timedelta(seconds=3)),
        entry("custom level", level="NOTICE", at=NOW + timedelta(seconds=4)),
    ]
    for row in rows:
        store.append(row)
    await store.flush()

    async def messages(**where: Any) -> list[str]:
        return [e.message for e in await store.page(LogFilter(**where), None, 100)]

    assert await messages(min_level=30) == ["ERROR 100% full_disk", "warn on 1"]
    assert await messages(min_level=20) == [
        "custom level",
        "traced",
        "ERROR 100% full_disk",
        "warn on 1",
    ]
    assert await messages(channel="1") == ["warn on 1"]
    assert await messages(trace_id=trace) == ["traced"]
    assert await messages(q="error") == ["ERROR 100% full_disk"]
    assert await messages(q="100%") == ["ERROR 100% full_disk"]
    assert await messages(q="ERROR_100") == []  # "_" is literal, not a wildcard
    assert await messages(q="full_disk") == ["ERROR 100% full_disk"]
    start = micros(NOW + timedelta(seconds=1))
    end = micros(NOW + timedelta(seconds=3))
    assert await messages(since_us=start, until_us=end) == ["ERROR 100% full_disk", "warn on 1"]
    assert await messages(min_level=30, channel="2", q="disk") == ["ERROR 100% full_disk"]
    after = await store.after(LogFilter(), (await store.page(LogFilter(), None, 5))[-1].key, 2)
    assert [e.message for e in after] == ["warn on 1", "ERROR 100% full_disk"]


async def test_keyset_pages_lose_and_repeat_nothing_while_entries_arrive(
    make_store: StoreFactory,
) -> None:
    store = await started(make_store)
    for i in range(1000):
        store.append(entry(f"old {i}"))
    await store.flush()
    seen: list[int] = []
    before: int | None = None
    while True:
        page = await store.page(LogFilter(), before, 97)
        for i in range(10):
            store.append(entry(f"new {i}"))
        await store.flush()
        if not page:
            break
        seen += [e.key for e in page]
        before = page[-1].key
    assert len(seen) == len(set(seen)) == 1000
    assert seen == sorted(seen, reverse=True)


async def test_a_full_queue_drops_and_counts(make_store: StoreFactory) -> None:
    store = make_store(settings=LogSettings(queue_size=10))
    for i in range(25):
        store.append(entry(f"line {i}"))
    assert sample(store, "exstream_logs_dropped_total", reason="queue_full") == 15
    await store.start()
    await store.flush()
    assert len(await store.page(LogFilter(), None, 100)) == 10


async def test_append_never_blocks_from_other_threads(make_store: StoreFactory) -> None:
    store = await started(make_store)

    def burst(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            store.append(entry(f"thread line {i}"))
        return time.perf_counter() - started

    durations = await asyncio.gather(*(asyncio.to_thread(burst, 2000) for _ in range(4)))
    await store.flush()
    stored = await store.page(LogFilter(), None, 1000)
    dropped = sample(store, "exstream_logs_dropped_total", reason="queue_full")
    assert len(stored) + dropped >= 1000
    assert sample(store, "exstream_log_entries_total", level="INFO") + dropped == 8000
    assert max(durations) < 30


async def test_retention_by_age_and_rows(make_store: StoreFactory) -> None:
    store = await started(make_store, settings=LogSettings(retention_days=1, max_rows=1000))
    store.append(entry("too old", at=NOW - timedelta(days=2)))
    for i in range(1500):
        store.append(entry(f"recent {i}", at=NOW - timedelta(hours=1)))
    await store.flush()
    await asyncio.to_thread(store.enforce_retention)
    kept = await store.page(LogFilter(), None, 1000)
    assert len(kept) == 1000
    assert kept[-1].message == "recent 500"
    assert await store.page(LogFilter(), kept[-1].key, 10) == []


async def test_the_writer_enforces_retention_by_itself(make_store: StoreFactory) -> None:
    clock = [NOW.timestamp()]
    store = await started(
        make_store, settings=LogSettings(retention_days=1), clock=lambda: clock[0],
        retention_interval=0.05,
    )  # fmt: skip
    store.append(entry("soon expired"))
    await store.flush()
    (stored,) = await store.page(LogFilter(), None, 10)
    clock[0] += 2 * 86400
    await wait_until(lambda: store.get_sync(stored.key) is None, 10, "retention to run")


async def test_secrets_are_redacted_before_storage(make_store: StoreFactory) -> None:
    store = await started(make_store)
    store.append(
        entry(
            "GET /x?token=abc123&x=1 Authorization: Bearer eyJhbGci.payload.sig password=hunter2",
            extra={
                "headers": {"Authorization": "Basic dXNlcjpwYXNz", "accept": "*/*"},
                "url": "http://h/?secret=s3cr3t",
                "api_token": "tok",
            },
        )
    )
    await store.flush()
    (stored,) = await store.page(LogFilter(), None, 1)
    text = stored.message + repr(stored.extra)
    for secret in ("abc123", "eyJhbGci", "hunter2", "dXNlcjpwYXNz", "s3cr3t", "'tok'"):
        assert secret not in text
    assert "x=1" in stored.message
    assert stored.extra["headers"]["accept"] == "*/*"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
        ("sent bearer abc.def-ghi", f"sent bearer {REDACTED}"),
        ('{"password": "pw1"}', f'{{"password": "{REDACTED}"}}'),
        ("db_password=pw1 user=bob", f"db_password={REDACTED} user=bob"),
        ("token bucket refilled: 5 tokens", "token bucket refilled: 5 tokens"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1))
def test_redacted_secret_values_do_not_survive(secret: str) -> None:
    for template, expected in [
        ("token={}", "token={}"),
        ("password={} ok", "password={} ok"),
        ("Authorization: Bearer {}", "Authorization: {}"),
        ("secret={}&a=1", "secret={}&a=1"),
        ("sent Bearer {}", "sent Bearer {}"),
    ]:
        assert redact(template.format(secret)) == expected.format(REDACTED)
    assert redact_value({"token": secret}) == {"token": REDACTED}


async def test_commits_wake_tails_and_close_ends_them(make_store: StoreFactory) -> None:
    store = await started(make_store)
    changed = store.changed()
    store.append(entry("wake up"))
    async with asyncio.timeout(10):
        await changed.wait()
    closing = store.changed()
    store.close_streams()
    assert closing.is_set()
    assert store.closing


def test_logs_section_of_the_config(tmp_path: Path) -> None:
    data = {"logs": {"retention_days": 0.5, "max_rows": 5000}}
    settings = parse_settings(data, tmp_path / "channels.toml", {})
    assert settings.logs == LogSettings(retention_days=0.5, max_rows=5000)
    bad = {"logs": {"retention_days": 0, "max_rows": 10, "queue_size": "big", "colour": 1}}
    with pytest.raises(ConfigError) as caught:
        parse_settings(bad, tmp_path / "channels.toml", {})
    problems = "\n".join(caught.value.problems)
    for key in ("logs.retention_days", "logs.max_rows", "logs.queue_size", "logs.colour"):
        assert key in problems


# -- a disk or a file that turns hostile ------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[list[tuple[str, str]]]:
    """(level, message) of every loguru line while the test runs."""
    with capturing(level_and_message) as lines:
        yield lines


def said(lines: list[tuple[str, str]], level: str, start: str) -> int:
    return sum(1 for lvl, message in lines if lvl == level and message.startswith(start))


def aside(directory: Path, name: str) -> list[Path]:
    """The damaged copies of `name` (not their journal files)."""
    copies = directory.glob(f"{name}.damaged-*")
    return sorted(p for p in copies if not p.name.endswith(("-wal", "-shm", "-journal")))


class _Faulty(sqlite3.Connection):
    """A connection that fails once, with a SQLite error code, when its `trap` is armed."""

    trap: _Trap | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if self.trap is not None:
            self.trap.spring(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        if self.trap is not None:
            self.trap.spring(sql)
        return super().executemany(sql, parameters)


class _Trap:
    def __init__(self, code: int, message: str, statement: str, readers: bool) -> None:
        self.code = code
        self.message = message
        self.statement = statement
        self.readers = readers
        self.armed = threading.Event()

    def connect(self, database: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = sqlite3.connect(database, factory=_Faulty, **kwargs)
        assert isinstance(connection, _Faulty)
        if bool(kwargs.get("uri")) == self.readers:  # readers open by URI, the writer not
            connection.trap = self
        return connection

    def spring(self, sql: str) -> None:
        if sql.lstrip().startswith(self.statement) and self.armed.is_set():
            self.armed.clear()
            error = sqlite3.DatabaseError(self.message)
            error.sqlite_errorcode = self.code
            raise error


def corrupt(statement: str, readers: bool) -> _Trap:
    return _Trap(sqlite3.SQLITE_CORRUPT, "database disk image is malformed", statement, readers)


async def trapped(make_store: StoreFactory, path: Path, trap: _Trap) -> LogStore:
    """A started store at `path` that holds one entry ("old"), `trap` armed."""
    store = await started(make_store, path=path, connect=trap.connect)
    store.append(entry("old"))
    await store.flush()
    trap.armed.set()
    return store


async def damaged_store_file(make_store: StoreFactory, path: Path, damage: str) -> int:
    """A store file with 5000 entries, damaged; the highest id it handed out."""
    old = await started(make_store, path=path)
    for i in range(5000):
        old.append(entry(f"old {i}", level="ERROR" if i % 7 == 0 else "INFO"))
    await old.flush()
    key = await old.last_key()
    await old.close()
    damage_file(path, damage)
    return key


def damage_file(path: Path, damage: str) -> None:
    path.write_bytes(DAMAGES[damage](path.read_bytes()))


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_a_damaged_file_is_moved_aside_and_created_again_at_start(
    make_store: StoreFactory, tmp_path: Path, captured: list[tuple[str, str]], damage: str
) -> None:
    path = tmp_path / "logs.sqlite"
    old_key = await damaged_store_file(make_store, path, damage)
    evidence = path.read_bytes()
    store = await started(make_store, path=path)
    store.append(entry("new", level="ERROR"))
    await store.flush()  # the writer checked every page before it took the entry
    (copy,) = aside(tmp_path, "logs.sqlite")
    assert copy.read_bytes() == evidence
    (new,) = await store.page(LogFilter(), None, 10)
    assert new.message == "new"
    assert [e.message for e in await store.page(LogFilter(min_level=40), None, 10)] == ["new"]
    assert new.key > old_key  # an old cursor or Last-Event-ID never points into the new file
    assert store.health.as_json() == {"degraded": False, "moved_aside": [copy.name]}
    assert sample(store, "exstream_storage_damaged_total", store="logs") == 1
    assert sample(store, "exstream_storage_degraded", store="logs") == 0
    assert said(captured, "WARNING", "log store was damaged") == 1


async def test_damage_a_query_meets_answers_503_and_the_file_is_replaced(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = await trapped(make_store, tmp_path / "logs.sqlite", corrupt("SELECT", readers=True))
    with pytest.raises(LogStoreUnavailable) as caught:
        await store.page(LogFilter(min_level=40), None, 10)
    assert (caught.value.status_code, caught.value.code) == (503, "log_store_unavailable")
    assert caught.value.reason == "damaged"
    store.append(entry("new"))
    await store.flush()  # the writer replaced the file first
    assert len(aside(tmp_path, "logs.sqlite")) == 1
    assert [e.message for e in await store.page(LogFilter(), None, 10)] == ["new"]
    assert sample(store, "exstream_storage_damaged_total", store="logs") == 1


async def test_damage_an_insert_meets_moves_the_file_aside_and_loses_no_entry(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    trap = corrupt("INSERT", readers=False)
    store = await trapped(make_store, tmp_path / "logs.sqlite", trap)
    store.append(entry("during"))
    await store.flush()
    assert not trap.armed.is_set()
    assert len(aside(tmp_path, "logs.sqlite")) == 1
    assert [e.message for e in await store.page(LogFilter(), None, 10)] == ["during"]
    assert (
        sum(
            sample(store, "exstream_logs_dropped_total", reason=r)
            for r in ("queue_full", "unavailable", "write_failed", "closed")
        )
        == 0
    )


async def test_a_store_that_cannot_open_is_off_until_it_can_and_says_so_once(
    make_store: StoreFactory, tmp_path: Path, captured: list[tuple[str, str]]
) -> None:
    path = tmp_path / "logs.sqlite"
    path.mkdir()  # a directory where the file should be: SQLite cannot open it, even as root
    attempts: list[object] = []

    def connect(database: Any, **kwargs: Any) -> sqlite3.Connection:
        attempts.append(database)
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    store = await started(make_store, path=path, connect=connect, reopen_interval=0.02)
    assert store.health.fault is not None and store.health.fault.reason == "unwritable"
    assert sample(store, "exstream_storage_degraded", store="logs") == 1
    store.append(entry("lost"))
    await store.flush()
    assert sample(store, "exstream_logs_dropped_total", reason="unavailable") == 1
    with pytest.raises(LogStoreUnavailable) as caught:
        await store.page(LogFilter(), None, 10)
    assert caught.value.reason == "unwritable"
    await wait_until(lambda: len(attempts) >= 4, 10, "a few reopen attempts")
    path.rmdir()
    await wait_until(lambda: not store.health.degraded, 10, "the store to reopen")
    store.append(entry("kept"))
    await store.flush()
    assert [e.message for e in await store.page(LogFilter(), None, 10)] == ["kept"]
    assert sample(store, "exstream_storage_degraded", store="logs") == 0
    assert said(captured, "WARNING", "log store degraded (unwritable)") == 1
    assert said(captured, "INFO", "log store recovered") == 1


async def test_a_live_tail_says_why_the_store_is_off_and_goes_on_when_it_is_back(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    path = tmp_path / "logs.sqlite"
    path.mkdir()
    store = await started(make_store, path=path, reopen_interval=0.02)
    events = tail(store, LogFilter(), 0, keepalive=0.05)
    try:
        async with asyncio.timeout(10):
            assert await anext(events) == ": exstream log tail\n\n"
            said_why = await anext(events)
            assert said_why.startswith(": the log store cannot answer now (unwritable)")
            path.rmdir()
            await wait_until(lambda: not store.health.degraded, 10, "the store to reopen")
            store.append(entry("back"))
            await store.flush()
            while not (event := await anext(events)).startswith("id: "):
                pass
        assert '"message": "back"' in event
    finally:
        await events.aclose()


async def test_a_full_disk_drops_and_counts_entries_and_reads_still_answer(
    make_store: StoreFactory, captured: list[tuple[str, str]]
) -> None:
    store = await started(make_store)
    store.append(entry("before"))
    await store.flush()
    db = store.file.db
    assert db is not None
    # The writer waits on its queue: the file stops growing, as on a full disk.
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")
    for batch in range(3):
        for i in range(2000):
            store.append(entry(f"batch {batch} line {i} " + "x" * 100))
        await store.flush()
    assert store.health.fault is not None and store.health.fault.reason == "disk_full"
    assert sample(store, "exstream_logs_dropped_total", reason="write_failed") == 6000
    assert sample(store, "exstream_storage_degraded", store="logs") == 1
    assert [e.message for e in await store.page(LogFilter(), None, 10)] == ["before"]
    db.execute("PRAGMA max_page_count = 1073741823")
    store.append(entry("after"))
    await store.flush()
    assert [e.message for e in await store.page(LogFilter(), None, 10)] == ["after", "before"]
    assert sample(store, "exstream_storage_degraded", store="logs") == 0
    assert said(captured, "WARNING", "log store degraded (disk_full)") == 1
    assert said(captured, "INFO", "log store recovered") == 1


async def test_entries_appended_after_close_are_counted(make_store: StoreFactory) -> None:
    store = await started(make_store)
    store.append(entry("in time"))
    await store.close()
    store.append(entry("too late"))
    assert sample(store, "exstream_logs_dropped_total", reason="closed") == 1
    assert sample(store, "exstream_log_entries_total", level="INFO") == 1


@pytest.mark.usefixtures("quiet_logs")
async def test_lines_logged_while_the_app_shuts_down_reach_the_store(tmp_path: Path) -> None:
    # No ffmpeg: the slate fails at once, so nothing holds the shutdown up between its
    # last line and the store's close.
    data = {"server": {"data_dir": str(tmp_path / "data")}, "ffmpeg": {"ffmpeg": "no-ffmpeg"}}
    app = create_app(app_settings(data, tmp_path / "channels.toml"), registry=CollectorRegistry())
    store = log_store_of(app)
    seen: list[str] = []
    delivered: list[str] = []

    def sink(line: dict[str, Any]) -> None:
        seen.append(line["message"])
        delivered.append(line["message"])
        store.append(line)

    # As `serve` does, with stderr written in the background: the store gets each entry
    # from the thread that logs it, so the shutdown's last lines are there, or counted.
    configure_logging("INFO", "json", stream=io.StringIO(), sinks=[sink], background=True)
    async with running(app):
        await wait_until(lambda: any(m.startswith("no slate clip") for m in seen), 10, "slate")
        for i in range(20):
            logger.info("busy {}", i)
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        stored = [m for (m,) in db.execute("SELECT message FROM entries")]
    assert {f"busy {i}" for i in range(20)} | {"exstream stopped"} <= set(stored)
    dropped = sample(store, "exstream_logs_dropped_total", reason="closed")
    assert len(stored) + dropped == len(delivered)
