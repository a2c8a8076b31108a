from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.refusals import RefusalReport
from tests.conftest import FakeClock
from tests.loglines import capturing


@pytest.fixture
def records() -> Iterator[list[Any]]:
    with capturing(lambda record: record) as found:
        yield found


def lines(records: list[Any]) -> list[tuple[str, str]]:
    return [(r["level"].name, r["message"]) for r in records]


def test_a_flood_makes_one_line_per_reason_and_interval(
    clock: FakeClock, records: list[Any]
) -> None:
    report = RefusalReport(interval=60.0, clock=clock)
    assert report.record("client connection", "idle", "no request within 10s", level="INFO")
    for _ in range(500):
        clock.advance(0.1)
        assert not report.record("client connection", "idle", "no request within 10s")
    assert report.record("client connection", "connection_limit", "40 connections open")
    assert lines(records) == [
        ("INFO", "client connection refused (idle): no request within 10s"),
        ("WARNING", "client connection refused (connection_limit): 40 connections open"),
    ]
    clock.advance(11.0)
    assert report.record("client connection", "idle", "no request within 10s")
    assert lines(records)[-1] == (
        "WARNING",
        "client connection refused (idle): no request within 10s; 501 since the last report",
    )
    assert records[-1]["extra"] == {"reason": "idle", "count": 501}


def test_a_refusal_after_a_quiet_interval_is_reported_alone(
    clock: FakeClock, records: list[Any]
) -> None:
    report = RefusalReport(interval=60.0, clock=clock)
    report.record("live log tail", "log_tail_limit", "2 open")
    clock.advance(61.0)
    report.record("live log tail", "log_tail_limit", "2 open")
    assert [r["extra"]["count"] for r in records] == [1, 1]
