"""How players read an M3U playlist, written after their parsers: Jellyfin's M3uParser
(src/Jellyfin.LiveTv/TunerHosts/M3uParser.cs) and Kodi's PVR IPTV Simple
(src/iptvsimple/PlaylistLoader.cpp); and the XMLTV reference validator. Tests hold the
playlist and the guide to what they make of it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

XMLTV_DTD = "/usr/share/xmltv/xmltv.dtd"  # shipped with xmltv-util, like tv_validate_file


def validate_xmltv(tmp_path: Path, document: bytes) -> None:
    """`tv_validate_file` (xmltv-util) accepts `document`, or the test fails with its words."""
    path = tmp_path / "guide.xml"
    path.write_bytes(document)
    run = subprocess.run(
        ["tv_validate_file", "--dtd-file", XMLTV_DTD, str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


_JELLYFIN_ATTRIBUTE = re.compile(r'([a-z0-9\-_]+)="([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True)
class PlayerChannel:
    name: str | None
    tvg_id: str | None  # what the player joins to the guide's channel id
    number: str | None
    url: str


def _dotnet_double(text: str) -> bool:
    """double.TryParse(text, InvariantCulture), closely enough: no '_', and only ASCII
    spaces around it (.NET takes a no-break space for a letter)."""
    if "_" in text or text != text.strip(" \t\r\n\v\f") or not text.isascii():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def jellyfin(extinf: str, url: str) -> PlayerChannel:
    line = extinf.removeprefix("#EXTINF:").strip()
    attributes: dict[str, str] = {}
    remaining = line
    for match in _JELLYFIN_ATTRIBUTE.finditer(line):
        key, value = match.group(1), match.group(2)
        attributes[key.lower()] = value
        remaining = re.sub(re.escape(f'{key}="{value}"'), "", remaining, flags=re.IGNORECASE)
    parts = [p for p in remaining.split(",") if p]
    name: str | None = parts[-1].strip() if len(parts) > 1 else None
    if name:
        space = name.find(" ")
        if space > 0 and _dotnet_double(name[:space].strip(" .")):
            name = name[space + 1 :].strip(" -")
    name = name or attributes.get("tvg-name") or attributes.get("tvg-id")
    number = attributes.get("tvg-chno")
    tvg_id = attributes.get("tvg-id") or attributes.get("channel-id")
    return PlayerChannel(name, tvg_id, number, url)


def _kodi_marker(line: str, marker: str) -> str:
    start = line.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    end_char = " "
    if line[start : start + 1] == '"':
        end_char = '"'
        start += 1
    end = line.find(end_char, start)
    return line[start : end if end >= 0 else len(line)]


def kodi(extinf: str, url: str) -> PlayerChannel:
    colon = extinf.find(":")
    comma = extinf.rfind(",")
    last_quote = extinf.rfind('"')
    if last_quote >= 0:
        possible = extinf[last_quote + 1 :]
        if possible.strip().startswith(","):
            comma = last_quote + possible.find(",") + 1
    if colon < 0 or comma < 0 or comma < colon:
        return PlayerChannel(None, None, None, url)
    info = extinf[colon + 1 : comma]
    return PlayerChannel(
        extinf[comma + 1 :].strip(),
        _kodi_marker(info, "tvg-id=") or None,
        _kodi_marker(info, "tvg-chno=") or None,
        url,
    )


def entries(playlist: str) -> list[tuple[str, str]]:
    """(#EXTINF line, URL) pairs."""
    lines = [line.strip() for line in playlist.splitlines() if line.strip()]
    return [
        (line, lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("#EXTINF:") and i + 1 < len(lines)
    ]
