"""The pages and their JSON, in process: what a browser without JavaScript gets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from tests.harness.config import app_settings
from tests.htmlpage import Element, parse
from tests.service.api.conftest import running

CHANNELS = [
    {"number": 3, "name": "News <b>24</b>", "group": "Info", "logo": "https://example.com/n.png"},
    {"number": 7, "name": "Films", "logo": "/srv/logos/films.png"},
]


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **server: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with CHANNELS, whose media directory is empty: nothing is scheduled."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    data = {
        "server": {"data_dir": str(tmp_path / "data"), **server},
        "hdhomerun": {"discovery": False},
        "channels": [{**c, "media": [str(media)]} for c in CHANNELS],
    }
    settings = app_settings(data, tmp_path / "channels.toml")
    async with running(create_app(settings, registry=CollectorRegistry())) as client:
        yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tmp_path) as client:
        yield client


async def html(client: httpx.AsyncClient, path: str, status: int = 200) -> Element:
    response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    return parse(response.text)


def urls(page: Element) -> list[str]:
    return [
        e.attrs[name]
        for e in page.walk()
        for name in ("href", "src", "action")
        if name in e.attrs and e.tag != "input"
    ]


async def test_the_status_page_has_every_channel_without_javascript(
    client: httpx.AsyncClient,
) -> None:
    page = await html(client, "/")
    rows = page.find_all("tr", data_channel="*")
    assert [r.attrs["data-channel"] for r in rows] == ["3", "7"]
    first = rows[0]
    assert "News <b>24</b>" in first.find("th").text  # escaped, shown as written
    assert first.find(data_field="state").text == "stopped"
    assert first.find(data_field="now-title").text == "Nothing scheduled (slate)"
    assert first.find("img").attrs["src"] == "https://example.com/n.png"
    assert not rows[1].find_all("img")  # a file path is no URL a browser can load
    assert page.find("html").attrs["lang"] == "en"
    assert page.find(id="url-m3u").attrs["value"] == "http://test/iptv/channels.m3u"


async def test_links_are_relative_so_a_proxy_may_serve_a_sub_path(
    client: httpx.AsyncClient,
) -> None:
    for path, root in (("/", "./"), ("/guide", "./"), ("/logs", "./"), ("/channels/3", "../")):
        page = await html(client, path)
        found = urls(page)
        own = [u for u in found if not u.startswith(("https://", "http://", "data:"))]
        assert own and all(not u.startswith("/") for u in own), (path, own)
        assert f"{root}static/exstream.css?v=" in " ".join(found)


async def test_player_urls_come_from_public_url(tmp_path: Path) -> None:
    async with serving(tmp_path, public_url="https://tv.example/exstream/") as client:
        page = await html(client, "/")
        assert page.find(id="url-xmltv").attrs["value"] == (
            "https://tv.example/exstream/iptv/xmltv.xml"
        )
        channel = await html(client, "/channels/7")
        assert channel.find(id="stream-url").attrs["value"] == (
            "https://tv.example/exstream/stream/7.ts"
        )


async def test_an_unknown_channel_is_an_html_404(client: httpx.AsyncClient) -> None:
    for path in ("/channels/9", "/channels/nine"):
        page = await html(client, path, 404)
        assert page.find("h1").text == "Not found"


async def test_the_channel_page_says_there_is_no_preview_yet(client: httpx.AsyncClient) -> None:
    page = await html(client, "/channels/3")
    assert "HLS" in page.find(id="preview").text
    assert page.find("h1").text == "3 News <b>24</b>"


async def test_the_guide_shows_offline_channels_as_the_xmltv_guide_does(
    client: httpx.AsyncClient,
) -> None:
    page = await html(client, "/guide")
    rows = page.find("table").find_all("tr", data_channel="*")
    assert [r.find_all("span", **{"class": "title"})[0].text for r in rows] == ["Offline"] * 2


async def test_the_logs_page_keeps_its_filters_escaped(client: httpx.AsyncClient) -> None:
    page = await html(client, '/logs?q="><script>x</script>&level=warning')
    assert page.find(id="f-q").attrs["value"] == '"><script>x</script>'
    assert page.find("option", selected="").text == "WARNING"
    assert all("x" not in s.text for s in page.find_all("script"))


async def test_history_and_schedule_json(client: httpx.AsyncClient) -> None:
    history = (await client.get("/api/history")).json()
    assert history["interval_seconds"] == 10
    assert [c["number"] for c in history["channels"]] == [3, 7]
    assert history["points"] == 360
    assert all(len(c["viewers"]) == len(history["times"]) for c in history["channels"])
    schedule = await client.get("/api/channels/7/schedule")
    assert schedule.json() == {"number": 7, "entries": []}
    missing = await client.get("/api/channels/9/schedule")
    assert missing.status_code == 404
    assert missing.json()["error"] == "channel_not_found"


async def test_static_files_by_name_only(client: httpx.AsyncClient) -> None:
    css = await client.get("/static/exstream.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    again = await client.get("/static/exstream.css", headers={"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304
    for name in ("nothing.js", "..%2Fpages.py"):
        missing = await client.get(f"/static/{name}")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
