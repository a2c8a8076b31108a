from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.config import Settings
from telemetry.tracing import TracingConfigError, configure_tracing, is_enabled, shutdown_tracing
from tests.harness.inprocess import serving
from tests.polling import wait_until
from tests.telemetry.conftest import TracedApp
from tests.telemetry.test_catalogue import assert_documented

STREAM_ROUTE = "GET /stream/{number:int}.ts"
SLOW_HEALTH = {"backoff_initial": 1, "backoff_max": 1}


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


async def test_http_spans_streams_and_logs_share_trace_ids(
    traced_app: TracedApp,
    exporter: InMemorySpanExporter,
    log_entries: list[dict[str, Any]],
) -> None:
    app = traced_app("ok", mode="on_demand", health=SLOW_HEALTH)
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with (
        serving(app) as (base, server),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        for path in ("/metrics", "/healthz", "/readyz", "/api/channels"):
            assert (await client.get(path)).status_code == 200
        # A media playlist (reloaded by every HLS player) is polling, not traced; the
        # multivariant playlist that starts a session is (here: a channel that is not).
        for path in ("/stream/9.m3u8", "/stream/9/index.m3u8"):
            assert (await client.get(path)).status_code == 404
        traced = await client.get(
            "/api/channels/1", headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"}
        )
        assert traced.status_code == 200
        first_received = 0
        async with client.stream("GET", "/stream/1.ts") as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                first_received += len(chunk)
                if first_received >= 188 * 200:
                    break

        def stream_span() -> ReadableSpan | None:
            found = [s for s in server_spans(exporter) if s.name == STREAM_ROUTE]
            return found[0] if found else None

        stream = await wait_until(stream_span, 30, "the stream's span to end")
        left = await wait_until(
            lambda: next((e for e in log_entries if "left after" in e["message"]), None),
            30,
            "the viewer-left log line",
        )

        # A stream the server ends (here: the hubs close, as at shutdown) ends its span
        # with its last body message; the attributes are on it before that.
        async with client.stream("GET", "/stream/1.ts") as response:
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received >= 188 * 200 and not server.lifespan.state["exstream"].channels.closing:
                    server.lifespan.state["exstream"].channels.close_hubs()
        closed = await wait_until(
            lambda: next(
                (
                    s
                    for s in server_spans(exporter)
                    if s.name == STREAM_ROUTE
                    and s is not stream
                    and s.attributes
                    and s.attributes.get("exstream.reason") == "channel_closed"
                ),
                None,
            ),
            30,
            "the second stream's span",
        )
        assert closed.attributes is not None
        assert closed.attributes["exstream.bytes_sent"] == received

    assert_documented(exporter.get_finished_spans())
    names = [s.name for s in server_spans(exporter)]
    # Scrapes, probes and media playlists are not traced; API routes are, by route template.
    assert sorted(names) == sorted(
        [
            "GET /api/channels",
            "GET /api/channels/{number:int}",
            "GET /stream/{number:int}/index.m3u8",
            STREAM_ROUTE,
            STREAM_ROUTE,
        ]
    )
    # W3C tracecontext from the caller is continued.
    api = next(s for s in server_spans(exporter) if s.name == "GET /api/channels/{number:int}")
    assert api.context is not None and api.parent is not None
    assert format(api.context.trace_id, "032x") == parent_trace
    assert format(api.parent.span_id, "016x") == parent_span
    assert (
        api.attributes is not None and api.attributes["http.route"] == "/api/channels/{number:int}"
    )

    # One span for the whole viewing, with what it got and why it ended; nothing per chunk.
    assert stream.attributes is not None
    assert stream.attributes["exstream.channel"] == "1"
    assert stream.attributes["exstream.reason"] == "client_closed"
    sent = stream.attributes["exstream.bytes_sent"]
    assert isinstance(sent, int) and sent >= first_received
    assert [s for s in exporter.get_finished_spans() if s.parent == stream.context] == []

    # The log line written while handling the request carries the request's trace.
    assert stream.context is not None
    assert left["trace_id"] == format(stream.context.trace_id, "032x")
    assert left["span_id"] == format(stream.context.span_id, "016x")
    assert left["extra"]["bytes_sent"] == sent


async def test_otlp_export_reaches_a_receiver(
    otlp_receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    endpoint, bodies = otlp_receiver
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "exstream-test",
    }
    with pytest.MonkeyPatch.context() as env:
        # The exporter reads its endpoint itself, as the SDK documents.
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        provider = configure_tracing(environ, instance_id="instance-1")
        tracer = provider.get_tracer("exstream")
        check = tracer.start_span("health.check", attributes={"exstream.channel": "7"})
        with trace.use_span(check, end_on_exit=True):
            tracer.start_span("pool.acquire").end()
        shutdown_tracing(provider)  # flushes the batch

    assert [path for path, _ in bodies] == ["/v1/traces"] * len(bodies) and bodies
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(body for _, body in bodies[:1]))
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "exstream-test"
    assert resource["service.instance.id"] == "instance-1"
    assert resource["service.version"]
    received = [s for scope in resource_spans.scope_spans for s in scope.spans]
    by_name = {s.name: s for s in received}
    assert set(by_name) == {"health.check", "pool.acquire"}
    assert by_name["pool.acquire"].parent_span_id == by_name["health.check"].span_id
    attrs = {a.key: a.value.string_value for a in by_name["health.check"].attributes}
    assert attrs == {"exstream.channel": "7"}


def test_exporters_follow_the_standard_variables() -> None:
    provider = configure_tracing({})
    assert isinstance(provider, TracerProvider) and is_enabled(provider)
    assert provider.resource.attributes["service.name"] == "exstream"
    processors = provider._active_span_processor._span_processors
    assert processors == ()
    provider = configure_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(provider, TracerProvider)
    (processor,) = provider._active_span_processor._span_processors
    assert isinstance(processor, BatchSpanProcessor)
    assert isinstance(processor._batch_processor._exporter, ConsoleSpanExporter)
    shutdown_tracing(provider)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK itself
        unsampled = configure_tracing({}).get_tracer("t").start_span("x")
        assert not unsampled.get_span_context().trace_flags.sampled
    disabled = configure_tracing({"OTEL_SDK_DISABLED": "true"})
    assert isinstance(disabled, trace.NoOpTracerProvider) and not is_enabled(disabled)
    with pytest.raises(TracingConfigError, match="jaeger"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "otlp,jaeger"})
    with pytest.raises(TracingConfigError, match="grpc"):
        configure_tracing({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_tracing_off_means_no_http_middleware(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(Path("ffmpeg"))
    off = create_app(
        settings, registry=CollectorRegistry(), tracer_provider=trace.NoOpTracerProvider()
    )
    on = create_app(settings, registry=CollectorRegistry(), tracer_provider=TracerProvider())
    assert len(on.user_middleware) == len(off.user_middleware) + 1
