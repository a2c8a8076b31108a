"""Refusal of cross-site requests that change state, with or without a token.

Any web page can make its visitor's browser POST to this service (a "simple" request:
no preflight), and the browser reaches addresses the page's author cannot: loopback,
the LAN. Such a request is refused unless it is one a browser only sends for a page of
this origin: `Content-Type: application/json` (cross-site, that needs a CORS preflight,
which is never granted), `Sec-Fetch-Site: same-origin` or `none` (the user's own
navigation), or an `Origin` naming this service. A request with neither `Origin` nor
`Sec-Fetch-Site` is not a browser's cross-site request: curl, players and Plex's
`/lineup.post` pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from loguru import logger
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from telemetry.metrics import Metrics

SAFE_METHODS = frozenset({"GET", "HEAD"})
SAME_ORIGIN_FETCHES = frozenset({"same-origin", "none"})
JSON = "application/json"


def is_cross_site(method: str, headers: Headers, origins: frozenset[str] = frozenset()) -> bool:
    """Whether a browser sent this state-changing request for another site's page.

    `origins` are `host[:port]` names the service is known by besides the `Host` header
    (that of `public_url`).
    """
    if method in SAFE_METHODS or _media_type(headers.get("content-type")) == JSON:
        return False
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in SAME_ORIGIN_FETCHES
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return True
    # "null" (sandboxed or privacy-sensitive pages) has no netloc: never this service.
    return not netloc or netloc not in {headers.get("host", "").lower(), *origins}


def _netloc(url: str | None) -> frozenset[str]:
    return frozenset({urlsplit(url).netloc.lower()}) if url else frozenset()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


class CrossSiteGuard:
    """403 `cross_site_request` for a browser's cross-site request that is not a GET or HEAD."""

    def __init__(self, app: ASGIApp, metrics: Metrics, public_url: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.origins = _netloc(public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            if is_cross_site(scope["method"], headers, self.origins):
                self.metrics.http_cross_site_refused.inc()
                # DEBUG: any page on the internet can make this happen as often as it likes.
                logger.debug(
                    "refused a cross-site {} {} from {}",
                    scope["method"], scope["path"], headers.get("origin", "-"),
                )  # fmt: skip
                response = JSONResponse(
                    {"error": "cross_site_request", "detail": "cross-site request refused"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
