"""End to end: the XMLTV guide and the M3U playlist of a real server over real media,
held to xmltv-util's `tv_validate_file` and to how Jellyfin and Kodi read playlists."""

from __future__ import annotations

import gzip
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness.config import write_config
from tests.harness.server import Server, run_server
from tests.players import entries, jellyfin, kodi, validate_xmltv
from tests.polling import wait_for

XMLTV_ID = re.compile(r"^[-a-zA-Z0-9]+(\.[-a-zA-Z0-9]+)+$")
NAMES = {1: 'Late "Night", Live', 2: "24 Hour News, Weather", 3: "Nothing"}
SHOWN = {1: 'Late "Night" - Live', 2: "24 Hour News - Weather", 3: "Nothing"}

TAGGED = "Wrong Show - S09E09 - Wrong Title"  # tags and an .nfo, which both beat the name
TAGS = {
    "show": "Tag Show",
    "title": "Tag Title",
    "season_number": "2",
    "episode_sort": "3",
    "synopsis": "From the tags.",
    "genre": "Comedy;Drama",
    "date": "2001-05-06",
}
LOSING_NFO = """<episodedetails><showtitle>Nfo Loses</showtitle><title>Nfo Loses</title>
<season>7</season><episode>7</episode><plot>Nfo loses.</plot><genre>Nfo</genre>
<aired>1990-01-01</aired><thumb>https://img.example/tagged.jpg</thumb></episodedetails>"""
NFO_ONLY = "Name Show - S09E09 - Name Title"
NFO = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<episodedetails><title>Nfo Title</title><showtitle>Nfo Show</showtitle><season>4</season>
<episode>5</episode><plot>From the nfo.</plot><genre>Documentary</genre>
<aired>2010-01-02</aired><thumb>https://img.example/nfo.jpg</thumb></episodedetails>
https://thetvdb.com/?tab=episode&amp;id=1
"""
NAME_ONLY = "Only Name - S03E07 - Name Title"
MOVIE = "Movie Name (1999)"
BROKEN = "Broken - S01E01 - Ep"
EDITED = "Edit Me - S01E01"


def clip(path: Path, tags: dict[str, str] | None = None) -> None:
    metadata = [arg for k, v in (tags or {}).items() for arg in ("-metadata", f"{k}={v}")]
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-nostdin",
            "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=5",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
            *metadata, str(path),
        ],
        check=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide-library")
    clip(root / f"{TAGGED}.mp4", TAGS)
    (root / f"{TAGGED}.nfo").write_text(LOSING_NFO, encoding="utf-8")
    for stem in (NFO_ONLY, NAME_ONLY, MOVIE, BROKEN, EDITED):
        clip(root / f"{stem}.mp4")
    (root / f"{NFO_ONLY}.nfo").write_text(NFO, encoding="utf-8")
    (root / f"{BROKEN}.nfo").write_text("<episodedetails><title>cut sho", encoding="utf-8")
    (root / f"{EDITED}.nfo").write_text(
        "<episodedetails><title>Before</title></episodedetails>", encoding="utf-8"
    )
    (root / "empty").mkdir()
    return root


def guide_config(root: Path, library: Path, *, reverse: bool = False) -> Path:
    channels = [
        {"number": 1, "name": NAMES[1], "media": [str(library)], "logo": "http://logo.invalid/1.png"},
        {"number": 2, "name": NAMES[2], "media": [str(library / f"{MOVIE}.mp4")]},
        {"number": 3, "name": NAMES[3], "media": [str(library / "empty")]},
    ]  # fmt: skip
    return write_config(
        root,
        channels[::-1] if reverse else channels,
        guide={"hours": 1, "language": "de"},
        playout={"min_horizon": 600, "rebuild_interval": 1.0},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, library: Path) -> Iterator[Server]:
    config = guide_config(tmp_path_factory.mktemp("guide"), library)
    with run_server(config) as running:
        yield running


@dataclass(frozen=True)
class Raw:
    status_code: int
    headers: httpx.Headers
    content: bytes  # as sent: before any content decoding


def get(server: Server, path: str, **headers: str) -> Raw:
    with server.client() as client, client.stream("GET", path, headers=headers) as response:
        return Raw(response.status_code, response.headers, b"".join(response.iter_raw()))


def guide(server: Server) -> ET.Element:
    response = get(server, "/iptv/xmltv.xml", **{"Accept-Encoding": "identity"})
    assert response.status_code == 200
    return ET.fromstring(response.content)


def ids(tv: ET.Element) -> dict[int, str]:
    """Channel number (its `N` display name) -> id."""
    return {
        int(c.findall("display-name")[-1].text or ""): c.get("id") or "" for c in tv.iter("channel")
    }


def programmes(tv: ET.Element, channel: str) -> dict[str, ET.Element]:
    """The first programme of each title and sub-title on `channel`."""
    found: dict[str, ET.Element] = {}
    for programme in tv.iter("programme"):
        if programme.get("channel") == channel:
            key = f"{programme.findtext('title')} / {programme.findtext('sub-title')}"
            found.setdefault(key, programme)
    return found


def fields(programme: ET.Element) -> dict[str, object]:
    icon = programme.find("icon")
    return {
        "desc": programme.findtext("desc"),
        "categories": [c.text for c in programme.iter("category")],
        "date": programme.findtext("date"),
        "episodes": {e.get("system"): e.text for e in programme.iter("episode-num")},
        "icon": None if icon is None else icon.get("src"),
        "lang": {e.get("lang") for e in programme if e.tag in ("title", "sub-title", "desc")},
    }


def test_the_guide_passes_tv_validate_file(server: Server, tmp_path: Path) -> None:
    response = get(server, "/iptv/xmltv.xml", **{"Accept-Encoding": "identity"})
    assert response.status_code == 200
    validate_xmltv(tmp_path, response.content)
    assert response.headers["content-type"].startswith("application/xml")
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


def test_gzip_when_accepted_and_at_the_gz_url(server: Server, tmp_path: Path) -> None:
    encoded = get(server, "/iptv/xmltv.xml", **{"Accept-Encoding": "gzip, deflate"})
    assert encoded.status_code == 200
    assert encoded.headers["content-encoding"] == "gzip"
    assert encoded.headers["vary"] == "Accept-Encoding"
    assert encoded.content[:2] == b"\x1f\x8b"
    validate_xmltv(tmp_path, gzip.decompress(encoded.content))

    # A .gz file, not an encoding: clients that unpack it by name must get gzip bytes.
    file = get(server, "/iptv/xmltv.xml.gz", **{"Accept-Encoding": "gzip"})
    assert file.status_code == 200
    assert file.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in file.headers
    validate_xmltv(tmp_path, gzip.decompress(file.content))
    assert len(file.content) * 5 < len(gzip.decompress(file.content))


def test_channels_have_dotted_ids_and_the_names_players_match(server: Server) -> None:
    tv = guide(server)
    channel_ids = ids(tv)
    assert sorted(channel_ids) == [1, 2, 3]
    for number, channel_id in channel_ids.items():
        assert XMLTV_ID.match(channel_id), channel_id
        assert channel_id.startswith(f"C{number}.") and channel_id.endswith(".exstream")
        (channel,) = [c for c in tv.iter("channel") if c.get("id") == channel_id]
        assert [d.text for d in channel.iter("display-name")] == [
            NAMES[number],
            f"{number} {NAMES[number]}",
            str(number),
        ]
    assert len(set(channel_ids.values())) == 3


def test_programmes_take_each_field_from_tags_then_nfo_then_name(server: Server) -> None:
    tv = guide(server)
    channel_id = ids(tv)[1]
    found = programmes(tv, channel_id)
    assert {key for key in found if not key.startswith("Edit Me")} == {
        "Tag Show / Tag Title",
        "Nfo Show / Nfo Title",
        "Only Name / Name Title",
        "Movie Name / None",
        "Broken / Ep",
    }
    assert fields(found["Tag Show / Tag Title"]) == {
        "desc": "From the tags.",
        "categories": ["Comedy", "Drama"],
        "date": "20010506",
        "episodes": {"xmltv_ns": "1.2.0/1", "onscreen": "S02E03"},
        "icon": "https://img.example/tagged.jpg",  # the tags have none: the .nfo's
        "lang": {"de"},
    }
    assert fields(found["Nfo Show / Nfo Title"]) == {
        "desc": "From the nfo.",
        "categories": ["Documentary"],
        "date": "20100102",
        "episodes": {"xmltv_ns": "3.4.0/1", "onscreen": "S04E05"},
        "icon": "https://img.example/nfo.jpg",
        "lang": {"de"},
    }
    assert fields(found["Only Name / Name Title"]) == {
        "desc": None,
        "categories": [],
        "date": None,
        "episodes": {"xmltv_ns": "2.6.0/1", "onscreen": "S03E07"},
        "icon": None,
        "lang": {"de"},
    }
    assert fields(found["Movie Name / None"])["date"] == "1999"
    assert fields(found["Movie Name / None"])["episodes"] == {}
    assert fields(found["Broken / Ep"])["episodes"] == {"xmltv_ns": "0.0.0/1", "onscreen": "S01E01"}
    (offline,) = programmes(tv, ids(tv)[3]).values()
    assert offline.findtext("title") == "Offline"
    # The channel API names the item on air in one line.
    assert server.channel(2)["current"]["title"] == "Movie Name"


def test_players_read_every_channel_whole_and_join_it_to_the_guide(server: Server) -> None:
    channel_ids = ids(guide(server))
    response = server.get("/iptv/channels.m3u")
    assert response.status_code == 200
    lines = entries(response.text)
    assert len(lines) == 3
    for player in (jellyfin, kodi):
        read = [player(extinf, url) for extinf, url in lines]
        assert {c.tvg_id: (c.name or "").replace("\u00a0", " ") for c in read} == {
            channel_ids[n]: SHOWN[n] for n in NAMES
        }
        assert [c.number for c in read] == ["1", "2", "3"]
    for extinf, _ in lines:
        tvg_id = re.search(r' tvg-id="([^"]+)"', extinf)
        channel_id = re.search(r' channel-id="([^"]+)"', extinf)
        assert tvg_id is not None and channel_id is not None
        assert tvg_id.group(1) == channel_id.group(1)
    assert "tvg-name=\"Late 'Night', Live\"" in lines[0][0]


def test_an_edited_nfo_shows_at_the_next_scan_and_a_broken_one_is_logged_once(
    server: Server, library: Path
) -> None:
    (library / f"{EDITED}.nfo").write_text(
        "<episodedetails><title>After</title><plot>Edited.</plot></episodedetails>",
        encoding="utf-8",
    )

    def edited() -> ET.Element | None:
        tv = guide(server)
        return programmes(tv, ids(tv)[1]).get("Edit Me / After")

    programme = wait_for(edited, 30, "the edited .nfo in the guide")
    assert programme.findtext("desc") == "Edited."
    broken = str(library / f"{BROKEN}.nfo")
    rebuilds = server.metric("exstream_playout_rebuilds_total", channel="1")
    wait_for(
        lambda: server.metric("exstream_playout_rebuilds_total", channel="1") >= rebuilds + 2,
        30,
        "two more scans",
    )
    warnings = [line for line in server.log().splitlines() if "ignoring" in line and broken in line]
    assert len(warnings) == 1, warnings


def test_channel_ids_stay_the_same_across_a_restart_and_a_reorder(
    tmp_path: Path, library: Path
) -> None:
    with run_server(guide_config(tmp_path, library)) as first:
        before = ids(guide(first))
    with run_server(guide_config(tmp_path, library, reverse=True)) as second:
        after = ids(guide(second))
    assert after == before
    assert all(XMLTV_ID.match(channel_id) for channel_id in after.values())
