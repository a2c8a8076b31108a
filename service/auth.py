"""Bearer token check for the operator API, when `EXSTREAM_API_TOKEN` is set.

`/api/logs*` and every `/api/*` request that is not GET/HEAD need the token; streams,
playlists, `/metrics` and probes stay open so that players and scrapers need nothing.
With no token and a bind beyond loopback, the logs API is refused: log lines name
files and directories that only operators should see.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})


def is_logs_api(path: str) -> bool:
    return path == "/api/logs" or path.startswith("/api/logs/")


def needs_token(method: str, path: str) -> bool:
    if is_logs_api(path):
        return True
    return path.startswith("/api/") and method not in READ_METHODS


def authorized(header: str | None, token: str) -> bool:
    if header is None:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_token(scope["method"], scope["path"]):
            header = Headers(scope=scope).get("authorization")
            if not authorized(header, self.token):
                detail = "missing bearer token" if header is None else "invalid bearer token"
                response = JSONResponse(
                    {"error": "unauthorized", "detail": detail},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="exstream"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LogsNeedTokenMiddleware:
    """403 `token_required` for the logs API: bound beyond loopback with no token set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_logs_api(scope["path"]):
            detail = "beyond loopback, the logs API is served only with EXSTREAM_API_TOKEN set"
            response = JSONResponse({"error": "token_required", "detail": detail}, status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
