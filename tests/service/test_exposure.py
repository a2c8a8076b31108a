from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from service.__main__ import main
from service.api.channels import channel_status
from service.app import create_app
from service.channels import Channel, ChannelView, ProcessView
from service.config import ChannelConfig, ServerSettings
from service.exposure import exposure_warning, is_loopback, shows_paths, without_directories
from service.media import MediaItem
from service.playout import Entry, ItemPlan
from service.runner import ChannelState, ItemSkip, LastCrash
from telemetry.logging import redact
from tests.harness.config import app_settings
from tests.harness.server import run_cli
from tests.service.api.conftest import running

TOKEN = "correct horse battery staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("tv.lan", False),
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_who_sees_full_paths_and_who_is_warned() -> None:
    local, public = ServerSettings(host="127.0.0.1"), ServerSettings(host="0.0.0.0")
    guarded = ServerSettings(host="0.0.0.0", api_token=TOKEN)
    assert shows_paths(local, None) and not shows_paths(public, None)
    assert shows_paths(guarded, f"Bearer {TOKEN}")
    assert not shows_paths(guarded, None) and not shows_paths(guarded, "Bearer nope")
    assert exposure_warning(local) is None and exposure_warning(guarded) is None
    warning = exposure_warning(public)
    assert warning is not None and "0.0.0.0" in warning and "EXSTREAM_API_TOKEN" in warning
    assert redact(warning) == warning  # logged whole


@pytest.mark.parametrize(
    ("text", "known", "shown"),
    [
        ("/srv/media/a.mkv: Invalid data", [], "a.mkv: Invalid data"),
        (
            "ffmpeg: /srv/My Films/Old Ones/b c.mkv: Invalid data",
            ["/srv/My Films/Old Ones/b c.mkv"],
            "ffmpeg: b c.mkv: Invalid data",
        ),
        ("gone: /srv/My Films/Old/d.mkv", ["/srv/My Films"], "gone: Old/d.mkv"),
        ("glob /srv/tv shows/x.mkv", ["/srv/tv shows/*.mkv"], "glob x.mkv"),
        ("exit code 1 after 0 frames", [], "exit code 1 after 0 frames"),
        ("see http://logo.example/a/b.png", [], "see http://logo.example/a/b.png"),
    ],
)
def test_directories_are_cut_out_of_texts(text: str, known: list[str], shown: str) -> None:
    assert without_directories(text, known) == shown


def app_with_broken_media(
    root: Path, host: str, environ: dict[str, str] | None = None
) -> tuple[Starlette, Path]:
    media = root / "library" / "kids shows"
    media.mkdir(parents=True)
    (media / "broken.mkv").write_bytes(b"not a video" * 100)
    data = {
        "server": {"host": host, "data_dir": str(root / "data")},
        "ffmpeg": {"ffmpeg": str(root / "no-ffmpeg")},
        "channels": [{"number": 1, "name": "Kids", "media": [str(media)]}],
    }
    settings = app_settings(data, root / "channels.toml", environ)
    return create_app(settings, registry=CollectorRegistry()), media


async def test_public_bind_without_token_shows_names_and_refuses_the_logs(tmp_path: Path) -> None:
    app, _ = app_with_broken_media(tmp_path, "0.0.0.0")
    async with running(app) as client:
        listing = await client.get("/api/channels")
        one = await client.get("/api/channels/1")
        assert listing.json()["channels"] == [one.json()]
        assert one.json()["skipped_media"] == [{"path": "broken.mkv", "reason": "unreadable"}]
        assert str(tmp_path) not in listing.text + one.text
        logs = await client.get("/api/logs/entries")
        assert logs.status_code == 403 and logs.json()["error"] == "token_required"


async def test_loopback_without_token_shows_full_paths(tmp_path: Path) -> None:
    app, media = app_with_broken_media(tmp_path, "127.0.0.1")
    async with running(app) as client:
        channel = (await client.get("/api/channels/1")).json()
        assert channel["skipped_media"][0]["path"] == str(media / "broken.mkv")
        assert (await client.get("/api/logs/entries")).status_code == 200


