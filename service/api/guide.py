"""Playlists and guides for players: the M3U channel list and the XMLTV guide.

The guide is rendered off the event loop and kept for `RENDER_TTL` seconds, or until a
channel's library changes (a rescan found new media or new metadata); it is served
gzip-compressed to clients that accept it, and always at `/iptv/xmltv.xml.gz`.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from service.api.channels import base_url
from service.cluster import xmltv_instance
from service.config import ChannelConfig
from service.errors import ExstreamError
from service.media import MediaItem
from service.metadata import clean
from service.types import AppState, app_state
from service.xmltv import Listing, channel_id, render

RENDER_TTL = 60.0
RENDER_TIMEOUT = 30.0
GZIP_LEVEL = 6
_COMMAS = re.compile(r"\s*,\s*")


class GuideBusy(ExstreamError):
    code = "guide_busy"
    status_code = 503
    headers = {"Retry-After": "5"}  # noqa: RUF012 (read only)

    def __str__(self) -> str:
        return f"the guide took longer than {RENDER_TIMEOUT:g}s to render; try again"

    def __repr__(self) -> str:
        return "GuideBusy()"


# --- M3U -------------------------------------------------------------------------------


def _attr(value: str) -> str:
    """M3U attribute values have no escaping: one line, no double quote (Jellyfin reads
    `key="[^"]+"`, Kodi up to the next quote)."""
    return " ".join((clean(value) or "").replace('"', "'").split())


def _numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return "_" not in token


def display_name(name: str) -> str:
    """The text after the comma of `#EXTINF`, which every parser reads whole.

    Jellyfin keeps only what follows the last comma: commas become " - ". It also takes
    a leading number ("24 Hour News") for a channel number and drops it from the name: a
    no-break space after such a number keeps it (it only splits on a plain space).
    """
    text = _COMMAS.sub(" - ", " ".join((clean(name) or "").split())).strip(" -")
    first, space, rest = text.partition(" ")
    if space and _numeric(first.strip(" .")):
        text = f"{first}\u00a0{rest}"
    return text


def playlist_entry(config: ChannelConfig, url: str, instance: str) -> list[str]:
    """`#EXTINF` and URL lines; `tvg-id` and `channel-id` (Jellyfin reads either) are
    the XMLTV channel id, so players join the playlist to the guide."""
    xmltv_id = channel_id(config.number, instance)
    attrs = [
        f'tvg-id="{xmltv_id}"',
        f'channel-id="{xmltv_id}"',
        f'tvg-chno="{config.number}"',
        f'tvg-name="{_attr(config.name)}"',
    ]
    if config.logo and _attr(config.logo):
        attrs.append(f'tvg-logo="{_attr(config.logo)}"')
    attrs.append(f'group-title="{_attr(config.group or "") or "exstream"}"')
    name = display_name(config.name) or str(config.number)
    return [f"#EXTINF:-1 {' '.join(attrs)},{name}", f"{url}/stream/{config.number}.ts"]


def playlist(configs: Iterable[ChannelConfig], url: str, instance: str) -> str:
    guide = f"{url}/iptv/xmltv.xml"
    lines = [f'#EXTM3U url-tvg="{guide}" x-tvg-url="{guide}"']
    for config in configs:
        lines.extend(playlist_entry(config, url, instance))
    return "\n".join(lines) + "\n"


async def m3u(request: Request) -> Response:
    state = app_state(request)
    configs = [c.config for c in state.channels.channels.values()]
    body = playlist(configs, base_url(request), xmltv_instance(state.settings))
    return Response(body, media_type="audio/x-mpegurl")


# --- XMLTV -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedGuide:
    xml: bytes
    gzip: bytes
    libraries: tuple[tuple[MediaItem, ...], ...]  # each channel's, when rendered
    rendered_at: float  # monotonic

    def is_current(self, libraries: Sequence[tuple[MediaItem, ...]], now: float) -> bool:
        # A rescan that changes nothing keeps the same tuple: identity is enough.
        return (
            now - self.rendered_at < RENDER_TTL
            and len(libraries) == len(self.libraries)
            and all(a is b for a, b in zip(libraries, self.libraries, strict=True))
        )


def _rendered(
    listings: list[Listing],
    libraries: tuple[tuple[MediaItem, ...], ...],
    span: tuple[float, float],
    lang: str,
    now: float,
) -> RenderedGuide:
    xml = render(listings, span[0], span[1], lang)
    # mtime 0: the same guide compresses to the same bytes.
    return RenderedGuide(xml, gzip.compress(xml, GZIP_LEVEL, mtime=0), libraries, now)


class GuideCache:
    """The last rendered guide; one render at a time, shared by concurrent requests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._guide: RenderedGuide | None = None
        self._lock = asyncio.Lock()

    async def get(self, state: AppState) -> RenderedGuide:
        try:
            async with asyncio.timeout(RENDER_TIMEOUT), self._lock:
                channels = list(state.channels.channels.values())
                libraries = tuple(c.items for c in channels)
                guide = self._guide
                if guide is not None and guide.is_current(libraries, self.clock()):
                    return guide
                settings = state.settings
                start = state.channels.wall()
                end = start + settings.guide.hours * 3600
                instance = xmltv_instance(settings)
                # Read on the loop, which owns the playouts; written out in a thread.
                listings = [
                    Listing(
                        channel_id(c.number, instance),
                        c.number,
                        c.config.name,
                        c.config.logo,
                        c.guide(start, end),
                    )
                    for c in channels
                ]
                lang = settings.guide.language
                guide = await asyncio.to_thread(
                    _rendered, listings, libraries, (start, end), lang, self.clock()
                )
                self._guide = guide
                return guide
        except TimeoutError:
            raise GuideBusy() from None


def guide_cache(request: Request) -> GuideCache:
    """The app's guide cache, made at its first use."""
    cache: GuideCache | None = getattr(request.app.state, "guide_cache", None)
    if cache is None:
        cache = request.app.state.guide_cache = GuideCache()
    return cache


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110: `gzip;q=0` refuses it)."""
    weights: dict[str, float] = {}
    for part in (header or "").split(","):
        coding, _, params = part.partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip"):
        if coding in weights:
            return weights[coding] > 0
    return weights.get("*", 0.0) > 0


async def xmltv(request: Request) -> Response:
    guide = await guide_cache(request).get(app_state(request))
    headers = {"Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
        return Response(guide.gzip, media_type="application/xml", headers=headers)
    return Response(guide.xml, media_type="application/xml", headers=headers)


async def xmltv_gz(request: Request) -> Response:
    """The guide as a .gz file: the body is gzip data, not a transfer encoding, so
    clients that unpack by the .gz name (Jellyfin) or by its magic bytes (Kodi) agree."""
    guide = await guide_cache(request).get(app_state(request))
    return Response(guide.gzip, media_type="application/gzip")
