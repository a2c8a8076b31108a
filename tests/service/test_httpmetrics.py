from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from service.httpmetrics import HttpMetricsMiddleware
from telemetry.metrics import Metrics

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}


def observed(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "exstream_http_request_duration_seconds_count", {"route": "unmatched", "method": "GET"}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("content_type", "timed_at_headers"),
    [
        (b"text/event-stream; charset=utf-8", True),  # a live log tail
        (b"video/mp2t", True),  # a viewer's stream
        (b"application/json", False),
    ],
)
async def test_endless_responses_are_timed_to_their_headers(
    content_type: bytes, timed_at_headers: bool
) -> None:
    metrics = Metrics(CollectorRegistry())
    gate = asyncio.Event()
    seen_at_first_body: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await gate.wait()  # the session goes on
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not seen_at_first_body:
            seen_at_first_body.append(observed(metrics))
            gate.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await HttpMetricsMiddleware(app, metrics)(SCOPE, receive, send)
    assert seen_at_first_body == [1.0 if timed_at_headers else 0.0]
    assert observed(metrics) == 1.0  # once, whichever way
