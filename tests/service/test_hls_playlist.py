"""service/hls/playlist.py, read back with the RFC 8216 checker of the e2e tests."""

from __future__ import annotations

import itertools

import m3u8

from service.hls.playlist import MediaPlaylist, Variant, etag
from tests.e2e.hlsrules import LivePlaylist

T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(window: int = 4, target: int = 2) -> tuple[MediaPlaylist, FakeClock]:
    clock = FakeClock()
    runs = (f"{n:x}" for n in itertools.count(0xA))
    return MediaPlaylist(target, window, run=lambda: next(runs), clock=clock), clock


def add(playlist: MediaPlaylist, clock: FakeClock, duration: float = 2.0) -> None:
    clock.now += duration
    playlist.add(b"x" * 188, duration, ended_at=T0 + clock.now, codec="avc1.64001f")


def test_the_window_slides_and_segments_that_left_stay_fetchable_a_while() -> None:
    playlist, clock = make()
    rules = LivePlaylist(window=4)
    for _ in range(10):
        add(playlist, clock)
        rules.check(playlist.render("1/"))
    assert rules.problems == []
    parsed = m3u8.loads(playlist.render("1/"))
    assert parsed.media_sequence == 6 and len(parsed.segments) == 4
    assert parsed.segments[0].uri == "1/a-6.ts"
    # Segment 5 left when 9 came: fetchable for its duration and the playlist's (2 + 8 s).
    assert playlist.find("a-5.ts") is not None
    clock.now += 10.1
    assert playlist.find("a-5.ts") is None and playlist.find("a-6.ts") is not None


def test_short_segments_are_never_removed_below_three_target_durations() -> None:
    playlist, clock = make(window=3, target=2)
    rules = LivePlaylist(window=100)
    for _ in range(20):
        add(playlist, clock, 0.5)
        rules.check(playlist.render(""))
    assert rules.problems == []
    assert playlist.duration == 6.0 and len(playlist.segments) == 12


def test_a_break_is_a_discontinuity_numbered_the_same_while_listed() -> None:
    playlist, clock = make()
    rules = LivePlaylist(window=4)
    texts = []
    for n in range(12):
        if n in (3, 5):
            playlist.break_run()
            clock.now += 30  # the channel was away
        add(playlist, clock)
        texts.append(playlist.render(""))
        rules.check(texts[-1])
    assert rules.problems == []
    assert texts[5].count("#EXT-X-DISCONTINUITY\n") == 2
    # Segment 5 is first in the ninth playlist: no tag on it, the header counts it.
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:2" in texts[8]
    assert "#EXT-X-DISCONTINUITY\n" not in texts[8]
    dates = [s.program_date_time for s in m3u8.loads(texts[5]).segments]
    assert dates == sorted(dates)


def test_program_date_times_follow_the_durations_within_a_run() -> None:
    playlist, clock = make()
    for duration in (2.0, 1.5, 2.0):
        clock.now += 0.3  # arrivals jitter; the dates do not
        add(playlist, clock, duration)
    starts = [s.start for s in playlist.segments]
    assert starts[1] - starts[0] == 2.0 and starts[2] - starts[1] == 1.5


def test_retire_lists_nothing_keeps_segments_a_while_and_starts_a_new_run() -> None:
    playlist, clock = make()
    for _ in range(3):
        add(playlist, clock)
    names = {s.name for s in playlist.segments}
    assert playlist.retire() == 8.0  # seconds until the last may go
    assert not playlist.segments and "a-0.ts" not in playlist.render("")
    # Fetchable for its duration plus the playlist's (2 + 6 s), then gone.
    clock.now += 7.9
    assert playlist.find("a-0.ts") is not None and len(playlist.held) == 3
    clock.now += 0.2
    assert playlist.find("a-0.ts") is None and not playlist.held
    add(playlist, clock)
    text = playlist.render("")
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 3 and parsed.discontinuity_sequence == 1
    assert "#EXT-X-DISCONTINUITY\n" not in text
    assert parsed.segments[0].uri == "b-3.ts" and parsed.segments[0].uri not in names


def test_checker_sees_broken_rules() -> None:
    rules = LivePlaylist(window=4)
    head = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    date = "#EXT-X-PROGRAM-DATE-TIME:2027-01-01T00:00:00.000Z\n"
    rules.check(head + "#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n" + date
                + "#EXTINF:2.000,\na-5.ts\n")  # fmt: skip
    rules.check(head + "#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:6\n" + date
                + "#EXTINF:2.600,\na-5.ts\n")  # fmt: skip
    found = "\n".join(rules.problems)
    assert "TARGETDURATION changed" in found
    assert "a-5.ts was" in found  # another sequence number for the same segment
    assert "removed while it lasts" in found


def test_variant_and_etag() -> None:
    text = Variant("../1.m3u8?session=s", 3_300_000, 1280, 720, 25, ("avc1.64001f", "mp4a.40.2"))
    parsed = m3u8.loads(text.render())
    stream = parsed.playlists[0].stream_info
    assert stream.bandwidth == 3_300_000 and stream.resolution == (1280, 720)
    assert stream.codecs == "avc1.64001f,mp4a.40.2" and stream.frame_rate == 25.0
    assert etag("a") == etag("a") != etag("b")


def test_the_rendered_text_is_made_again_exactly_when_the_listing_changes() -> None:
    playlist, clock = make()
    add(playlist, clock)
    body, tag = playlist.rendered("1/")
    assert (body, tag) == (playlist.render("1/"), etag(body))
    assert playlist.rendered("1/")[0] is body  # a reload with nothing new: the same text
    assert playlist.rendered("2/") == (playlist.render("2/"), etag(playlist.render("2/")))
    add(playlist, clock)
    assert playlist.rendered("1/") == (playlist.render("1/"), etag(playlist.render("1/")))
    assert playlist.rendered("1/")[1] != tag
    playlist.retire()
    assert playlist.rendered("1/")[0] == playlist.render("1/")
