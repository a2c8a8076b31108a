"""No secret and no query string reaches a log sink or a span."""

from __future__ import annotations

import io
import logging
from typing import Any

import httpx
import pytest
from loguru import logger
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry.logging import REDACTED, configure_logging, flush_logging
from tests.harness.inprocess import serving
from tests.polling import wait_until
from tests.telemetry.conftest import TracedApp

# These tests configure loguru for the whole process: its defaults come back after each.
pytestmark = pytest.mark.usefixtures("quiet_logs")

SECRETS = ("SECRET-QUERY", "SECRET-BEARER", "SECRET-EXTRA", "SECRET-NESTED", "SECRET-LOCAL")


def fail_with(token: str) -> None:
    raise ValueError("could not log in")


def log_secrets() -> None:
    logger.bind(channel="2").warning(
        "GET /stream/2.ts?token=SECRET-QUERY&x=1 with Authorization: Bearer SECRET-BEARER",
        api_token="SECRET-EXTRA",
        request={"url": "http://tv.lan/?token=SECRET-NESTED", "method": "GET"},
    )
    logging.getLogger("uvicorn.error").warning("sent bearer %s", "SECRET-BEARER")
    local = "-".join(("SECRET", "LOCAL"))  # a traceback's source lines never show it
    try:
        fail_with(local)
    except ValueError:
        logger.exception("login failed")


def test_every_sink_gets_redacted_entries(log_entries: list[dict[str, Any]]) -> None:
    outputs = []
    for fmt in ("json", "text"):
        stream = io.StringIO()
        stored: list[dict[str, Any]] = []
        configure_logging("INFO", fmt, stream=stream, sinks=[stored.append], background=True)
        log_secrets()
        assert flush_logging(5)
        logger.remove()
        assert len(stored) == 3 and "login failed" in stream.getvalue()
        outputs += [stream.getvalue(), repr(stored)]
        first = stored[0]
        assert first["message"] == (
            f"GET /stream/2.ts?token={REDACTED}&x=1 with Authorization: {REDACTED}"
        )
        assert first["extra"] == {
            "api_token": REDACTED,
            "request": {"url": f"http://tv.lan/?token={REDACTED}", "method": "GET"},
        }
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output


async def test_spans_carry_no_query_string(
    traced_app: TracedApp, exporter: InMemorySpanExporter
) -> None:
    app = traced_app("ok", mode="on_demand")
    query = "token=SECRET-QUERY&x=1"
    async with (
        serving(app) as (base, _),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        assert (await client.get(f"/api/channels?{query}")).status_code == 200
        assert (await client.get(f"/api/channels/1?{query}")).status_code == 200
        # The application below the tracing still gets the query string.
        refused = await client.get("/api/logs/entries?limit=0&token=SECRET-QUERY")
        assert refused.status_code == 400 and "limit" in refused.json()["detail"]
        async with client.stream("GET", f"/stream/1.ts?{query}") as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                break

        def all_ended() -> bool:
            return len([s for s in exporter.get_finished_spans() if s.name.startswith("GET ")]) == 4

        await wait_until(all_ended, 30, "the four request spans")
    traced = [s for s in exporter.get_finished_spans() if s.name.startswith("GET ")]
    assert {s.attributes.get("http.route") for s in traced if s.attributes} == {
        "/api/channels",
        "/api/channels/{number:int}",
        "/api/logs/entries",
        "/stream/{number:int}.ts",
    }
    for span in exporter.get_finished_spans():
        for key, value in (span.attributes or {}).items():
            assert "SECRET" not in str(value) and "?" not in str(value), (span.name, key)
