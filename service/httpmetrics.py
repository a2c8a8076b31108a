"""Counts every HTTP request by route template (never the raw path), method and status."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry.metrics import Metrics, trace_exemplar

UNMATCHED = "unmatched"
# Responses that last as long as the client stays: a viewer's stream, a live log tail.
ENDLESS_TYPES = (b"video/mp2t", b"text/event-stream")


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    """For endless responses (streams, log tails) the duration is the time to the
    response headers, not the session."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            route, method = route_template(scope), scope["method"]
            self.metrics.http_requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.http_duration.labels(route=route, method=method).observe(
                time.perf_counter() - started, exemplar=trace_exemplar()
            )

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if _endless(message):
                    observe()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe()


def _endless(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in ENDLESS_TYPES
    return False
