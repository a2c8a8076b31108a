"""RFC 8216 rules for a live media playlist, checked over successive snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import m3u8

# Program date-times are written to the millisecond.
DATE_SLACK = timedelta(milliseconds=2)


@dataclass(frozen=True)
class Listed:
    """What the playlists say of one segment URI: it must never change."""

    sequence: int
    discontinuity: int  # the segment's discontinuity sequence number
    duration: float
    date: datetime


class LivePlaylist:
    """Feed it every snapshot of one live playlist; `problems` lists what broke a rule."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.listed: dict[str, Listed] = {}
        self.target: int | None = None
        self.media_sequence: int | None = None
        self.first_media_sequence: int | None = None
        self.snapshots = 0
        self.problems: list[str] = []

    def check(self, text: str) -> list[tuple[str, Listed]]:
        """The snapshot's segments, in order; problems are added to `problems`."""
        playlist = m3u8.loads(text)
        problem = self.problems.append
        self.snapshots += 1
        if playlist.version != 3:
            problem(f"EXT-X-VERSION {playlist.version}, want 3")
        if not playlist.is_independent_segments:
            problem("no EXT-X-INDEPENDENT-SEGMENTS")
        if playlist.is_endlist or playlist.playlist_type is not None:
            problem("a live playlist has no ENDLIST and no PLAYLIST-TYPE")
        target = playlist.target_duration
        if self.target is None:
            self.target = target
        elif target != self.target:
            problem(f"EXT-X-TARGETDURATION changed from {self.target} to {target}")
        media_sequence = playlist.media_sequence or 0
        if self.media_sequence is not None and media_sequence < self.media_sequence:
            problem(f"EXT-X-MEDIA-SEQUENCE went back to {media_sequence}")
        self.media_sequence = media_sequence
        if self.first_media_sequence is None:
            self.first_media_sequence = media_sequence
        segments = playlist.segments
        if not segments:
            problem("no segment listed")
            return []
        if len(segments) > self.window:
            problem(f"{len(segments)} segments listed, the window is {self.window}")
        total = sum(s.duration for s in segments)
        if media_sequence > self.first_media_sequence and total < 3 * target:
            problem(f"segments were removed while it lasts {total:.3f}s < 3 x {target}")
        discontinuity = playlist.discontinuity_sequence or 0
        out: list[tuple[str, Listed]] = []
        previous: Listed | None = None
        for index, segment in enumerate(segments):
            if segment.discontinuity:
                if index == 0:
                    problem("a discontinuity tag on the first segment: its number is ambiguous")
                discontinuity += 1
            if round(segment.duration) > target:
                problem(f"{segment.uri}: EXTINF {segment.duration} rounds above {target}")
            if segment.program_date_time is None:
                problem(f"{segment.uri}: no EXT-X-PROGRAM-DATE-TIME")
                continue
            listed = Listed(
                media_sequence + index, discontinuity, segment.duration, segment.program_date_time
            )
            known = self.listed.setdefault(segment.uri, listed)
            if known != listed:
                problem(f"{segment.uri} was {known}, now {listed}")
            if previous is not None:
                end = previous.date + timedelta(seconds=previous.duration)
                if listed.date < previous.date or (
                    listed.discontinuity == previous.discontinuity
                    and abs(listed.date - end) > DATE_SLACK
                ):
                    problem(f"{segment.uri}: program date-time {listed.date} after {end}")
            previous = listed
            out.append((segment.uri, listed))
        return out