async def test_with_a_token_only_its_holder_sees_full_paths(tmp_path: Path) -> None:
    app, media = app_with_broken_media(tmp_path, "127.0.0.1", {"EXSTREAM_API_TOKEN": TOKEN})
    async with running(app) as client:
        anonymous = await client.get("/api/channels/1")
        wrong = await client.get("/api/channels", headers={"Authorization": "Bearer nope"})
        holder = await client.get("/api/channels/1", headers=BEARER)
    assert str(tmp_path) not in anonymous.text + wrong.text
    assert holder.json()["skipped_media"][0]["path"] == str(media / "broken.mkv")


async def test_no_redirect_takes_its_host_from_the_request(tmp_path: Path) -> None:
    data = {"server": {"data_dir": str(tmp_path / "data")}}
    app = create_app(app_settings(data, tmp_path / "c.toml"), registry=CollectorRegistry())
    async with running(app) as client:
        for path in ("/api/channels/", "/api/channels%2F", "/iptv/channels.m3u/"):
            response = await client.get(path, headers={"Host": "evil.example"})
            assert response.status_code == 404, path
            assert "location" not in response.headers
            assert response.json()["error"] == "not_found"


def test_check_warns_of_a_public_bind_without_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "channels.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n', encoding="utf-8")
    monkeypatch.delenv("EXSTREAM_HOST", raising=False)
    monkeypatch.delenv("EXSTREAM_API_TOKEN", raising=False)
    assert main(["check", str(config), "--no-scan"]) == 0
    assert "with no EXSTREAM_API_TOKEN set" in capsys.readouterr().err
    monkeypatch.setenv("EXSTREAM_API_TOKEN", TOKEN)
    assert main(["check", str(config), "--no-scan"]) == 0
    assert "EXSTREAM_API_TOKEN" not in capsys.readouterr().err


def test_failure_and_skip_texts_lose_their_directories() -> None:
    folder = "/srv/media/kids shows"
    item = MediaItem(f"{folder}/cut short.mkv", 60.0, "Cut short", "h264", "aac", 320, 240, 0, 1)
    skip = ItemSkip(item.path, "failed", f"{item.path}: Invalid data")
    failure = f"3 items in a row failed: {item.path}: Invalid data (see /var/lib/x/y.log)"
    view = ChannelView(
        number=1, config=ChannelConfig(number=1, name="Kids", media=(folder,)),
        state=ChannelState.FAILED, viewers=0, uptime=None,
        process=ProcessView(4242, 3.0, ItemPlan(item, 1.5, 100, 0.0, 60.0)), restarts=5,
        failure=failure, last_output_wall=None, current=Entry(0.0, item, 0.0, end=60.0),
        following=None, last_crash=LastCrash("exited", f"{item.path}: Invalid data", 1.0),
        media_items=1, skipped_media=(), skipped_items=(skip,), workahead=0.0, horizon=60.0,
    )  # fmt: skip
    channel = cast(Channel, SimpleNamespace(number=1, view=lambda now: view))
    hidden = channel_status(channel, "http://tv.lan", 30.0, paths=False)
    assert hidden["failure"] == "3 items in a row failed: cut short.mkv: Invalid data (see y.log)"
    assert hidden["current"]["path"] == "cut short.mkv"
    assert hidden["process"]["path"] == "cut short.mkv"
    assert hidden["last_crash"]["detail"] == "cut short.mkv: Invalid data"
    assert hidden["skipped_items"] == [
        {"path": "cut short.mkv", "reason": "failed", "detail": "cut short.mkv: Invalid data"}
    ]
    assert folder not in repr(hidden)
    shown = channel_status(channel, "http://tv.lan", 30.0, paths=True)
    assert shown["skipped_items"][0]["detail"] == skip.detail
    assert shown["failure"] == failure
    assert shown["process"]["path"] == item.path


def test_serve_warns_of_a_public_bind_without_token(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: the bind fails at once, after the warning.
    config = tmp_path / "channels.toml"
    config.write_text(
        f'[server]\nhost = "192.0.2.1"\nport = 8410\ndata_dir = "{tmp_path / "data"}"\n',
        encoding="utf-8",
    )
    done = run_cli(
        "serve",
        "--config",
        str(config),
        env={"EXSTREAM_LOG_FORMAT": "json", "OTEL_SDK_DISABLED": "true"},
        timeout=60,
    )
    assert done.returncode != 0
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in lines if e["level"] == "WARNING"]
    assert any("192.0.2.1 with no EXSTREAM_API_TOKEN set" in w for w in warnings), done.stderr
