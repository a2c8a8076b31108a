"""Kodi `.nfo` files beside the media: programme metadata a library manager wrote.

For `Show - S01E02.mkv` the file's own `Show - S01E02.nfo` (`<episodedetails>` or
`<movie>`) comes first, then `movie.nfo` in its directory, then `tvshow.nfo` (`<tvshow>`:
the show's name, genres, picture and plot) in its directory or the one above (Kodi's
`Show/Season 1/` layout). The files are read at every scan, outside the probe cache, so
an edited `.nfo` shows at the next scan without probing the media again; a parsed file
is kept while its mtime and size are the same. A broken `.nfo` is skipped and logged
once, never a reason to skip the media.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from service.metadata import Programme, categories, clean, merge, number, web_url, xmltv_date

MAX_BYTES = 1024 * 1024  # an .nfo is a few kilobytes; more is not one
MAX_CACHED = 50_000  # parsed files kept (a few hundred bytes each)
_ROOTS = ("episodedetails", "movie", "tvshow")
# Kodi accepts a scraper link after the XML ("combination" .nfo files): cut it off.
_END_OF_ROOT = re.compile(rb"</(?:episodedetails|movie|tvshow)\s*>")
_DECLARATION = re.compile(rb"^<\?xml[^>]*\?>")


class NfoError(ValueError):
    """Not a usable .nfo file; `quiet` when it is not meant to be XML at all."""

    def __init__(self, reason: str, *, quiet: bool = False) -> None:
        super().__init__(reason)
        self.quiet = quiet


@dataclass(frozen=True, slots=True)
class NfoFile:
    kind: str  # episodedetails, movie or tvshow
    programme: Programme


def parse_nfo(data: bytes) -> NfoFile:
    """The programme a Kodi .nfo describes; NfoError when it is not one."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16: read as UTF-8 without its declaration
        try:
            data = _DECLARATION.sub(b"", data.decode("utf-16").encode("utf-8").lstrip())
        except UnicodeError as exc:
            raise NfoError(f"not UTF-16: {exc}") from None
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<"):
        raise NfoError("not XML (a link for scrapers?)", quiet=True)
    # Entity declarations are how XML bombs are built; no Kodi .nfo needs one.
    if b"<!ENTITY" in text or b"<!DOCTYPE" in text:
        raise NfoError("declares a DTD or entities")
    ends = list(_END_OF_ROOT.finditer(text))
    if ends:
        text = text[: ends[-1].end()]
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise NfoError(f"not well-formed XML: {exc}") from None
    if root.tag not in _ROOTS:
        raise NfoError(f"root element <{root.tag}> is none of {', '.join(_ROOTS)}")

    def text_of(*tags: str) -> str | None:
        return next((v for t in tags if (v := clean(root.findtext(t))) is not None), None)

    genres = categories([g.text for g in root.findall("genre") if g.text])
    thumbs = [web_url(t.text) for t in root.findall("thumb")]
    date = next(
        (d for t in ("aired", "premiered", "year") if (d := xmltv_date(root.findtext(t)))), None
    )
    if root.tag == "tvshow":
        show = Programme(
            show=text_of("title", "showtitle"),
            desc=text_of("plot", "outline"),
            categories=genres,
            icon=next((t for t in thumbs if t), None),
        )
        return NfoFile(root.tag, show)
    programme = Programme(
        show=text_of("showtitle") if root.tag == "episodedetails" else None,
        title=text_of("title"),
        season=number(root.findtext("season")),
        episode=number(root.findtext("episode")),
        desc=text_of("plot", "outline"),
        categories=genres,
        date=date,
        icon=next((t for t in thumbs if t), None),
    )
    return NfoFile(root.tag, programme)


class NfoReader:
    """The .nfo metadata of media files, each .nfo parsed again only when it changes."""

    def __init__(self, max_cached: int = MAX_CACHED) -> None:
        self.max_cached = max_cached
        self._parsed: OrderedDict[Path, tuple[int, int, NfoFile | None]] = OrderedDict()
        self._lock = threading.Lock()  # scans read in worker threads

    def programme(self, media: Path) -> Programme:
        """What the .nfo files around `media` say, most specific first (blocking I/O)."""
        directory = media.parent
        sources = [
            self.read(media.with_suffix(".nfo")),
            self.read(directory / "movie.nfo"),
            self.read(directory / "tvshow.nfo"),
            self.read(directory.parent / "tvshow.nfo"),
        ]
        return merge(*(s.programme for s in sources if s is not None))

    def read(self, path: Path) -> NfoFile | None:
        try:
            stat = path.stat()
        except OSError:
            with self._lock:
                self._parsed.pop(path, None)
            return None
        with self._lock:
            known = self._parsed.get(path)
            if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
                self._parsed.move_to_end(path)
                return known[2]
            parsed = self._parse(path)
            self._parsed[path] = (stat.st_mtime_ns, stat.st_size, parsed)
            self._parsed.move_to_end(path)
            while len(self._parsed) > self.max_cached:
                self._parsed.popitem(last=False)
            return parsed

    def _parse(self, path: Path) -> NfoFile | None:
        """Parsed, or None once logged: each version of a broken file is logged once."""
        try:
            with path.open("rb") as file:
                data = file.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise NfoError(f"larger than {MAX_BYTES} bytes")
            return parse_nfo(data)
        except NfoError as exc:
            log = logger.debug if exc.quiet else logger.warning
            log("ignoring {}: {}", path, exc, path=str(path))
        except OSError as exc:
            logger.warning("ignoring {}: {}", path, exc.strerror or exc, path=str(path))
        except Exception as exc:  # a library's file must never stop a scan
            logger.warning("ignoring {}: {!r}", path, exc, path=str(path))
        return None
