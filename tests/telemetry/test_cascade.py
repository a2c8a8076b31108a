"""The failure cascade as one trace: stall -> health.check -> channel.restart -> first output."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.polling import wait_until
from tests.telemetry.conftest import TracedApp, by_name
from tests.telemetry.test_catalogue import assert_documented

FAST_HEALTH = {
    "check_interval": 0.2,
    "stall_timeout": 1,
    # 1 is tenacity's default (other values warn: `initial` is deprecated there).
    "backoff_initial": 1,
    "backoff_max": 1,
}


def parent_id(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def child_of(finished: tuple[ReadableSpan, ...], name: str, parent: ReadableSpan) -> ReadableSpan:
    children = [s for s in by_name(finished, name) if parent_id(s) == span_id(parent)]
    assert len(children) == 1, f"{name} under {parent.name}: {children}"
    return children[0]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


async def test_stall_to_first_output_is_one_linked_trace(
    traced_app: TracedApp,
    exporter: InMemorySpanExporter,
    log_entries: list[dict[str, Any]],
) -> None:
    app = traced_app("stall", health={**FAST_HEALTH, "max_restarts": 5})

    def restarted() -> ReadableSpan | None:
        # A restart that reached its first output: that span has ended by now.
        finished = exporter.get_finished_spans()
        firsts = {parent_id(s) for s in by_name(finished, "channel.first_output")}
        for span in by_name(finished, "channel.restart"):
            outcome = span.attributes.get("exstream.outcome") if span.attributes else None
            if outcome == "started" and span_id(span) in firsts:
                return span
        return None

    async with app.router.lifespan_context(app):
        restart = await wait_until(restarted, 30, "a restart that produced output")
        finished = exporter.get_finished_spans()

    assert_documented(finished)
    # The restart outlives the check that decided it: a link, not a parent.
    assert restart.parent is None
    assert len(restart.links) == 1
    checks = [
        s
        for s in by_name(finished, "health.check")
        if s.context is not None and s.context == restart.links[0].context
    ]
    assert len(checks) == 1
    check = checks[0]
    assert check.attributes is not None
    assert check.attributes["exstream.channel"] == "1"
    assert check.attributes["exstream.reason"] == "stalled"
    assert float(check.attributes["exstream.since_output_seconds"]) > 1.0  # type: ignore[arg-type]

    assert restart.attributes is not None
    assert restart.attributes["exstream.channel"] == "1"
    assert restart.attributes["exstream.reason"] == "stalled"
    assert restart.attributes["exstream.attempt"] == 1
    assert restart.status.status_code is not StatusCode.ERROR

    acquire = child_of(finished, "pool.acquire", restart)
    wait = child_of(finished, "ratelimit.wait", acquire)
    spawn = child_of(finished, "ffmpeg.spawn", restart)
    first = child_of(finished, "channel.first_output", restart)
    for span in (acquire, wait, spawn, first):
        assert span.attributes is not None
        assert span.attributes["exstream.channel"] == "1"
        assert span.context is not None and restart.context is not None
        assert span.context.trace_id == restart.context.trace_id
    assert spawn.attributes is not None and int(spawn.attributes["process.pid"]) > 0  # type: ignore[arg-type]
    assert first.attributes is not None
    assert first.attributes["process.pid"] == spawn.attributes["process.pid"]
    # In order: the slot, then the process, then its first byte.
    assert acquire.end_time is not None and spawn.start_time is not None
    assert acquire.end_time <= spawn.start_time
    assert spawn.end_time is not None and first.end_time is not None
    assert spawn.end_time <= first.end_time

    # A log line written inside channel.restart carries that span's ids.
    trace_id, restart_span = hex_ids(restart)
    inside = [e for e in log_entries if e["message"].startswith("restart attempt")]
    assert any(e["trace_id"] == trace_id and e["span_id"] == restart_span for e in inside)
    assert all(e["channel"] == "1" for e in inside)
    # And the stall warning was written inside the health check.
    check_trace, check_span = hex_ids(check)
    stalls = [e for e in log_entries if e["span_id"] == check_span]
    assert stalls and all("stalled" in e["message"] for e in stalls)
    assert all(e["trace_id"] == check_trace for e in stalls)


async def test_refused_restart_is_an_error_span_with_its_reason(
    traced_app: TracedApp,
    exporter: InMemorySpanExporter,
    log_entries: list[dict[str, Any]],
) -> None:
    app = traced_app("fail", health={**FAST_HEALTH, "max_restarts": 1})

    def refused() -> ReadableSpan | None:
        for span in by_name(exporter.get_finished_spans(), "channel.restart"):
            if span.attributes and span.attributes.get("exstream.outcome") == "refused":
                return span
        return None

    async with app.router.lifespan_context(app):
        span = await wait_until(refused, 30, "a refused restart")
        finished = exporter.get_finished_spans()

    assert_documented(finished)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert "budget" in span.status.description
    assert span.attributes is not None
    assert span.attributes["exstream.reason"] == "exited"
    assert span.attributes["exstream.channel"] == "1"
    # The one admitted attempt before it: an error too (no output), with its attempt number.
    admitted = [
        s
        for s in by_name(finished, "channel.restart")
        if s.attributes and s.attributes.get("exstream.attempt") == 1
    ]
    assert admitted and all(s.status.status_code is StatusCode.ERROR for s in admitted)
    trace_id, span_hex = hex_ids(span)
    errors = [e for e in log_entries if e["level"] == "ERROR" and e["span_id"] == span_hex]
    assert errors and errors[0]["trace_id"] == trace_id
    assert errors[0]["extra"]["reason"] == "budget_exhausted"
