"""Programme metadata for the guide: what a media file is (show, episode, film, year).

Three sources, in this order of precedence: the file's own tags (as ffprobe reports
them), a Kodi `.nfo` beside it (service/nfo.py), and its name (`Show - S01E02 - Title`,
`Show.S01E02.Title`, `Show 1x02 Title`, `Movie (1999)`). Each field comes from the first
source that has it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import date

# Separators between the parts of a file name.
_SEP = r"[\s._-]"
_EPISODE_NAMES = (
    re.compile(  # Show - S01E02 - Title, Show.S01E02.Title, S01E02 Title, Show S01E02E03
        rf"^(?:(?P<show>.*?){_SEP}+)?[Ss](?P<season>\d{{1,3}}){_SEP}*[Ee](?P<episode>\d{{1,4}})"
        rf"(?:{_SEP}*[Ee]\d{{1,4}})*(?P<rest>(?:{_SEP}.*)?)$"
    ),
    re.compile(  # Show 1x02 Title
        rf"^(?P<show>.*?){_SEP}+(?P<season>\d{{1,2}})[xX](?P<episode>\d{{1,3}})(?P<rest>(?:{_SEP}.*)?)$"
    ),
)
_MOVIE_NAME = re.compile(r"^(?P<title>.+?)\s*[(\[](?P<year>(?:18|19|20|21)\d{2})[)\]](?P<rest>.*)$")
# `The.Matrix.1999.1080p`: a bare year only in names without spaces, where it cannot be
# part of the title ("Class of 1984").
_DOTTED_MOVIE_NAME = re.compile(
    r"^(?P<title>[^\s]+?)[._](?P<year>(?:18|19|20|21)\d{2})(?:[._].*)?$"
)
_SXXEXX = re.compile(r"[Ss](\d{1,3})\s*[Ee](\d{1,4})")
_DATE = re.compile(r"^\s*(\d{4})(?:-?(\d{2})(?:-?(\d{2}))?)?(?:[T\s].*)?$")
_LEADING_NUMBER = re.compile(r"^\s*(\d{1,5})")
_GENRE_SPLIT = re.compile(r"\s*[;/|,]\s*")
# Not allowed in XML 1.0, or (C1 controls) taken by XMLTV's validator for mis-encoding.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")

# Tag names (lower case) in the order they are tried; ffprobe reports MP4 atoms under
# ffmpeg's names (tvsh -> show) and Matroska tags as written (upper case).
_DESCRIPTION_TAGS = ("synopsis", "description", "summary", "comment")
_DATE_TAGS = ("date", "date_released", "year", "originaldate")


@dataclass(frozen=True, slots=True)
class Programme:
    show: str | None = None  # the series an episode belongs to
    title: str | None = None  # the episode's title, or the film's
    season: int | None = None
    episode: int | None = None
    desc: str | None = None
    categories: tuple[str, ...] = ()
    date: str | None = None  # as XMLTV writes dates: YYYY, YYYYMM or YYYYMMDD
    icon: str | None = None  # an http(s) URL: a local path means nothing to a client

    def fill(self, fallback: Programme) -> Programme:
        """This programme, with the fields it lacks taken from `fallback`."""
        values = {}
        for spec in fields(self):
            mine = getattr(self, spec.name)
            values[spec.name] = getattr(fallback, spec.name) if mine in (None, ()) else mine
        return Programme(**values)

    @property
    def guide_title(self) -> str | None:
        """The title a guide shows: the show's for an episode (Plex and Jellyfin group
        episodes by it), the film's otherwise."""
        return self.show or self.title

    @property
    def sub_title(self) -> str | None:
        if self.show and self.title and self.title != self.show:
            return self.title
        return None

    @property
    def onscreen(self) -> str | None:
        """`S01E02` (`E02` without a season), as players print episode numbers."""
        if self.episode is None:
            return None
        season = f"S{self.season:02d}" if self.season is not None else ""
        return f"{season}E{self.episode:02d}"

    @property
    def xmltv_ns(self) -> str | None:
        """XMLTV's zero-based `season.episode.part`; season 0 (specials) has no place in it."""
        season = str(self.season - 1) if self.season else ""
        episode = str(self.episode - 1) if self.episode else ""
        if not season and not episode:
            return None
        return f"{season}.{episode}.0/1"

    @property
    def label(self) -> str | None:
        """One line for people: `Show - S01E02 - Title`, or the title."""
        if not self.show:
            return self.title
        parts = [self.show, self.onscreen, self.sub_title]
        return " - ".join(p for p in parts if p)


