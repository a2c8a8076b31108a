"""Least exposure, end to end: cross-site requests, media paths, query strings, redirects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.server import Server, run_server
from tests.harness.standin import StandIn, StandInFactory, spawns
from tests.polling import wait_for

RESTART_ROUTE = "/api/channels/{number:int}/restart"
TOKEN = "e2e-token-0123456789"
SECRET = "SECRET-IN-QUERY"


@pytest.fixture
def library(tmp_path: Path, recorded_ts: Path) -> Path:
    """A media folder (with a space in its path) holding one playable and one broken file."""
    folder = tmp_path / "library" / "kids shows"
    folder.mkdir(parents=True)
    (folder / "item.ts").write_bytes(recorded_ts.read_bytes())
    (folder / "broken.mkv").write_bytes(b"not a video" * 100)
    return folder


def kids_channel(stand_in: StandInFactory, library: Path) -> StandIn:
    """An always-on channel 1 playing `library` on the stand-in ffmpeg."""
    return stand_in([{"number": 1, "name": "Kids", "media": [str(library)], "mode": "always_on"}])


def restart_requests(server: Server) -> float:
    return server.metric("exstream_http_requests_total", route=RESTART_ROUTE, method="POST")


def test_without_a_token_browsers_cannot_post_cross_site_but_clients_can(
    stand_in: StandInFactory, library: Path
) -> None:
    config, env, log = kids_channel(stand_in, library)
    # Spans are printed into the server's log, next to its log lines.
    env |= {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with run_server(config, env) as server:
        wait_for(lambda: server.channel(1)["state"] == "running", 30, "channel 1 running")
        with server.client() as client:
            # A form or fetch(no-cors) from any web page the operator visits.
            evil = client.post(
                "/api/channels/1/restart",
                content=b"x",
                headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
            )
            fetched = client.post(
                "/api/channels/1/restart",
                headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
            )
            for refused in (evil, fetched):
                assert refused.status_code == 403
                assert refused.json()["error"] == "cross_site_request"
            assert server.metric("exstream_http_cross_site_refused_total") == 2
            assert restart_requests(server) == 0  # no handler ran: nothing restarted

            before = len(spawns(log))
            curl = client.post("/api/channels/1/restart", json={})
            assert curl.status_code == 202 and curl.json()["action"] == "restarted"
            wait_for(lambda: len(spawns(log)) > before, 10, "the restart")
            assert restart_requests(server) == 1

            plex = client.post(
                "/lineup.post?scan=start&source=Cable", headers={"User-Agent": "PlexMediaServer"}
            )
            assert plex.status_code == 200

            # Query strings (a token, say) reach neither the logs nor the spans.
            assert client.get(f"/api/channels?token={SECRET}").status_code == 200
            moved = client.get("/api/channels%2F", headers={"Host": "evil.example"})
            assert moved.status_code == 404 and "location" not in moved.headers
            assert moved.json()["error"] == "not_found"
        wait_for(lambda: '"http.route": "/api/channels"' in server.log(), 30, "the span")
    assert SECRET not in server.log()


def test_unauthenticated_callers_see_file_names_only(
    stand_in: StandInFactory, library: Path
) -> None:
    config, env, _ = kids_channel(stand_in, library)
    with run_server(config, {**env, "EXSTREAM_API_TOKEN": TOKEN}) as server:
        wait_for(lambda: server.channel(1)["current"], 30, "an item on air")
        with server.client() as client:
            anonymous = [client.get("/api/channels"), client.get("/api/channels/1")]
            holder = client.get("/api/channels/1", headers={"Authorization": f"Bearer {TOKEN}"})
        for response in anonymous:
            assert response.status_code == 200
            assert str(library) not in response.text and "kids shows" not in response.text
        channel = anonymous[1].json()
        assert channel["current"]["path"] == "item.ts"
        assert channel["skipped_media"] == [{"path": "broken.mkv", "reason": "unreadable"}]
        full = holder.json()
        assert full["current"]["path"] == str(library / "item.ts")
        assert full["skipped_media"][0]["path"] == str(library / "broken.mkv")
