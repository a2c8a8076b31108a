"""Tracing set-up: the tracer provider, its exporters, and the HTTP server spans.

Exporters are chosen by the standard variables: `OTEL_TRACES_EXPORTER` (a comma list of
`otlp`, `console`, `none`; default `none`: spans are made, so logs and exemplars carry
trace ids, but sent nowhere), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`), and the
OTLP exporter's own `OTEL_EXPORTER_OTLP_*` variables; the SDK reads `OTEL_TRACES_SAMPLER`.
`OTEL_SDK_DISABLED=true` turns tracing off, HTTP instrumentation included.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.util.http import ExcludeList
from starlette.middleware import Middleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE = "exstream"
TRACER = "exstream"
EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("http/protobuf",)
# Scrapes and probes every few seconds would drown the traces that matter.
# Polling, not work: scrapes, probes, and the media playlist players reload about once
# per target duration each (counted by exstream_hls_requests_total).
UNTRACED_PATHS = ("/metrics", "/healthz", "/readyz", r"/stream/[0-9]+\.m3u8")


def route_span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """Span name `{method} {route}` and `http.route`, by the route template that matches
    (never the raw path, which would make one span name per channel or log id)."""
    method: str = scope.get("method", "")
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            template: str = getattr(route, "path", "")
            return f"{method} {template}".strip(), {"http.route": template}
    return method, {}


class TracingConfigError(ValueError):
    """An `OTEL_*` variable names something this build cannot do."""


def configure_tracing(
    environ: Mapping[str, str] | None = None,
    *,
    version: str = "unknown",
    instance_id: str | None = None,
) -> trace.TracerProvider:
    """A tracer provider for the service; a no-op one when `OTEL_SDK_DISABLED=true`."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return trace.NoOpTracerProvider()
    exporters = _exporters(env)
    resource = Resource.create(
        {
            SERVICE_NAME: env.get("OTEL_SERVICE_NAME", "").strip() or SERVICE,
            SERVICE_VERSION: version,
            SERVICE_INSTANCE_ID: instance_id or str(uuid.uuid4()),
        }
    )
    # shutdown_on_exit=False: the caller shuts down (flushes) in order, at its exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    unknown = [n for n in names if n and n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)}"
            f" (known: {', '.join(EXPORTERS)})"
        )
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in OTLP_PROTOCOLS:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol} is not supported"
                f" (supported: {', '.join(OTLP_PROTOCOLS)})"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def is_enabled(provider: trace.TracerProvider) -> bool:
    return not isinstance(provider, trace.NoOpTracerProvider)


def shutdown_tracing(provider: trace.TracerProvider) -> None:
    """Export what is still buffered, then stop the exporters."""
    if isinstance(provider, TracerProvider):
        provider.shutdown()


_QUERY_STRING = "exstream.query_string"


class _HttpTracing(OpenTelemetryMiddleware):
    """The instrumentation's middleware, with the chunks of a streamed body passed
    straight through: a stream sends thousands of them and none changes the span.

    It never sees the query string, which it would record (`http.url`, `url.query`) and
    which may carry a secret (`?token=`); the application below gets it back.
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(_with_query_string(app), **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            scope = {**scope, "query_string": b"", _QUERY_STRING: scope["query_string"]}
        await super().__call__(scope, receive, send)

    def _get_otel_send(self, *args: Any) -> Callable[[Message], Awaitable[None]]:
        traced: Callable[[Message], Awaitable[None]] = super()._get_otel_send(*args)  # type: ignore[no-untyped-call]
        send: Send = args[3]  # (server_span, span_name, scope, send, attributes)

        async def otel_send(message: Message) -> None:
            if message.get("more_body") and message["type"] == "http.response.body":
                await send(message)
            else:
                await traced(message)

        return otel_send


def _with_query_string(app: ASGIApp) -> ASGIApp:
    async def restored(scope: Scope, receive: Receive, send: Send) -> None:
        if _QUERY_STRING in scope:
            scope = {**scope, "query_string": scope[_QUERY_STRING]}
            del scope[_QUERY_STRING]
        await app(scope, receive, send)

    return restored


def http_tracing(provider: trace.TracerProvider) -> Middleware:
    """HTTP server spans named by route template (`GET /api/channels/{number:int}`).

    The ASGI middleware of the Starlette instrumentation, minus its per-message spans
    (one span per `send`, for every chunk of every viewer, about doubles the CPU of a
    stream), minus any work per streamed chunk, and minus query strings. A stream's span
    lasts as long as the viewer stays.
    """
    tracer = provider.get_tracer(
        "opentelemetry.instrumentation.starlette",
        schema_url="https://opentelemetry.io/schemas/1.11.0",
    )
    options: dict[str, Any] = {
        "excluded_urls": ExcludeList(
            [rf"^[a-z]+://[^/]+{path}(?:[/?]|$)" for path in UNTRACED_PATHS]
        ),
        "default_span_details": route_span_details,
        "tracer": tracer,
        # Request metrics are Prometheus's job here (telemetry.metrics).
        "meter_provider": NoOpMeterProvider(),
        "exclude_spans": ["send", "receive"],
    }
    return Middleware(_HttpTracing, **options)
