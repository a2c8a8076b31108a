from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers

from service.app import create_app
from service.csrf import is_cross_site
from tests.harness.config import app_settings
from tests.service.api.conftest import running

HOST = "tv.lan:8410"
TEXT = "text/plain;charset=UTF-8"
EVIL = "http://evil.example"


@pytest.mark.parametrize(
    ("method", "headers", "cross_site"),
    [
        # What any web page can make its visitor's browser send, no preflight needed.
        ("POST", {"origin": EVIL, "content-type": TEXT}, True),
        ("POST", {"origin": EVIL, "sec-fetch-site": "cross-site"}, True),
        ("POST", {"origin": "null", "content-type": "application/x-www-form-urlencoded"}, True),
        ("POST", {"sec-fetch-site": "same-site", "origin": "http://tv.lan:3000"}, True),
        ("DELETE", {"origin": EVIL}, True),
        ("POST", {"origin": "http://tv.lan:8411"}, True),
        ("POST", {"origin": "not a url ["}, True),
        # Browsers never send these cross-site: JSON needs a preflight, never granted.
        ("POST", {"origin": EVIL, "content-type": "Application/JSON; charset=utf-8"}, False),
        ("POST", {"sec-fetch-site": "same-origin", "origin": f"http://{HOST}"}, False),
        ("POST", {"sec-fetch-site": "none"}, False),
        ("POST", {"origin": f"http://{HOST}", "content-type": TEXT}, False),
        ("POST", {"origin": "https://tv.example.com"}, False),  # public_url's origin
        # Not a browser: curl, players, Plex's /lineup.post.
        ("POST", {}, False),
        ("POST", {"content-type": "application/x-www-form-urlencoded"}, False),
        # Reads change nothing.
        ("GET", {"origin": EVIL, "sec-fetch-site": "cross-site"}, False),
        ("HEAD", {"origin": EVIL}, False),
    ],
)
def test_what_is_a_cross_site_request(
    method: str, headers: dict[str, str], cross_site: bool
) -> None:
    seen = Headers({"host": HOST, **headers})
    assert is_cross_site(method, seen, frozenset({"tv.example.com"})) is cross_site


async def test_cross_site_posts_are_refused_before_any_handler(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path / "data")}}
    app = create_app(app_settings(data, tmp_path / "c.toml"), registry=CollectorRegistry())
    evil = {"Origin": EVIL, "Content-Type": TEXT}
    async with running(app) as client:
        for path in ("/api/channels/1/restart", "/lineup.post"):
            refused = await client.post(path, content=b"{}", headers=evil)
            assert refused.status_code == 403
            assert refused.json() == {
                "error": "cross_site_request",
                "detail": "cross-site request refused",
            }
        assert (await client.post("/lineup.post?scan=start&source=Cable")).status_code == 200
        json_post = await client.post("/api/channels/1/restart", json={}, headers={"Origin": EVIL})
        assert json_post.status_code == 404  # past the guard: there is no channel 1
        assert (await client.get("/api/channels", headers=evil)).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert "exstream_http_cross_site_refused_total 2.0" in metrics
