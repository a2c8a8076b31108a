"""The harness's HLS player fetches what a live player would: forward from the newest."""

from __future__ import annotations

from tests.harness.hlsplayer import new_segments

LISTED = ["1/a-4.ts", "1/a-5.ts", "1/a-6.ts"]


def test_a_player_starts_at_the_newest_segment() -> None:
    assert new_segments(LISTED, None) == ["1/a-6.ts"]


def test_a_player_fetches_only_what_follows_its_last_segment() -> None:
    assert new_segments(LISTED, "1/a-4.ts") == ["1/a-5.ts", "1/a-6.ts"]
    assert new_segments(LISTED, "1/a-6.ts") == []


def test_a_player_that_fell_behind_the_window_fetches_all_of_it() -> None:
    assert new_segments(LISTED, "1/a-2.ts") == LISTED
