from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.metadata import Programme
from service.nfo import MAX_BYTES, NfoError, NfoReader, parse_nfo
from tests.loglines import capturing, level_and_message

EPISODE = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>
<episodedetails>
  <title>The Pilot</title>
  <showtitle>Nfo Show</showtitle>
  <season>2</season>
  <episode>5</episode>
  <plot>Where it all begins &amp; more.</plot>
  <genre>Comedy</genre>
  <genre>Drama</genre>
  <aired>2010-01-02</aired>
  <thumb aspect="thumb">https://img.example/ep.jpg</thumb>
  <uniqueid type="tvdb">123</uniqueid>
</episodedetails>
https://thetvdb.com/?tab=episode&amp;id=123
"""
MOVIE = b"""\xef\xbb\xbf<movie>
  <title>Nfo Film</title>
  <plot>A film.</plot>
  <genre>Thriller / Crime</genre>
  <year>1999</year>
  <thumb>/local/poster.jpg</thumb>
  <thumb>http://img.example/poster.jpg</thumb>
</movie>"""
TVSHOW = b"""<tvshow>
  <title>Shown Show</title>
  <plot>The show's plot.</plot>
  <genre>Animation</genre>
  <premiered>2005-03-04</premiered>
  <thumb>https://img.example/show.jpg</thumb>
</tvshow>"""


@pytest.fixture
def logged() -> Iterator[list[str]]:
    with capturing(lambda record: " ".join(level_and_message(record))) as lines:
        yield lines


def test_episode_with_a_scraper_link_after_it() -> None:
    nfo = parse_nfo(EPISODE)
    assert nfo.kind == "episodedetails"
    assert nfo.programme == Programme(
        show="Nfo Show",
        title="The Pilot",
        season=2,
        episode=5,
        desc="Where it all begins & more.",
        categories=("Comedy", "Drama"),
        date="20100102",
        icon="https://img.example/ep.jpg",
    )


def test_movie() -> None:
    assert parse_nfo(MOVIE).programme == Programme(
        title="Nfo Film",
        desc="A film.",
        categories=("Thriller", "Crime"),
        date="1999",
        icon="http://img.example/poster.jpg",  # the local path means nothing to a client
    )


def test_utf16_with_its_declaration() -> None:
    data = '<?xml version="1.0" encoding="UTF-16"?><movie><title>Café</title></movie>'
    assert parse_nfo(data.encode("utf-16")).programme == Programme(title="Café")


def test_tvshow_gives_the_show_not_an_episode_title() -> None:
    assert parse_nfo(TVSHOW).programme == Programme(
        show="Shown Show",
        desc="The show's plot.",
        categories=("Animation",),
        icon="https://img.example/show.jpg",
    )


@pytest.mark.parametrize(
    ("data", "quiet"),
    [
        (b"https://www.themoviedb.org/movie/603", True),
        (b"", True),
        (b"<movie><title>cut short", False),
        (b"<musicvideo><title>x</title></musicvideo>", False),
        (
            b'<?xml version="1.0"?><!DOCTYPE movie [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><movie><title>&b;</title></movie>',
            False,
        ),
    ],
    ids=["link", "empty", "truncated", "other-root", "entities"],
)
def test_what_is_not_an_nfo(data: bytes, quiet: bool) -> None:
    with pytest.raises(NfoError) as raised:
        parse_nfo(data)
    assert raised.value.quiet == quiet


def test_reader_merges_the_files_around_a_media_file(tmp_path: Path) -> None:
    season = tmp_path / "Show" / "Season 2"
    season.mkdir(parents=True)
    media = season / "Show - S02E05.mkv"
    (season / "Show - S02E05.nfo").write_bytes(
        b"<episodedetails><title>Own</title></episodedetails>"
    )
    (tmp_path / "Show" / "tvshow.nfo").write_bytes(TVSHOW)
    assert NfoReader().programme(media) == Programme(
        show="Shown Show",
        title="Own",
        desc="The show's plot.",
        categories=("Animation",),
        icon="https://img.example/show.jpg",
    )
    assert NfoReader().programme(season / "other.mkv").show == "Shown Show"
    assert NfoReader().programme(tmp_path / "nothing.mkv") == Programme()


def test_a_broken_nfo_is_logged_once_per_version_and_a_change_is_seen(
    tmp_path: Path, logged: list[str]
) -> None:
    media = tmp_path / "film.mp4"
    nfo = tmp_path / "film.nfo"
    nfo.write_bytes(b"<movie><title>broken")
    reader = NfoReader()
    for _ in range(3):
        assert reader.programme(media) == Programme()
    warnings = [line for line in logged if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert str(nfo) in warnings[0] and "not well-formed" in warnings[0]

    nfo.write_bytes(MOVIE)
    os.utime(nfo, ns=(1, 1))  # another version even on a coarse clock
    assert reader.programme(media).title == "Nfo Film"
    nfo.write_bytes(MOVIE.replace(b"Nfo Film", b"New Film"))
    assert reader.programme(media).title == "New Film"  # size changed: read again
    nfo.unlink()
    assert reader.programme(media) == Programme()


def test_a_link_nfo_is_logged_at_debug_only(tmp_path: Path, logged: list[str]) -> None:
    (tmp_path / "film.nfo").write_bytes(b"https://www.imdb.com/title/tt0133093/")
    assert NfoReader().programme(tmp_path / "film.mp4") == Programme()
    assert [line.split()[0] for line in logged] == ["DEBUG"]


def test_oversized_and_unreadable_files_are_skipped(tmp_path: Path, logged: list[str]) -> None:
    (tmp_path / "big.nfo").write_bytes(b"<movie>" + b" " * MAX_BYTES + b"</movie>")
    (tmp_path / "dir.nfo").mkdir()  # stat works, open fails
    reader = NfoReader()
    assert reader.programme(tmp_path / "big.mp4") == Programme()
    assert reader.programme(tmp_path / "dir.mp4") == Programme()
    assert len([line for line in logged if line.startswith("WARNING")]) == 2


def test_parsed_files_kept_are_bounded(tmp_path: Path) -> None:
    reader = NfoReader(max_cached=3)
    for index in range(10):
        (tmp_path / f"{index}.nfo").write_bytes(MOVIE)
        reader.read(tmp_path / f"{index}.nfo")
    assert len(reader._parsed) == 3
