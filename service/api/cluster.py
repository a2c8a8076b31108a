"""The cluster over HTTP: who runs what (`/api/cluster`), the front door's owner lookup
(`/api/cluster/owner`), and `OwnerRouting`, which sends a channel's requests to the
instance that runs it.

A request for a channel run elsewhere is redirected to the owner's URL (302 for GET and
HEAD, which players follow; 307 otherwise, which keeps the method and body). Through the
front door no redirect is seen: nginx asks any instance for the owner first and proxies
to it, naming it in `X-Exstream-Owner`; the instance so named serves the request even if
its own view differs for a moment, so a request never bounces between instances.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.cluster import (
    OWNER_ADDRESS_HEADER,
    OWNER_HEADER,
    Member,
    Membership,
    channel_of_path,
)
from service.errors import ExstreamError


class NotAChannelPath(ExstreamError):
    code = "not_a_channel_path"
    status_code = 400

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(path)

    def __str__(self) -> str:
        return f"{self.path[:200]!r} is not a channel's path (/stream/N..., /api/channels/N)"

    def __repr__(self) -> str:
        return f"NotAChannelPath({self.path[:200]!r})"


class OwnerRouting:
    """Redirects the requests of a channel that another instance runs to that instance."""

    def __init__(self, app: ASGIApp, *, membership: Membership) -> None:
        self.app = app
        self.membership = membership

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self._elsewhere(scope) if scope["type"] == "http" else None
        if owner is None:
            await self.app(scope, receive, send)
            return
        number = channel_of_path(scope["path"])
        query = scope.get("query_string", b"").decode("latin-1")
        location = owner.url + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if query:
            location += f"?{query}"
        response = JSONResponse(
            {"error": "channel_elsewhere", "detail": f"channel {number} runs on {owner.name}"},
            status_code=302 if scope["method"] in ("GET", "HEAD") else 307,
            headers={"Location": location, "Cache-Control": "no-store", OWNER_HEADER: owner.name},
        )
        await response(scope, receive, send)

    def _elsewhere(self, scope: Scope) -> Member | None:
        membership = self.membership
        number = channel_of_path(scope["path"])
        if number is None or number not in membership.channels:
            return None
        owner = membership.owner(number)
        if owner.name == membership.me or Headers(scope=scope).get(OWNER_HEADER) == membership.me:
            return None
        return owner


def membership_of(request: Request) -> Membership:
    membership: Membership = request.app.state.membership
    return membership


async def cluster(request: Request) -> JSONResponse:
    membership = membership_of(request)
    members: list[dict[str, Any]] = [
        {
            "name": m.name,
            "url": m.url or None,
            "live": membership.live[m.name],
            "channels": sorted(c for c in membership.channels if membership.owner(c) == m),
        }
        for m in membership.members
    ]
    return JSONResponse({"instance": membership.me, "members": members})


async def owner(request: Request) -> Response:
    """Who runs the channel of `X-Original-URI` (as nginx's auth_request sends it) or of
    the `path` query parameter: 204, with the owner in headers."""
    path = request.headers.get("x-original-uri") or request.query_params.get("path") or ""
    number = channel_of_path(path.partition("?")[0])
    if number is None:
        raise NotAChannelPath(path)
    member = membership_of(request).owner(number)
    server = request.scope.get("server") or ("127.0.0.1", 80)
    address = member.address if member.url else f"{server[0]}:{server[1]}"
    return Response(
        status_code=204,
        headers={OWNER_HEADER: member.name, OWNER_ADDRESS_HEADER: address},
    )
