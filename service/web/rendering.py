"""HTML responses for the pages: one Jinja2 environment (autoescaped), the headers every
page carries, and links that stay right behind a reverse proxy under a sub-path.

Every link and script URL is relative to the page, so a proxy that serves the service
under `/tv/` needs no setting; only the URLs shown for players to copy are absolute
(`[server] public_url`, or what the request was addressed to).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from service import __version__
from service.types import app_state
from service.web import static
from service.web.views import access

TEMPLATES = Path(__file__).with_name("templates")
# No inline script or style anywhere: what is not a file of this service does not run.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: http: https:",  # channel logos are wherever the config says
        "connect-src 'self'",
        "media-src 'self' blob:",  # the preview: HLS natively, or hls.js's MediaSource
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M")


def rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s" if seconds < 10 else f"{secs} s"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["rfc3339"] = rfc3339
    env.filters["duration"] = duration
    return env


templates = Jinja2Templates(env=_environment())


def root_of(request: Request) -> str:
    """The relative path from this page to the service's root (`./`, `../`)."""
    depth = request.url.path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def base_url(request: Request) -> str:
    """Absolute, for players: `public_url`, or what this request was addressed to."""
    public = app_state(request).settings.server.public_url
    return (public or str(request.base_url)).rstrip("/")


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    nav: str | None = None,
    status_code: int = 200,
) -> Response:
    """`nav`: the main menu's item this page is (`""` the status page, `guide`, `logs`)."""
    root = root_of(request)
    server = app_state(request).settings.server
    common = {
        "nav": nav,
        "root": root,
        "version": __version__,
        "asset": lambda name: f"{root}static/{name}?v={static.version(name)}",
        "access": access(server),
    }
    return templates.TemplateResponse(
        request, template, {**common, **context}, status_code=status_code, headers=PAGE_HEADERS
    )


def not_found(request: Request, what: str) -> Response:
    return page(request, "error.html", {"title": "Not found", "detail": what}, status_code=404)
