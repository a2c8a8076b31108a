from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from tests.harness.config import app_settings

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings with no channels and a private data dir; `environ` sets EXSTREAM_* keys."""

    def make(environ: dict[str, str] | None = None, **sections: Any) -> Settings:
        data = {"server": {"data_dir": str(tmp_path / "data")}, **sections}
        return app_settings(data, tmp_path / "channels.toml", environ)

    return make


@contextlib.asynccontextmanager
async def running(
    app: Starlette, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan on this loop, and a client whose requests see its state."""
    async with app.router.lifespan_context(app) as state:
        served = wrap(app) if wrap is not None else app

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})
            await served(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def make_app(make_settings: SettingsFactory) -> Callable[..., Starlette]:
    def make(environ: dict[str, str] | None = None, **sections: Any) -> Starlette:
        return create_app(make_settings(environ, **sections), registry=CollectorRegistry())

    return make


# service/restart.py passes tenacity's `initial`, deprecated in tenacity 9.2; not ours to fix.