def merge(*sources: Programme) -> Programme:
    """One programme from `sources`, the first having precedence field by field."""
    merged = Programme()
    for source in sources:
        merged = merged.fill(source)
    return merged


def clean(value: object) -> str | None:
    """Text fit for XML on one logical value: no control characters, no stray spaces."""
    if value is None:
        return None
    # File names that are not UTF-8 arrive with lone surrogates: show them as U+FFFD.
    text = str(value)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates no file name decoding made
        raw = text.encode("utf-8", "surrogatepass")
    text = raw.decode("utf-8", "replace")
    text = _ILLEGAL_XML.sub("", text).strip()
    return text or None


def number(value: object) -> int | None:
    """The leading number of `value` (`3`, `3/10`), or None."""
    match = _LEADING_NUMBER.match(str(value)) if value is not None else None
    return int(match.group(1)) if match else None


def xmltv_date(value: object) -> str | None:
    """`2001-05-06`, `20010506`, `2001-05-06T00:00:00Z`, `2001` -> XMLTV's `20010506`..."""
    match = _DATE.match(str(value)) if value is not None else None
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    if not 1800 <= int(year) <= 2199:
        return None
    return year + (month + (day or "") if month else "")


def categories(values: object) -> tuple[str, ...]:
    """Genres from one tag (`Comedy; Drama`, `Comedy/Drama`) or a list of them."""
    items = values if isinstance(values, list | tuple) else [values]
    found: list[str] = []
    for item in items:
        for part in _GENRE_SPLIT.split(str(item)):
            text = clean(part)
            if text and text not in found:
                found.append(text)
    return tuple(found)


def web_url(value: object) -> str | None:
    text = clean(value)
    if text and text.lower().startswith(("http://", "https://")) and text.isprintable():
        return text if " " not in text else None
    return None


def from_tags(tags: Mapping[str, object]) -> Programme:
    """What a file's tags say (keys in any case: Matroska's are upper case)."""
    lower = {str(k).lower(): v for k, v in tags.items()}

    def first(*names: str) -> object:
        return next((lower[n] for n in names if clean(lower.get(n))), None)

    season = number(first("season_number", "season"))
    episode = number(first("episode_sort", "episode_number", "episode"))
    episode_id = clean(first("episode_id"))
    coded = _SXXEXX.search(episode_id) if episode_id else None
    if coded is not None:
        season = season if season is not None else int(coded.group(1))
        episode = episode if episode is not None else int(coded.group(2))
    return Programme(
        show=clean(first("show", "series", "tvshow")),
        title=clean(first("title")),
        season=season,
        episode=episode,
        desc=clean(first(*_DESCRIPTION_TAGS)),
        categories=categories(first("genre")) if first("genre") else (),
        date=next((d for t in _DATE_TAGS if (d := xmltv_date(lower.get(t)))), None),
    )


def from_file_tags(
    format_tags: Mapping[str, object], stream_tags: Iterable[Mapping[str, object]] = ()
) -> Programme:
    """The container's tags, completed by the played streams' (never their titles or
    descriptions: a track's title names the track, e.g. "Commentary")."""
    programme = from_tags(format_tags)
    for tags in stream_tags:
        programme = programme.fill(replace(from_tags(tags), title=None, desc=None))
    return programme


def _words(text: str, dotted: bool) -> str | None:
    if dotted:
        text = text.replace(".", " ").replace("_", " ")
    return clean(text.strip(" ._-"))


def from_name(stem: str) -> Programme:
    """What a file name says; a name that follows no pattern is the title."""
    dotted = " " not in stem.strip()
    for pattern in _EPISODE_NAMES:
        match = pattern.match(stem)
        if match is not None:
            return Programme(
                show=_words(match.group("show") or "", dotted),
                title=_words(match.group("rest"), dotted),
                season=int(match.group("season")),
                episode=int(match.group("episode")),
            )
    match = _MOVIE_NAME.match(stem) or (_DOTTED_MOVIE_NAME.match(stem) if dotted else None)
    if match is not None:
        title = _words(match.group("title"), dotted)
        if title:
            return Programme(title=title, date=match.group("year"))
    return Programme(title=clean(stem))
