"""188-byte MPEG-TS packet helpers: just enough to find clean start points. Pure code."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
NULL_PID = 0x1FFF
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xEA})


def pid(packet: bytes | bytearray | memoryview) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def payload_unit_start(packet: bytes | bytearray | memoryview) -> bool:
    return bool(packet[1] & 0x40)


def random_access(packet: bytes | bytearray | memoryview) -> bool:
    """The adaptation field's random_access_indicator: ffmpeg sets it on keyframes."""
    has_adaptation = packet[3] & 0x20
    return bool(has_adaptation and packet[4] > 0 and packet[5] & 0x40)


def payload(packet: bytes | bytearray | memoryview) -> bytes:
    control = (packet[3] >> 4) & 0x3
    if not control & 0x1:
        return b""
    start = 4
    if control & 0x2:
        start = 5 + packet[4]
    return bytes(packet[start:PACKET_SIZE]) if start < PACKET_SIZE else b""


def _section(packet: bytes | bytearray | memoryview) -> bytes:
    """The PSI section carried by a packet that starts one (pointer field skipped)."""
    data = payload(packet)
    if not data or not payload_unit_start(packet):
        return b""
    pointer = data[0]
    section = data[1 + pointer :]
    if len(section) < 3:
        return b""
    length = ((section[1] & 0x0F) << 8) | section[2]
    return section[: 3 + length]


def parse_pat(packet: bytes | bytearray | memoryview) -> list[int]:
    """PMT PIDs listed by a PAT packet (program 0, the network PID, left out)."""
    section = _section(packet)
    if len(section) < 12 or section[0] != 0x00:
        return []
    pids = []
    for offset in range(8, len(section) - 4, 4):
        program = (section[offset] << 8) | section[offset + 1]
        if program != 0:
            pids.append(((section[offset + 2] & 0x1F) << 8) | section[offset + 3])
    return pids


def parse_pmt(packet: bytes | bytearray | memoryview) -> dict[int, int]:
    """Elementary stream PID -> stream_type of a PMT packet."""
    section = _section(packet)
    if len(section) < 16 or section[0] != 0x02:
        return {}
    info_length = ((section[10] & 0x0F) << 8) | section[11]
    offset = 12 + info_length
    streams: dict[int, int] = {}
    while offset + 5 <= len(section) - 4:
        stream_type = section[offset]
        es_pid = ((section[offset + 1] & 0x1F) << 8) | section[offset + 2]
        es_info = ((section[offset + 3] & 0x0F) << 8) | section[offset + 4]
        streams[es_pid] = stream_type
        offset += 5 + es_info
    return streams


def av_pids(streams: dict[int, int]) -> tuple[int | None, int | None]:
    """The first video and the first other (audio) PID of a PMT's streams."""
    video = [p for p, t in streams.items() if t in VIDEO_STREAM_TYPES]
    audio = [p for p, t in streams.items() if t not in VIDEO_STREAM_TYPES]
    return (video[0] if video else None), (audio[0] if audio else None)


def packets(data: bytes | memoryview) -> Iterator[memoryview]:
    view = memoryview(data)
    for offset in range(0, len(view) - PACKET_SIZE + 1, PACKET_SIZE):
        yield view[offset : offset + PACKET_SIZE]


@dataclass
class Aligner:
    """Turns a byte stream into whole, sync-checked packets; skips garbage and counts it.

    Out of sync, a sync byte is trusted only when the next packet's sync byte follows
    188 bytes later (waiting for more data when that byte has not arrived); in sync,
    every packet that starts with a sync byte is taken. Each decision depends on the
    bytes alone, so any split of the stream into chunks gives the same packets.
    """

    _rest: bytes = b""
    skipped: int = 0
    _locked: bool = False

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data if self._rest else data
        out = bytearray()
        pos = 0
        while True:
            if self._locked:
                end = pos
                while end + PACKET_SIZE <= len(buf) and buf[end] == SYNC_BYTE:
                    end += PACKET_SIZE
                out += buf[pos:end]
                pos = end
                if pos == len(buf) or (pos + PACKET_SIZE > len(buf) and buf[pos] == SYNC_BYTE):
                    break  # the rest of a packet is still to come
                self._locked = False
            found, confirmed = self._sync(buf, pos)
            self.skipped += found - pos
            pos = found
            if not confirmed:
                break
            self._locked = True
        self._rest = bytes(buf[pos:])
        return bytes(out)

    def reset(self) -> None:
        self._rest = b""
        self._locked = False

    @staticmethod
    def _sync(buf: bytes, start: int) -> tuple[int, bool]:
        """The first offset from `start` that may begin a packet, and whether the next
        packet confirms it; (len(buf), False) when no offset can."""
        pos = buf.find(SYNC_BYTE, start)
        while pos != -1:
            following = pos + PACKET_SIZE
            if following >= len(buf):
                return pos, False
            if buf[following] == SYNC_BYTE:
                return pos, True
            pos = buf.find(SYNC_BYTE, pos + 1)
        return len(buf), False


@dataclass
class StartPoint:
    """Tracks the latest PAT/PMT and where the last keyframe began, packet by packet."""

    pat: bytes = b""
    pmt: bytes = b""
    pmt_pids: set[int] = field(default_factory=set)
    video_pid: int | None = None
    es_pids: set[int] = field(default_factory=set)
    # Bytes of packets on PIDs the tables announce: random bytes that happen to pass the
    # sync checks almost never land on one, so this tells real output from garbage.
    recognised: int = 0
    # The PAT and PMT that came last before the last keyframe: a viewer who starts at
    # that keyframe gets these first, so every table's continuity count goes on unbroken.
    keyframe_header: bytes = b""

    def scan(self, data: bytes) -> int | None:
        """Offset in `data` of the last packet that starts a video keyframe, if any."""
        keyframe: int | None = None
        offset = 0
        video_pid = self.video_pid
        for packet in packets(data):
            packet_pid = ((packet[1] & 0x1F) << 8) | packet[2]
            if packet_pid in self.es_pids or packet_pid == PAT_PID or packet_pid in self.pmt_pids:
                self.recognised += PACKET_SIZE
            if packet_pid == video_pid:
                if packet[1] & 0x40 and random_access(packet):
                    keyframe = offset
                    self.keyframe_header = self.pat + self.pmt
            elif packet_pid == PAT_PID:
                if payload_unit_start(packet):
                    pmt_pids = parse_pat(packet)
                    if pmt_pids:
                        self.pat = bytes(packet)
                        self.pmt_pids = set(pmt_pids)
            elif packet_pid in self.pmt_pids and payload_unit_start(packet):
                streams = parse_pmt(packet)
                if streams:
                    self.pmt = bytes(packet)
                    self.es_pids = set(streams)
                    video_pid = self.video_pid = av_pids(streams)[0]
            offset += PACKET_SIZE
        return keyframe
