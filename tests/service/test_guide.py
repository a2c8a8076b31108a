from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from service.api.guide import (
    RENDER_TTL,
    GuideCache,
    accepts_gzip,
    display_name,
    playlist,
)
from service.config import ChannelConfig, parse_settings
from service.media import MediaItem
from service.playout import Entry, Playout
from service.types import AppState
from service.xmltv import channel_id
from tests.conftest import FakeClock
from tests.players import PlayerChannel, entries, jellyfin, kodi

URL = "http://tv.example:8410"
CHANNELS = [
    ChannelConfig(1, 'Late "Night", Live'),
    ChannelConfig(2, "Demo Two (on demand, shuffled)", group="Demo; Kids"),
    ChannelConfig(3, "24 Hour News, Weather", logo="http://logo.example/3.png"),
    ChannelConfig(4, "7.5 FM"),
    ChannelConfig(5, "Plain"),
]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Demo Two (on demand, shuffled)", "Demo Two (on demand - shuffled)"),
        ('Late "Night",Live', 'Late "Night" - Live'),
        ("24 Hour News", "24\u00a0Hour News"),
        ("7.5 FM", "7.5\u00a0FM"),
        ("5", "5"),
        ("  Spaced \t out ,  ", "Spaced out"),
        ("Line\nbreak", "Line break"),
    ],
)
def test_display_name(name: str, shown: str) -> None:
    assert display_name(name) == shown


@pytest.mark.parametrize("player", [jellyfin, kodi], ids=["jellyfin", "kodi"])
def test_players_read_the_whole_name_the_number_and_the_guide_id(
    player: Callable[[str, str], PlayerChannel],
) -> None:
    read = [player(extinf, url) for extinf, url in entries(playlist(CHANNELS, URL, "abc"))]
    assert [(c.name or "").replace("\u00a0", " ") for c in read] == [
        'Late "Night" - Live',
        "Demo Two (on demand - shuffled)",
        "24 Hour News - Weather",
        "7.5 FM",
        "Plain",
    ]
    assert [c.tvg_id for c in read] == [channel_id(c.number, "abc") for c in CHANNELS]
    assert [c.number for c in read] == ["1", "2", "3", "4", "5"]
    assert [c.url for c in read] == [f"{URL}/stream/{n}.ts" for n in range(1, 6)]


def test_attributes_keep_the_configured_name() -> None:
    lines = playlist(CHANNELS, URL, "abc").splitlines()
    assert lines[0] == f'#EXTM3U url-tvg="{URL}/iptv/xmltv.xml" x-tvg-url="{URL}/iptv/xmltv.xml"'
    assert lines[1] == (
        '#EXTINF:-1 tvg-id="C1.abc.exstream" channel-id="C1.abc.exstream" tvg-chno="1"'
        ' tvg-name="Late \'Night\', Live" group-title="exstream",Late "Night" - Live'
    )
    assert 'tvg-logo="http://logo.example/3.png"' in lines[5]
    assert 'group-title="Demo; Kids"' in lines[3]


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def item(name: str, duration: float) -> MediaItem:
    return MediaItem(f"/m/{name}.mp4", duration, name, "h264", "aac", 2, 2, video_index=0)


class FakeChannel:
    """What the guide reads of a channel (service/channels.Channel's façade)."""

    def __init__(self, number: int, playout: Playout) -> None:
        self.number = number
        self.config = ChannelConfig(number, f"C{number}")
        self.playout = playout

    @property
    def items(self) -> tuple[MediaItem, ...]:
        return self.playout.items

    def guide(self, start: float, end: float) -> list[Entry]:
        return self.playout.guide(start, end)


class FakeChannels:
    def __init__(self, playouts: dict[int, Playout], now: float) -> None:
        self.channels = {n: FakeChannel(n, p) for n, p in playouts.items()}
        self.now = now

    def wall(self) -> float:
        return self.now


def state(tmp_path: Path, channels: FakeChannels) -> AppState:
    settings = parse_settings({"guide": {"hours": 1}}, tmp_path / "channels.toml", {})
    return cast(AppState, SimpleNamespace(settings=settings, channels=channels))


def titles(document: bytes) -> list[str | None]:
    return [p.findtext("title") for p in ET.fromstring(document).findall("programme")]


async def test_the_guide_is_kept_until_the_library_changes_or_a_minute_passes(
    tmp_path: Path, clock: FakeClock
) -> None:
    now = 1_700_000_000.0
    playout = Playout(0.0, 600)
    playout.rebuild([item("a", 600), item("b", 600)], now)
    channels = FakeChannels({1: playout, 2: Playout(0.0, 600)}, now)
    cache = GuideCache(clock=clock)
    first = await cache.get(state(tmp_path, channels))
    assert set(titles(first.xml)) == {"a", "b", "Offline"}
    assert gzip.decompress(first.gzip) == first.xml

    playout.rebuild([item("a", 600), item("b", 600)], now)  # a rescan that found the same
    channels.now += 30
    clock.advance(RENDER_TTL - 1)
    assert await cache.get(state(tmp_path, channels)) is first

    playout.rebuild([item("c", 600)], now)  # the library changed: at once
    second = await cache.get(state(tmp_path, channels))
    assert "c" in titles(second.xml)

    channels.now += 3600
    clock.advance(RENDER_TTL)  # a minute later the guide moves on
    third = await cache.get(state(tmp_path, channels))
    assert third is not second
    assert third.xml != second.xml
