"""Counts every HTTP request by route template (never the raw path), method and status."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry.metrics import Metrics, trace_exemplar

UNMATCHED = "unmatched"
STREAM_PREFIX = "/stream/"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    """For streams the duration is the time to the response headers, not the session."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        is_stream = scope["path"].startswith(STREAM_PREFIX)
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
                if is_stream:
                    observe()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe()
