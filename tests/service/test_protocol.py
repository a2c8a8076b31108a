from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.config import ChannelConfig, ServerSettings, Settings
from service.protocol import (
    MIN_CONNECTIONS,
    ClientLimits,
    ConnectionGuard,
    client_limits,
    derived_max_connections,
    raise_open_files_limit,
)
from telemetry.metrics import Metrics
from tests.loglines import capturing, message

LIMITS = ClientLimits(max_connections=40, max_header_bytes=32768, header_timeout=10.0)


@pytest.fixture
def messages() -> Iterator[list[str]]:
    with capturing(message, "INFO") as found:
        yield found


def settings(channels: int, **server: Any) -> Settings:
    return Settings(
        path=Path("channels.toml"),
        server=replace(ServerSettings(), **server),
        channels=tuple(ChannelConfig(number=n, name=str(n)) for n in range(1, channels + 1)),
    )


def test_the_derived_cap_leaves_descriptors_for_each_channel() -> None:
    assert derived_max_connections(1024, 4) == 1024 - 64 - 4 * 8
    assert derived_max_connections(100, 20) == MIN_CONNECTIONS


def test_an_explicit_cap_wins_and_is_warned_about_when_it_leaves_too_few_files(
    messages: list[str],
) -> None:
    assert client_limits(settings(2), 1024).max_connections == 1024 - 64 - 16
    assert client_limits(settings(2, max_connections=100), 1024).max_connections == 100
    assert messages == []
    limits = client_limits(settings(2, max_connections=5000, header_timeout=2.0), 1024)
    assert limits == ClientLimits(5000, 32768, 2.0)
    assert len(messages) == 1 and "spawns may fail" in messages[0]


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(messages: list[str]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip("needs a finite hard limit of at least 512")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert messages == [f"open files limit {hard} (raised from 256)"]
        assert raise_open_files_limit() == hard
        assert messages[-1] == f"open files limit {hard}"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def answer(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    length = next(int(line.split(": ")[1]) for line in lines if line.startswith("content-length"))
    assert length == len(body)
    decoded: dict[str, Any] = json.loads(body)
    return lines, decoded


def test_refusals_answer_with_a_json_error_and_are_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    guard = ConnectionGuard(LIMITS, metrics)
    lines, body = answer(guard.refuse("header_too_large"))
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert "connection: close" in lines
    assert body == {"error": "header_too_large", "detail": "request head over 32768 bytes"}
    lines, body = answer(guard.refuse("connection_limit"))
    assert lines[0] == "HTTP/1.1 503 Service Unavailable" and "retry-after: 5" in lines
    assert body["error"] == "too_many_connections"
    lines, body = answer(guard.refuse("header_timeout"))
    assert lines[0] == "HTTP/1.1 408 Request Timeout" and body["error"] == "header_timeout"
    assert guard.refuse("idle") == b""  # closed without an answer
    for reason in ("header_too_large", "connection_limit", "header_timeout", "idle"):
        value = metrics.registry.get_sample_value(
            "exstream_http_connections_rejected_total", {"reason": reason}
        )
        assert value == 1, reason
    assert metrics.registry.get_sample_value("exstream_http_connections_limit") == 40
