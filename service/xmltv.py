"""The XMLTV guide document, as `tv_validate_file` (xmltv-util) and players read it.

Channel ids are `C<number>.<instance>.exstream`: dotted as the XMLTV DTD asks (RFC 2838
style), the same across restarts and reorders of the configuration, and different from
another exstream's (`instance`: `[guide] instance`, or derived from the data directory).
Players match the M3U `tvg-id` against them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from service.config import Settings
from service.media import MediaItem
from service.metadata import Programme, clean
from service.playout import Entry

OFFLINE_TITLE = "Offline"


def instance_id(settings: Settings) -> str:
    """The part of channel ids that tells this exstream from another one."""
    if settings.guide.instance:
        return settings.guide.instance.lower()
    data_dir = str(settings.server.data_dir)
    return hashlib.sha256(data_dir.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def channel_id(number: int, instance: str) -> str:
    return f"C{number}.{instance}.exstream"


def xmltv_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y%m%d%H%M%S +0000")


@dataclass(frozen=True, slots=True)
class Listing:
    """One channel of the guide and its entries over the guide's span."""

    id: str
    number: int
    name: str
    logo: str | None
    entries: Sequence[Entry]


def display_names(number: int, name: str) -> list[str]:
    """The forms players match on: the name first (Jellyfin shows the first one), then
    `N Name`, then `N` alone (Jellyfin and Plex take a numeric one as the number)."""
    shown = clean(name) or str(number)
    return [shown, f"{number} {shown}", str(number)]


def _element(tag: str, text: str | None, lang: str | None = None) -> str:
    if not text:
        return ""
    attribute = f" lang={quoteattr(lang)}" if lang else ""
    return f"<{tag}{attribute}>{escape(text)}</{tag}>"


def programme_title(item: MediaItem) -> str:
    """The programme's title in the guide: the show's (or the film's), else the file's."""
    return item.programme.guide_title or clean(Path(item.path).stem) or OFFLINE_TITLE


def programme_body(item: MediaItem | None, lang: str) -> str:
    """The elements of one programme, in the order the DTD gives them."""
    if item is None:
        return _element("title", OFFLINE_TITLE, lang)
    programme: Programme = item.programme
    parts = [
        _element("title", programme_title(item), lang),
        _element("sub-title", programme.sub_title, lang),
        _element("desc", programme.desc, lang),
        _element("date", programme.date),
        *(_element("category", c, lang) for c in programme.categories),
    ]
    if programme.icon:
        parts.append(f"<icon src={quoteattr(programme.icon)} />")
    if programme.xmltv_ns:
        parts.append(f'<episode-num system="xmltv_ns">{programme.xmltv_ns}</episode-num>')
    if programme.onscreen:
        parts.append(f'<episode-num system="onscreen">{programme.onscreen}</episode-num>')
    return "".join(parts)


def render(listings: Sequence[Listing], start: float, end: float, lang: str) -> bytes:
    """The whole document; a channel with nothing scheduled shows one Offline programme."""
    out = [
        # No DOCTYPE: some readers (.NET's default settings) refuse any DTD.
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<tv generator-info-name="exstream">\n',
    ]
    for listing in listings:
        out.append(f"<channel id={quoteattr(listing.id)}>")
        out.extend(_element("display-name", n) for n in display_names(listing.number, listing.name))
        logo = clean(listing.logo)
        if logo:
            out.append(f"<icon src={quoteattr(logo)} />")
        out.append("</channel>\n")
    # An item recurs all day long: its elements are written once.
    bodies: dict[int, str] = {}
    for listing in listings:
        channel = quoteattr(listing.id)
        slots: Sequence[tuple[float, float, MediaItem | None]] = [
            (e.start, e.end, e.item) for e in listing.entries
        ] or [(start, end, None)]
        for slot_start, slot_end, item in slots:
            key = id(item)
            body = bodies.get(key)
            if body is None:
                body = bodies[key] = programme_body(item, lang)
            out.append(
                f'<programme start="{xmltv_time(slot_start)}" stop="{xmltv_time(slot_end)}"'
                f" channel={channel}>{body}</programme>\n"
            )
    out.append("</tv>\n")
    return "".join(out).encode("utf-8")
