from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ServerSettings
from service.web.history import Series
from service.web.views import (
    SPARK_HEIGHT,
    SPARK_WIDTH,
    access,
    bit_rate,
    charts,
    polylines,
    web_logo,
)


def test_a_sparkline_is_right_aligned_on_the_hour_and_scaled_to_its_peak() -> None:
    (line,) = polylines([0.0, 5.0, 10.0], points=5)
    step = SPARK_WIDTH / 4
    assert line == f"{2 * step:.1f},{SPARK_HEIGHT:.1f} {3 * step:.1f},12.0 {SPARK_WIDTH:.1f},0.0"


def test_a_gap_splits_the_line_and_a_lone_point_draws_nothing() -> None:
    assert len(polylines([1.0, 2.0, None, 3.0, 4.0], points=5)) == 2
    assert polylines([None, 1.0, None], points=3) == ()
    assert polylines([], points=360) == ()


def test_all_zero_stays_on_the_baseline() -> None:
    (line,) = polylines([0.0, 0.0], points=2)
    assert line == f"0.0,{SPARK_HEIGHT:.1f} {SPARK_WIDTH:.1f},{SPARK_HEIGHT:.1f}"


@pytest.mark.parametrize(
    ("bits", "text"),
    [(0.0, "0 bit/s"), (999.0, "999 bit/s"), (1500.0, "1.5 kbit/s"), (4.2e6, "4.2 Mbit/s")],
)
def test_bit_rates_read_as_people_write_them(bits: float, text: str) -> None:
    assert bit_rate(bits) == text


def test_the_charts_say_what_they_show() -> None:
    made = charts(Series([None, 8000.0, 16000.0], [0, 2, 1], [None, 0, 3]), 360)
    assert made.output.label == "Output rate over the last hour: 16.0 kbit/s, peak 16.0 kbit/s"
    assert made.viewers.label == "Viewers over the last hour: 1, at most 2"
    assert made.restarts.label == "Restarts over the last hour: 3"


def test_only_web_addresses_are_shown_as_logos() -> None:
    assert web_logo("HTTPS://example.com/a.png") == "HTTPS://example.com/a.png"
    assert web_logo("/srv/logos/a.png") is None
    assert web_logo("javascript:alert(1)") is None
    assert web_logo(None) is None


@pytest.mark.parametrize(
    ("host", "token", "expected"),
    [
        ("127.0.0.1", None, "open"),
        ("127.0.0.1", "t", "token"),
        ("0.0.0.0", "t", "token"),
        ("0.0.0.0", None, "off"),
    ],
)
def test_access_follows_the_api_rules(host: str, token: str | None, expected: str) -> None:
    server = ServerSettings(host=host, data_dir=Path("data"), api_token=token)
    assert access(server) == expected
