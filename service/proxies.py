"""Requests through the proxies an operator trusts (`[server] trusted_proxies`).

From a trusted proxy (an edge cache, the cluster's front door), the client address and
scheme are the ones it forwards in `X-Forwarded-For` and `X-Forwarded-Proto` (uvicorn's
ProxyHeadersMiddleware), and its `X-Exstream-Owner` (the front door's choice of instance)
is honoured. From anyone else those headers are ignored: the owner header is removed, so
a client cannot make an instance run a channel that another one runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service.cluster import OWNER_HEADER

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_OWNER = OWNER_HEADER.encode("latin-1")


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and networks ("10.0.0.0/8"); ValueError for anything else."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


class TrustedProxies:
    def __init__(self, app: ASGIApp, *, trusted: tuple[str, ...]) -> None:
        self.networks = parse_networks(trusted)
        self.app = app
        self.forwarded = app
        if self.networks:  # (given no hosts, uvicorn's middleware would trust 127.0.0.1)
            # uvicorn types ASGI with TypedDicts of its own; the callables are the same.
            hosts = [str(network) for network in self.networks]
            proxy = ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=hosts)
            self.forwarded = cast(ASGIApp, proxy)

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a Unix socket's path, or a test client's name
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.trusts(client[0] if client else None):
            await self.forwarded(scope, receive, send)
            return
        headers = scope["headers"]
        if any(name == _OWNER for name, _ in headers):
            scope = dict(scope, headers=[(n, v) for n, v in headers if n != _OWNER])
        await self.app(scope, receive, send)
