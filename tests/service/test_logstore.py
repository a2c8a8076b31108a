from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from service.config import LogSettings, parse_settings
from service.errors import ConfigError
from service.logstore import REDACTED, LogFilter, LogStore, micros, redact, redact_value
from telemetry.metrics import Metrics
from tests.polling import wait_until

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
            tmp_path / f"logs{len(stores)}.sqlite",
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


def sample(store: LogStore, name: str, **labels: str) -> float:
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
    assert sample(store, "exstream_logs_dropped_total") == 15
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
    dropped = sample(store, "exstream_logs_dropped_total")
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
