"""A channel's live HLS media playlist (RFC 8216): segments in memory, in a window.

Segments leave the playlist from the front, one at a time, only while more than
`window` remain and the rest still lasts three target durations (RFC 8216 6.2.2); a
segment that left stays fetchable for its duration plus the playlist's, for clients
that read the playlist just before. EXT-X-MEDIA-SEQUENCE is the first segment's
sequence number and EXT-X-DISCONTINUITY-SEQUENCE its discontinuity number, both kept
by the segment itself, so every segment keeps both numbers for as long as it is listed.
A discontinuity tag is written only between two listed segments (never on the first,
whose number the header gives): the header says the same either way.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from service.clock import Clock

VERSION = 3  # EXTINF with decimals (RFC 8216 section 7)


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    discontinuity: int  # the discontinuity sequence number
    run: str  # names the run of segments the media sequence numbers belong to
    data: bytes
    duration: float
    start: float  # Unix time of the first frame: EXT-X-PROGRAM-DATE-TIME
    codec: str | None

    @property
    def name(self) -> str:
        return f"{self.run}-{self.sequence}.ts"

    @property
    def bits_per_second(self) -> float:
        return len(self.data) * 8 / self.duration if self.duration > 0 else 0.0


class MediaPlaylist:
    def __init__(
        self, target: int, window: int, *, run: Callable[[], str], clock: Clock = time.monotonic
    ) -> None:
        self.target = target
        self.window = window
        self.clock = clock
        self._new_run = run
        self.run = run()
        self.segments: deque[Segment] = deque()
        self.removed: deque[tuple[float, Segment]] = deque()  # (fetchable until, segment)
        self.next_sequence = 0
        self.next_discontinuity = 0
        self._broken = False
        self._end: float | None = None  # Unix time the last segment ends
        # The text players reload (about once per target duration each), made once per
        # change of the listed segments: (uri prefix, body, ETag).
        self._rendered: tuple[str, str, str] | None = None

    def add(self, data: bytes, duration: float, *, ended_at: float, codec: str | None) -> Segment:
        """A finished segment that ended (its last frame went out) at Unix time `ended_at`."""
        start = ended_at - duration
        if self._broken:
            self.next_discontinuity += 1
            self._broken = False
            if self._end is not None:
                start = max(start, self._end)  # program date-times never go back
        elif self._end is not None:
            start = self._end  # a segment follows the last one: so does its date-time
        segment = Segment(
            self.next_sequence, self.next_discontinuity, self.run, data, duration, start, codec
        )
        self.next_sequence += 1
        self._end = start + duration
        self.segments.append(segment)
        self._rendered = None
        self._trim()
        return segment

    def break_run(self) -> None:
        """The next segment does not follow the last one: mark it a discontinuity."""
        if self.next_sequence > 0:
            self._broken = True

    def retire(self) -> float:
        """Nobody watches: list no segment; each stays fetchable for its duration plus the
        playlist's (a player that read the playlist just before may still ask for it), and
        the next ones start a new run. Returns the seconds until the last may go."""
        now = self.clock()
        total = self.duration
        while self.segments:
            gone = self.segments.popleft()
            self.removed.append((now + gone.duration + total, gone))
        self.run = self._new_run()
        self._broken = self.next_sequence > 0
        self._rendered = None
        return max((until for until, _ in self.removed), default=now) - now

    def find(self, name: str) -> Segment | None:
        self.expire()
        for segment in reversed(self.segments):
            if segment.name == name:
                return segment
        for _, segment in self.removed:
            if segment.name == name:
                return segment
        return None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def held(self) -> list[Segment]:
        """Every segment kept in memory: listed, and left but still fetchable."""
        self.expire()
        return [*self.segments, *(segment for _, segment in self.removed)]

    def peak_bits_per_second(self) -> float:
        return max((s.bits_per_second for s in self.segments), default=0.0)

    def rendered(self, uri_prefix: str) -> tuple[str, str]:
        """The playlist's text and its ETag, made again only after the listing changed."""
        made = self._rendered
        if made is None or made[0] != uri_prefix:
            body = self.render(uri_prefix)
            made = self._rendered = (uri_prefix, body, etag(body))
        return made[1], made[2]

    def render(self, uri_prefix: str) -> str:
        segments = list(self.segments)
        first = segments[0] if segments else None
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{self.target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first.sequence if first else self.next_sequence}",
            "#EXT-X-DISCONTINUITY-SEQUENCE:"
            f"{first.discontinuity if first else self.next_discontinuity}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        previous: Segment | None = None
        for segment in segments:
            if previous is not None and segment.discontinuity != previous.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(segment.start)}")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(f"{uri_prefix}{segment.name}")
            previous = segment
        return "\n".join(lines) + "\n"

    def _trim(self) -> None:
        segments = self.segments
        total = self.duration
        now = self.clock()
        while len(segments) > self.window and total - segments[0].duration >= 3 * self.target:
            gone = segments.popleft()
            total -= gone.duration
            self.removed.append((now + gone.duration + total, gone))
        self.expire()

    def expire(self) -> None:
        """Forget the segments that left the playlist and that nobody may ask for now."""
        now = self.clock()
        while self.removed and self.removed[0][0] <= now:
            self.removed.popleft()


def _date_time(unix: float) -> str:
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def etag(text: str) -> str:
    return '"' + hashlib.blake2b(text.encode(), digest_size=12).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class Variant:
    """The one rendition a channel has, as a multivariant playlist describes it."""

    uri: str
    bandwidth: int  # peak bits per second
    width: int
    height: int
    fps: float
    codecs: tuple[str, ...]

    def render(self) -> str:
        attributes = ",".join(
            [
                f"BANDWIDTH={self.bandwidth}",
                f"RESOLUTION={self.width}x{self.height}",
                f'CODECS="{",".join(self.codecs)}"',
                f"FRAME-RATE={self.fps:.3f}",
            ]
        )
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            f"#EXT-X-STREAM-INF:{attributes}",
            self.uri,
        ]
        return "\n".join(lines) + "\n"
