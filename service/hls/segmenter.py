"""Cuts a channel's MPEG-TS into HLS segments on keyframes. Pure code.

A segment starts on a video keyframe, with a PAT and a PMT first: ffmpeg sends the
tables right before each keyframe, so the cut goes before them and no packet is sent
twice; where they are missing, copies of the last ones go first. A segment ends where
the next one starts, so its duration is exact: the next segment's first video PTS minus
its own. A keyframe whose PTS does not follow the last frame's (the channel started a
new timeline) ends the run: what came before is cut off at its last frame and the next
segment is marked as a discontinuity.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    av_pids,
    packets,
    parse_pat,
    parse_pmt,
    random_access,
)

TICKS = 90_000
PTS_WRAP = 1 << 33
JUMP = 10 * TICKS  # a keyframe this far from the last frame is on another timeline
AVC_NAL_SPS = 7
FIRST_ES_PID = 0x20  # below: the tables' PIDs (ISO 13818-1, ETSI EN 300 468)


@dataclass(frozen=True, slots=True)
class Cut:
    """One finished segment: its bytes, first video PTS and duration in 90 kHz ticks."""

    data: bytes
    pts: int
    duration: int
    discontinuity: bool  # the first segment after a break in the timeline
    codec: str | None  # "avc1.PPCCLL" from the segment's SPS


def _pes_pts(packet: memoryview) -> int | None:
    """The PTS of the PES that starts in `packet`, if it has one."""
    start = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
    if start + 14 > PACKET_SIZE or bytes(packet[start : start + 3]) != b"\x00\x00\x01":
        return None
    if not packet[start + 7] & 0x80:
        return None
    b = packet[start + 9 : start + 14]
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def avc_codec(data: bytes) -> str | None:
    """RFC 6381 codec string ("avc1.64001f") of the first H.264 SPS in `data`."""
    at = data.find(b"\x00\x00\x01")
    while at != -1 and at + 6 < len(data):
        if data[at + 3] & 0x1F == AVC_NAL_SPS:
            profile, constraints, level = data[at + 4], data[at + 5], data[at + 6]
            return f"avc1.{profile:02x}{constraints:02x}{level:02x}"
        at = data.find(b"\x00\x00\x01", at + 3)
    return None


def _payload(packet: memoryview) -> bytes:
    start = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
    return bytes(packet[start:]) if packet[3] & 0x10 and start < PACKET_SIZE else b""


class Segmenter:
    """Feed it the channel's packets; it returns the segments they complete.

    A keyframe ends the segment when the next keyframe (at most `gop` ticks on) could
    take it past `longest` ticks: every segment stays within the target duration.
    """

    def __init__(self, longest: int, gop: int, frame: int) -> None:
        self.longest = longest
        self.gop = gop
        self.frame = frame
        self._buf = bytearray()  # the segment being built (before one: the last tables)
        self._start: int | None = None  # first video PTS of the segment being built
        self._last: int | None = None  # PTS of the last video frame seen
        self._tables_at: int | None = None  # where the tables since the last ES packet begin
        self._tables: set[int] = set()  # their PIDs
        self._pat = b""
        self._pmt = b""
        self._pmt_pids: set[int] = set()
        self._video: int | None = None
        self._es: set[int] = set()
        self._codec: str | None = None
        self._want_sps = False
        self._broken = False  # the next segment starts a new run

    def feed(self, data: bytes) -> list[Cut]:
        cuts: list[Cut] = []
        for packet in packets(data):
            cut = self._packet(packet)
            if cut is not None:
                cuts.append(cut)
        return cuts

    def restart(self) -> None:
        """The stream broke off (the reader fell behind or the channel stopped): drop
        the unfinished segment; the next one starts a new run."""
        self._buf.clear()
        self._start = self._last = self._tables_at = None
        self._tables.clear()
        self._broken = True

    def _packet(self, packet: memoryview) -> Cut | None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        starts = bool(packet[1] & 0x40)
        cut = None
        if pid == PAT_PID:
            if starts and (pmt_pids := parse_pat(packet)):
                self._pat, self._pmt_pids = bytes(packet), set(pmt_pids)
            self._table(pid)
        elif pid in self._pmt_pids:
            if starts and (streams := parse_pmt(packet)):
                self._pmt, self._es = bytes(packet), set(streams)
                self._video = av_pids(streams)[0]
            self._table(pid)
        elif pid < FIRST_ES_PID:
            self._table(pid)  # the SDT and the like travel with the tables
        else:
            if pid == self._video and starts and (pts := _pes_pts(packet)) is not None:
                if random_access(packet):
                    cut = self._keyframe(pts)
                elif self._start is not None:
                    self._last = pts
            self._tables_at = None
            if self._start is None:
                self._buf.clear()  # nothing before the first keyframe is kept
                return None
        self._buf += packet
        if self._want_sps and pid == self._video:
            codec = avc_codec(_payload(packet))
            if codec is not None:
                self._codec, self._want_sps = codec, False
        return cut

    def _table(self, pid: int) -> None:
        if self._tables_at is None:
            self._tables_at = len(self._buf)
            self._tables.clear()
        self._tables.add(pid)

    def _keyframe(self, pts: int) -> Cut | None:
        """A keyframe, before its packet is kept: the cut, if this keyframe makes one."""
        start, last = self._start, self._last
        cut = None
        if start is not None and last is not None:
            if not 0 < (pts - last) % PTS_WRAP <= JUMP:
                # A new timeline: the old one ends after its last frame.
                cut = self._finish((last + self.frame - start) % PTS_WRAP)
                self._broken = True
            elif (pts - start) % PTS_WRAP + self.gop > self.longest:
                cut = self._finish((pts - start) % PTS_WRAP)
            else:
                self._last = pts
                return None
        at = self._tables_at if self._tables_at is not None else len(self._buf)
        head = bytes(self._buf[at:])
        has_tables = PAT_PID in self._tables and bool(self._pmt_pids & self._tables)
        self._buf = bytearray(head if head and has_tables else self._pat + self._pmt + head)
        self._tables_at = None
        self._start = self._last = pts
        self._codec, self._want_sps = None, True
        return cut

    def _finish(self, duration: int) -> Cut:
        """The segment being built, up to the tables that precede the keyframe."""
        at = self._tables_at if self._tables_at is not None else len(self._buf)
        cut = Cut(bytes(self._buf[:at]), self._start or 0, duration, self._broken, self._codec)
        self._broken = False
        return cut
