from __future__ import annotations

import pytest

from service.metadata import (
    Programme,
    categories,
    clean,
    from_file_tags,
    from_name,
    from_tags,
    merge,
    web_url,
    xmltv_date,
)


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        (
            "Show - S01E02 - The Title",
            Programme(show="Show", title="The Title", season=1, episode=2),
        ),
        ("Show.S01E02.The.Title", Programme(show="Show", title="The Title", season=1, episode=2)),
        (
            "The_Show_s10e200_Title",
            Programme(show="The Show", title="Title", season=10, episode=200),
        ),
        ("Show 1x02 The Title", Programme(show="Show", title="The Title", season=1, episode=2)),
        ("Show - S02E03E04", Programme(show="Show", season=2, episode=3)),
        ("S03E04 - Only Episode", Programme(title="Only Episode", season=3, episode=4)),
        (
            "Mr. Robot - S01E02 - eps1.1_ones",
            Programme(show="Mr. Robot", title="eps1.1_ones", season=1, episode=2),
        ),
        ("Movie Name (1999)", Programme(title="Movie Name", date="1999")),
        ("Movie Name [2004] 1080p", Programme(title="Movie Name", date="2004")),
        ("The.Matrix.1999.1080p.BluRay", Programme(title="The Matrix", date="1999")),
        # Spaces: a year may be part of the title, and a resolution is no episode.
        ("Class of 1984", Programme(title="Class of 1984")),
        ("Clip 1920x1080", Programme(title="Clip 1920x1080")),
        ("2001 A Space Odyssey", Programme(title="2001 A Space Odyssey")),
        ("clip0", Programme(title="clip0")),
        ("Season Finale S01E02Extra", Programme(title="Season Finale S01E02Extra")),
    ],
)
def test_names(stem: str, expected: Programme) -> None:
    assert from_name(stem) == expected


def test_an_undecodable_name_is_shown_with_replacement_characters() -> None:
    stem = b"caf\xe9 - S01E02".decode("utf-8", "surrogateescape")
    assert from_name(stem) == Programme(show="caf\ufffd", season=1, episode=2)


MP4_TAGS = {  # as ffprobe reports ffmpeg's -metadata in an MP4
    "major_brand": "isom",
    "title": "Pilot, part 1",
    "date": "2001-05-06",
    "comment": "a comment",
    "genre": "Comedy;Drama",
    "description": "Short",
    "synopsis": "The long synopsis.",
    "show": "My Show",
    "episode_id": "S02E03",
    "episode_sort": "3",
    "season_number": "2",
}
MKV_TAGS = {  # the same in a Matroska file: upper case, and YEAR
    "title": "Pilot, part 1",
    "YEAR": "2001",
    "SHOW": "My Show",
    "SEASON_NUMBER": "2",
    "EPISODE_SORT": "3",
    "DESCRIPTION": "Short",
    "GENRE": "Comedy / Drama",
    "ENCODER": "Lavf59.27.100",
}


def test_mp4_tags() -> None:
    assert from_tags(MP4_TAGS) == Programme(
        show="My Show",
        title="Pilot, part 1",
        season=2,
        episode=3,
        desc="The long synopsis.",
        categories=("Comedy", "Drama"),
        date="20010506",
    )


def test_matroska_tags() -> None:
    assert from_tags(MKV_TAGS) == Programme(
        show="My Show",
        title="Pilot, part 1",
        season=2,
        episode=3,
        desc="Short",
        categories=("Comedy", "Drama"),
        date="2001",
    )


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"episode_id": "s04e05"}, Programme(season=4, episode=5)),
        ({"episode_id": "S04E05", "episode_sort": "9"}, Programme(season=4, episode=9)),
        ({"episode_id": "production 7"}, Programme()),
        ({"season_number": "0", "episode_sort": "1/10"}, Programme(season=0, episode=1)),
        ({"comment": "only a comment"}, Programme(desc="only a comment")),
        ({"title": " \x01 ", "genre": "", "date": "sometime"}, Programme()),
        ({"TITLE": "A\x00B\x85C"}, Programme(title="ABC")),
        ({"date": "2021-02-30"}, Programme()),
        ({"date": "2021-02-03T10:00:00.000000Z"}, Programme(date="20210203")),
        ({"date": "1492"}, Programme()),
    ],
)
def test_tag_edge_cases(tags: dict[str, object], expected: Programme) -> None:
    assert from_tags(tags) == expected


def test_stream_tags_complete_the_container_but_never_name_it() -> None:
    programme = from_file_tags(
        {"title": "Film"},
        [
            {"title": "Commentary", "description": "Track notes", "GENRE": "Documentary"},
            {"title": "English", "DATE": "1999"},
        ],
    )
    assert programme == Programme(title="Film", categories=("Documentary",), date="1999")


def test_merge_takes_each_field_from_the_first_source_that_has_it() -> None:
    tags = Programme(title="Tag Title")
    nfo = Programme(title="Nfo Title", desc="Nfo plot", season=0, categories=("Nfo",))
    name = Programme(show="Name Show", title="Name Title", season=3, episode=4, date="1999")
    assert merge(tags, nfo, name) == Programme(
        show="Name Show",
        title="Tag Title",
        season=0,  # specials: zero is a value, not a gap
        episode=4,
        desc="Nfo plot",
        categories=("Nfo",),
        date="1999",
    )


@pytest.mark.parametrize(
    ("programme", "guide_title", "sub_title", "xmltv_ns", "onscreen", "label"),
    [
        (
            Programme(show="Show", title="Pilot", season=1, episode=2),
            "Show", "Pilot", "0.1.0/1", "S01E02", "Show - S01E02 - Pilot",
        ),
        (Programme(show="Show", episode=7), "Show", None, ".6.0/1", "E07", "Show - E07"),
        (Programme(show="Show", title="Show", season=2), "Show", None, "1..0/1", None, "Show"),
        (Programme(show="Show", season=0, episode=3), "Show", None, ".2.0/1", "S00E03",
         "Show - S00E03"),
        (Programme(title="Film", date="1999"), "Film", None, None, None, "Film"),
        (Programme(), None, None, None, None, None),
    ],
)  # fmt: skip
def test_what_a_guide_shows(
    programme: Programme,
    guide_title: str | None,
    sub_title: str | None,
    xmltv_ns: str | None,
    onscreen: str | None,
    label: str | None,
) -> None:
    assert programme.guide_title == guide_title
    assert programme.sub_title == sub_title
    assert programme.xmltv_ns == xmltv_ns
    assert programme.onscreen == onscreen
    assert programme.label == label


def test_helpers() -> None:
    assert clean("  a\tb \x07") == "a\tb"
    assert clean("\x1f") is None
    assert categories(["Comedy, Drama", "Drama", " "]) == ("Comedy", "Drama")
    assert xmltv_date("1999-12") == "199912"
    assert web_url("https://example.com/a.jpg") == "https://example.com/a.jpg"
    assert web_url("/srv/media/poster.jpg") is None
    assert web_url("http://example.com/a b.jpg") is None
