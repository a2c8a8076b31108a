from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from service.config import ServerSettings, parse_settings
from service.errors import ConfigError
from service.proxies import TrustedProxies


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """What the app behind the middleware sees of the request."""
    request = Request(scope, receive)
    client = request.client.host if request.client else None
    seen = {
        "client": client,
        "scheme": request.url.scheme,
        "owner": request.headers.get("x-exstream-owner"),
    }
    await JSONResponse(seen)(scope, receive, send)


def seen_by_app(
    peer: str, headers: dict[str, str], trusted: tuple[str, ...]
) -> dict[str, str | None]:
    async def ask() -> dict[str, str | None]:
        transport = httpx.ASGITransport(
            app=TrustedProxies(echo, trusted=trusted), client=(peer, 50000)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://exstream") as client:
            response = await client.get("/api/channels", headers=headers)
            body: dict[str, str | None] = response.json()
            return body

    return asyncio.run(ask())


FORWARDED = {
    "X-Forwarded-For": "198.51.100.7",
    "X-Forwarded-Proto": "https",
    "X-Exstream-Owner": "exstream-1",
}
DEFAULT = ServerSettings().trusted_proxies


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "10.1.2.3"])
def test_a_trusted_proxy_names_the_client_the_scheme_and_the_owner(peer: str) -> None:
    trusted = (*DEFAULT, "10.0.0.0/8")
    assert seen_by_app(peer, FORWARDED, trusted) == {
        "client": "198.51.100.7",
        "scheme": "https",
        "owner": "exstream-1",
    }


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("192.0.2.10", DEFAULT),  # anyone else
        ("127.0.0.2", ("127.0.0.1",)),  # just outside the list
        ("127.0.0.1", ()),  # nothing trusted, not even loopback
    ],
)
def test_anyone_else_cannot_forge_the_client_the_scheme_or_the_owner(
    peer: str, trusted: tuple[str, ...]
) -> None:
    assert seen_by_app(peer, FORWARDED, trusted) == {
        "client": peer,
        "scheme": "http",
        "owner": None,
    }


def test_a_client_that_is_no_address_is_not_trusted() -> None:
    # Starlette's TestClient and Unix sockets give names, not addresses.
    assert seen_by_app("testclient", FORWARDED, DEFAULT)["owner"] is None


def test_trusted_proxies_are_addresses_or_networks(tmp_path: Path) -> None:
    def server(value: object) -> ServerSettings:
        data = {"server": {"trusted_proxies": value}}
        return parse_settings(data, tmp_path / "exstream.toml", {}).server

    assert server(["10.0.0.0/8", "fd00::/8", "192.0.2.1"]).trusted_proxies == (
        "10.0.0.0/8",
        "fd00::/8",
        "192.0.2.1",
    )
    assert server([]).trusted_proxies == ()
    for wrong in (["*"], ["10.0.0.0/33"], ["localhost"]):
        with pytest.raises(ConfigError) as caught:
            server(wrong)
        assert "server.trusted_proxies: every entry must be an IP address or network" in str(
            caught.value
        )
