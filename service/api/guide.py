"""Playlists and guides for players: the M3U channel list and the XMLTV guide."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from service.api.channels import base_url
from service.types import app_state

GUIDE_HOURS = 24


def _attr(value: str) -> str:
    """M3U attribute values have no escaping: keep them on one line and quote-free."""
    return " ".join(value.replace('"', "'").split())


async def m3u(request: Request) -> Response:
    state = app_state(request)
    url = base_url(request)
    lines = [f'#EXTM3U url-tvg="{url}/iptv/xmltv.xml" x-tvg-url="{url}/iptv/xmltv.xml"']
    for channel in state.channels.channels.values():
        config = channel.config
        attrs = [
            f'tvg-id="{config.number}"',
            f'tvg-name="{_attr(config.name)}"',
            f'tvg-chno="{config.number}"',
        ]
        if config.logo:
            attrs.append(f'tvg-logo="{_attr(config.logo)}"')
        attrs.append(f'group-title="{_attr(config.group or "exstream")}"')
        lines.append(f"#EXTINF:-1 {' '.join(attrs)},{_attr(config.name)}")
        lines.append(f"{url}/stream/{config.number}.ts")
    return Response("\n".join(lines) + "\n", media_type="audio/x-mpegurl")


def xmltv_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y%m%d%H%M%S +0000")


async def xmltv(request: Request) -> Response:
    state = app_state(request)
    now = state.channels.wall()
    until = now + GUIDE_HOURS * 3600
    tv = ET.Element("tv", {"generator-info-name": "exstream"})
    channels = list(state.channels.channels.values())
    for channel in channels:
        element = ET.SubElement(tv, "channel", {"id": str(channel.number)})
        ET.SubElement(element, "display-name").text = channel.config.name
        ET.SubElement(element, "display-name").text = str(channel.number)
        if channel.config.logo:
            ET.SubElement(element, "icon", {"src": channel.config.logo})
    for channel in channels:
        entries = channel.playout.guide(now, until)
        slots = [(e.start, e.end, e.item.title) for e in entries] or [(now, until, "Offline")]
        for start, end, title in slots:
            programme = ET.SubElement(
                tv,
                "programme",
                {
                    "start": xmltv_time(start),
                    "stop": xmltv_time(end),
                    "channel": str(channel.number),
                },
            )
            ET.SubElement(programme, "title", {"lang": "en"}).text = title
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(tv, encoding="utf-8")
    return Response(body, media_type="application/xml")
