from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from service.config import Settings, parse_settings
from service.errors import ConfigError
from service.media import MediaItem
from service.metadata import Programme
from service.playout import Entry
from service.xmltv import Listing, channel_id, display_names, instance_id, render
from tests.players import validate_xmltv

XMLTV_ID = re.compile(r"^[-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)+$")  # tv_validate_file's test
T0 = 1_700_000_000.0


def item(path: str, programme: Programme | None = None) -> MediaItem:
    return MediaItem(
        path, 60.0, "t", "h264", "aac", 2, 2, video_index=0, programme=programme or Programme()
    )


EPISODE = item(
    "/m/Show - S01E02 - Pilot.mkv",
    Programme(
        show="Show & Co",
        title="Pilot <1>",
        season=1,
        episode=2,
        desc='A "desc"',
        categories=("Comedy", "Drama"),
        date="20100102",
        icon="https://img.example/a.jpg?x=1&y=2",
    ),
)
BARE = item(b"/m/caf\xe9\x01.mp4".decode("utf-8", "surrogateescape"))


def listings() -> list[Listing]:
    return [
        Listing("C1.abc.exstream", 1, 'Late "Night", Live', "http://logo.example/1.png", [
            Entry(T0, EPISODE, end=T0 + 60), Entry(T0 + 60, BARE, end=T0 + 120),
        ]),
        Listing("C2.abc.exstream", 2, "Nothing", None, []),
    ]  # fmt: skip


def test_the_guide_passes_tv_validate_file(tmp_path: Path) -> None:
    validate_xmltv(tmp_path, render(listings(), T0, T0 + 3600, "fr"))


def test_programmes_carry_every_field_in_dtd_order() -> None:
    tv = ET.fromstring(render(listings(), T0, T0 + 3600, "fr"))
    first = tv.findall("programme")[0]
    assert [(e.tag, e.text, dict(e.attrib)) for e in first] == [
        ("title", "Show & Co", {"lang": "fr"}),
        ("sub-title", "Pilot <1>", {"lang": "fr"}),
        ("desc", 'A "desc"', {"lang": "fr"}),
        ("date", "20100102", {}),
        ("category", "Comedy", {"lang": "fr"}),
        ("category", "Drama", {"lang": "fr"}),
        ("icon", None, {"src": "https://img.example/a.jpg?x=1&y=2"}),
        ("episode-num", "0.1.0/1", {"system": "xmltv_ns"}),
        ("episode-num", "S01E02", {"system": "onscreen"}),
    ]
    assert first.attrib == {
        "start": "20231114221320 +0000",
        "stop": "20231114221420 +0000",
        "channel": "C1.abc.exstream",
    }
    # No metadata: the file name, made fit for XML.
    assert [e.tag for e in tv.findall("programme")[1]] == ["title"]
    assert tv.findall("programme")[1].findtext("title") == "caf\ufffd"


def test_channels_and_an_empty_channel() -> None:
    tv = ET.fromstring(render(listings(), T0, T0 + 3600, "en"))
    channels = tv.findall("channel")
    assert [c.get("id") for c in channels] == ["C1.abc.exstream", "C2.abc.exstream"]
    assert [d.text for d in channels[0].findall("display-name")] == [
        'Late "Night", Live', '1 Late "Night", Live', "1",
    ]  # fmt: skip
    assert channels[0].find("icon") is not None
    offline = [p for p in tv.findall("programme") if p.get("channel") == "C2.abc.exstream"]
    assert [(p.get("start"), p.get("stop"), p.findtext("title")) for p in offline] == [
        ("20231114221320 +0000", "20231114231320 +0000", "Offline")
    ]


def test_display_names_never_empty() -> None:
    assert display_names(7, "\x01") == ["7", "7 7", "7"]


def test_channel_ids_are_dotted_stable_and_per_instance(tmp_path: Path) -> None:
    def settings(data_dir: str, **guide: str) -> Settings:
        data = {"server": {"data_dir": data_dir}, "guide": guide}
        return parse_settings(data, tmp_path / "channels.toml", {})

    one = instance_id(settings("one"))
    assert one == instance_id(settings("one"))
    assert one != instance_id(settings("two"))
    assert re.fullmatch(r"[0-9a-f]{8}", one)
    assert instance_id(settings("one", instance="Living-Room.home")) == "living-room.home"
    for number in (1, 99999):
        assert XMLTV_ID.match(channel_id(number, one))
    assert channel_id(12, "abc") == "C12.abc.exstream"


@pytest.mark.parametrize(
    ("guide", "problem"),
    [
        ({"instance": "two words"}, "guide.instance: must be letters"),
        ({"instance": "a..b"}, "guide.instance: must be letters"),
        ({"language": "english!"}, "guide.language: must be a language code"),
        ({"hours": 0}, "guide.hours: must be between 1 and 336"),
        ({"hours": 400}, "guide.hours: must be between 1 and 336"),
        ({"lcn": True}, "guide.lcn: unknown key"),
    ],
)
def test_guide_settings_are_checked(tmp_path: Path, guide: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({"guide": guide}, tmp_path / "channels.toml", {})
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
