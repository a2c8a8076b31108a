from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.auth import authorized, needs_token
from tests.harness.config import app_settings
from tests.service.api.conftest import running

TOKEN = "correct horse battery staple"


@pytest.mark.parametrize(
    ("method", "path", "protected"),
    [
        ("GET", "/api/logs/entries", True),
        ("GET", "/api/logs/stream", True),
        ("GET", "/api/logs/AAAAAAAAAAAAAAAA", True),
        ("GET", "/api/channels", False),
        ("HEAD", "/api/channels/1", False),
        ("POST", "/api/channels/1/restart", True),
        ("DELETE", "/api/anything", True),
        ("GET", "/stream/1.ts", False),
        ("GET", "/iptv/channels.m3u", False),
        ("GET", "/metrics", False),
        ("GET", "/healthz", False),
        ("POST", "/healthz", False),
        ("GET", "/api/logsfoo", False),
    ],
)
def test_what_needs_the_token(method: str, path: str, protected: bool) -> None:
    assert needs_token(method, path) is protected


@given(st.text())
def test_only_the_exact_bearer_token_passes(presented: str) -> None:
    assert authorized(f"Bearer {presented}", TOKEN) is (presented.strip() == TOKEN)
    assert not authorized(presented, TOKEN) or presented.lower().startswith("bearer ")


def test_scheme_is_case_insensitive_and_required() -> None:
    assert authorized(f"bearer {TOKEN}", TOKEN)
    assert not authorized(TOKEN, TOKEN)
    assert not authorized(f"Basic {TOKEN}", TOKEN)
    assert not authorized(None, TOKEN)


async def test_token_required_when_configured(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path / "data")}}
    settings = app_settings(data, tmp_path / "channels.toml", {"EXSTREAM_API_TOKEN": TOKEN})
    app = create_app(settings, registry=CollectorRegistry())
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with running(app) as client:
        for path in ("/api/logs/entries", "/api/logs/AAAAAAAAAAAAAAAA"):
            denied = await client.get(path)
            assert denied.status_code == 401
            assert denied.json()["error"] == "unauthorized"
            assert denied.headers["www-authenticate"].startswith("Bearer")
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert (await client.get("/api/logs/entries", headers=good)).status_code == 200
        assert (await client.post("/api/channels/1/restart")).status_code == 401
        restart = await client.post("/api/channels/1/restart", headers=good)
        assert restart.status_code == 404  # past the check: there is no channel 1
        for open_path in ("/api/channels", "/healthz", "/metrics", "/iptv/channels.m3u"):
            response = await client.get(open_path, follow_redirects=True)
            assert response.status_code == 200, open_path


async def test_no_token_configured_means_open(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path / "data")}}
    app = create_app(app_settings(data, tmp_path / "c.toml"), registry=CollectorRegistry())
    async with running(app) as client:
        assert (await client.get("/api/logs/entries")).status_code == 200
