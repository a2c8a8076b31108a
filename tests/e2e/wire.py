"""MPEG-TS as a viewer received it: continuity counters, timestamps, PCR, service names.

Pure functions over captured bytes (no HTTP), so a test can say what is wrong with a
stream in words instead of only "ffmpeg could decode it".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from service.mpegts import (
    NULL_PID,
    PAT_PID,
    VIDEO_STREAM_TYPES,
    packets,
    parse_pat,
    parse_pmt,
    payload,
    payload_unit_start,
    pid,
)

SDT_PID = 0x11
SDT_ACTUAL = 0x42
SERVICE_DESCRIPTOR = 0x48
PTS_HZ = 90_000
PCR_HZ = 27_000_000
PTS_WRAP = 1 << 33
PCR_WRAP = PTS_WRAP * 300

AAC_ADTS = 0x0F
MPEG_AUDIO = frozenset({0x03, 0x04})
AC3 = 0x81
AUDIO_STREAM_TYPES = frozenset({AAC_ADTS, AC3, *MPEG_AUDIO})

# How much of a video PES is kept: its header (19 bytes with PTS and DTS) and a margin.
VIDEO_HEADER_BYTES = 64


@dataclass
class WireReport:
    packets: int
    cc_errors: list[str] = field(default_factory=list)
    video_jumps: list[str] = field(default_factory=list)
    audio_jumps: list[str] = field(default_factory=list)
    pcr_problems: list[str] = field(default_factory=list)
    video_frames: int = 0
    audio_frames: int = 0
    first_video_pts: int | None = None
    first_audio_pts: int | None = None
    service_name: str | None = None
    provider: str | None = None
    # From the first audio frame header: what the audio steps were checked against.
    audio_sample_rate: int | None = None

    def problems(self) -> list[str]:
        return [
            *(f"continuity: {text}" for text in self.cc_errors),
            *(f"video: {text}" for text in self.video_jumps),
            *(f"audio: {text}" for text in self.audio_jumps),
            *(f"pcr: {text}" for text in self.pcr_problems),
        ]


def worst_gap(arrivals: list[tuple[float, int]]) -> float:
    """The longest wait between consecutive chunks that carried data."""
    times = [at for at, size in arrivals if size > 0]
    return max((later - earlier for earlier, later in pairwise(times)), default=0.0)


def check_capture(data: bytes, *, fps: int, max_pcr_gap: float = 0.1) -> WireReport:
    """Everything wrong with a capture that starts on a packet boundary.

    A trailing partial packet is ignored, and so is the unfinished PES it belongs to
    beyond the frames it holds whole. Video steps are checked in decode order (the DTS
    when a PES has one: B-frames reorder PTS), audio steps against the frames the
    previous PES carried (AAC ADTS, MPEG audio and AC-3 frame headers are read).
    """
    checker = _Checker(fps=fps, max_pcr_gap=max_pcr_gap)
    for index, packet in enumerate(packets(data)):
        checker.feed(index, packet)
    return checker.finish()


@dataclass(frozen=True)
class _Frames:
    """Whole audio frames at the start of a PES payload."""

    count: int
    ticks: float  # their duration in 90 kHz ticks
    rate: int | None
    whole: bool  # nothing but whole frames


# (frame length in bytes, samples, sample rate) of the frame at an offset, if one starts there
_FrameParser = Callable[[bytes, int], tuple[int, int, int] | None]

_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _adts_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    if pos + 7 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
        return None
    rate_index = (data[pos + 2] >> 2) & 0x0F
    length = ((data[pos + 3] & 0x03) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
    if rate_index >= len(_ADTS_RATES) or length < 7:
        return None
    blocks = (data[pos + 6] & 0x03) + 1
    return length, 1024 * blocks, _ADTS_RATES[rate_index]


_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MPEG_KBPS = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def _mpeg_audio_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (data[pos + 1] >> 3) & 0x03, (data[pos + 1] >> 1) & 0x03
    kbps_index, rate_index = data[pos + 2] >> 4, (data[pos + 2] >> 2) & 0x03
    if version == 1 or layer_bits == 0 or kbps_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or a free-format bitrate that has no fixed length
    v1, layer = version == 3, 4 - layer_bits
    rate = _MPEG_RATES[version][rate_index]
    bits = _MPEG_KBPS[(v1, layer)][kbps_index] * 1000
    padding = (data[pos + 2] >> 1) & 0x01
    if layer == 1:
        return (12 * bits // rate + padding) * 4, 384, rate
    per_bit = 144 if layer == 2 or v1 else 72
    return per_bit * bits // rate + padding, 1152 if per_bit == 144 else 576, rate


_AC3_RATES = (48000, 44100, 32000)
_AC3_KBPS = (
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640,
)  # fmt: skip


def _ac3_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    if pos + 6 > len(data) or data[pos] != 0x0B or data[pos + 1] != 0x77:
        return None
    rate_code, size_code, bsid = data[pos + 4] >> 6, data[pos + 4] & 0x3F, data[pos + 5] >> 3
    if rate_code == 3 or size_code >= 2 * len(_AC3_KBPS) or bsid > 10:  # bsid > 10: E-AC-3
        return None
    kbps = _AC3_KBPS[size_code >> 1]
    rate = _AC3_RATES[rate_code]
    words = (2 * kbps, kbps * 96_000 // 44_100 + (size_code & 1), 3 * kbps)[rate_code]
    return 2 * words, 1536, rate


_FRAME_PARSERS: dict[int, _FrameParser] = {
    AAC_ADTS: _adts_frame,
    0x03: _mpeg_audio_frame,
    0x04: _mpeg_audio_frame,
    AC3: _ac3_frame,
}


def _count_frames(data: bytes, parse: _FrameParser) -> _Frames:
    pos = count = 0
    ticks = 0.0
    rate: int | None = None
    while pos < len(data):
        frame = parse(data, pos)
        if frame is None or pos + frame[0] > len(data):
            break
        length, samples, rate = frame
        count += 1
        ticks += samples * PTS_HZ / rate
        pos += length
    return _Frames(count, ticks, rate, whole=pos == len(data))


def _timestamp(data: bytes | bytearray, pos: int) -> int:
    return (
        ((data[pos] >> 1) & 0x07) << 30
        | data[pos + 1] << 22
        | (data[pos + 2] >> 1) << 15
        | data[pos + 3] << 7
        | data[pos + 4] >> 1
    )


def _unwrap(raw: int, last: int | None, wrap: int) -> int:
    """`raw` (a counter modulo `wrap`) placed next to the previous unwrapped value."""
    if last is None:
        return raw
    step = (raw - last) % wrap
    if step >= wrap // 2:
        step -= wrap
    return last + step


def _pcr(packet: memoryview) -> int | None:
    if not packet[3] & 0x20 or packet[4] < 7 or not packet[5] & 0x10:
        return None
    base = packet[6] << 25 | packet[7] << 17 | packet[8] << 9 | packet[9] << 1 | packet[10] >> 7
    return base * 300 + ((packet[10] & 0x01) << 8 | packet[11])


def _section(packet: memoryview) -> bytes:
    """The PSI section starting in a packet, as far as that packet holds it."""
    data = payload(packet)
    if not data:
        return b""
    section = data[1 + data[0] :]
    if len(section) < 3:
        return b""
    return section[: 3 + (((section[1] & 0x0F) << 8) | section[2])]


def _dvb_text(raw: bytes) -> str:
    """A DVB string (EN 300 468 annex A): a leading byte below 0x20 names the charset."""
    if raw[:1] == b"\x15":
        return raw[1:].decode("utf-8", errors="replace")
    if raw and raw[0] < 0x20:
        raw = raw[3:] if raw[0] == 0x10 else raw[1:]
    return raw.decode("latin-1")  # close enough to the default (ISO 6937) for names


def _service_names(packet: memoryview) -> tuple[str, str] | None:
    """(provider, service name) of the first service descriptor in an SDT packet."""
    section = _section(packet)
    if len(section) < 15 or section[0] != SDT_ACTUAL:
        return None
    end = len(section) - 4  # the CRC
    pos = 11
    while pos + 5 <= end:
        stop = min(end, pos + 5 + (((section[pos + 3] & 0x0F) << 8) | section[pos + 4]))
        at = pos + 5
        while at + 2 <= stop:
            tag, length = section[at], section[at + 1]
            body = section[at + 2 : at + 2 + length]
            if tag == SERVICE_DESCRIPTOR and len(body) >= 3:
                provider_end = 2 + body[1]
                name_length = body[provider_end] if provider_end < len(body) else 0
                name = body[provider_end + 1 : provider_end + 1 + name_length]
                return _dvb_text(body[2:provider_end]), _dvb_text(name)
            at += 2 + length
        pos = stop
    return None


@dataclass
class _Track:
    """One elementary stream: the PES being gathered and the last timestamp checked."""

    video: bool
    parse: _FrameParser | None
    problems: list[str]
    pes: bytearray | None = None
    pes_packet: int = 0
    last: int | None = None  # unwrapped DTS (video) or PTS (audio) of the previous PES
    step: float = 0.0  # ticks expected from `last` to the next PES


class _Checker:
    def __init__(self, *, fps: int, max_pcr_gap: float) -> None:
        self.report = WireReport(packets=0)
        self.frame_ticks = PTS_HZ / fps
        self.max_pcr_gap = round(max_pcr_gap * PCR_HZ)
        self.counters: dict[int, int] = {}
        self.pcrs: dict[int, int] = {}
        self.pmt_pids: set[int] = set()
        self.streams: dict[int, int] = {}
        self.tracks: dict[int, _Track] = {}

    def feed(self, index: int, packet: memoryview) -> None:
        self.report.packets += 1
        if packet[0] != 0x47:
            self.report.cc_errors.append(f"packet {index}: no sync byte (0x{packet[0]:02x})")
            return
        packet_pid = pid(packet)
        if packet_pid == NULL_PID:
            return
        self._continuity(index, packet_pid, packet)
        pcr = _pcr(packet)
        if pcr is not None:
            self._pcr(index, packet_pid, pcr)
        track = self.tracks.get(packet_pid)
        if track is not None:
            self._elementary(index, packet, track)
        elif not payload_unit_start(packet):
            return
        elif packet_pid == PAT_PID:
            self.pmt_pids = set(parse_pat(packet)) or self.pmt_pids
        elif packet_pid in self.pmt_pids:
            self._pmt(parse_pmt(packet))
        elif packet_pid == SDT_PID:
            names = _service_names(packet)
            if names is not None:
                self.report.provider, self.report.service_name = names

    def finish(self) -> WireReport:
        for track in self.tracks.values():
            self._close_pes(track, complete=False)
        report = self.report
        if not self.pcrs and (report.video_frames or report.audio_frames):
            report.pcr_problems.append("no PCR at all")
        return report

    def _continuity(self, index: int, packet_pid: int, packet: memoryview) -> None:
        counter = packet[3] & 0x0F
        control = (packet[3] >> 4) & 0x03
        last = self.counters.get(packet_pid)
        self.counters[packet_pid] = counter
        where = f"pid 0x{packet_pid:x} packet {index}"
        if control & 0x02 and packet[4] and packet[5] & 0x80:
            self.report.cc_errors.append(f"{where}: discontinuity flagged")
        elif last is None:
            return  # a viewer may join anywhere
        elif not control & 0x01:
            if counter != last:  # no payload: the counter must not move
                self.report.cc_errors.append(f"{where}: expected {last}, got {counter}")
        elif counter == last:
            self.report.cc_errors.append(f"{where}: duplicate packet (cc {counter})")
        elif counter != (last + 1) & 0x0F:
            self.report.cc_errors.append(f"{where}: expected {(last + 1) & 0x0F}, got {counter}")

    def _pcr(self, index: int, packet_pid: int, raw: int) -> None:
        last = self.pcrs.get(packet_pid)
        pcr = self.pcrs[packet_pid] = _unwrap(raw, last, PCR_WRAP)
        if last is None:
            return
        where = f"pid 0x{packet_pid:x} packet {index}"
        if pcr < last:
            self.report.pcr_problems.append(f"{where}: PCR went back {(last - pcr) / PCR_HZ:.3f} s")
        elif pcr - last > self.max_pcr_gap:
            self.report.pcr_problems.append(f"{where}: PCR gap of {(pcr - last) / PCR_HZ:.3f} s")

    def _pmt(self, streams: dict[int, int]) -> None:
        if not streams or streams == self.streams:
            return
        self.streams = streams
        video = next((p for p, kind in streams.items() if kind in VIDEO_STREAM_TYPES), None)
        audio = next((p for p, kind in streams.items() if kind in AUDIO_STREAM_TYPES), None)
        tracks: dict[int, _Track] = {}
        if video is not None:
            tracks[video] = self.tracks.get(video) or _Track(True, None, self.report.video_jumps)
        if audio is not None:
            parse = _FRAME_PARSERS[streams[audio]]
            tracks[audio] = self.tracks.get(audio) or _Track(False, parse, self.report.audio_jumps)
        self.tracks = tracks

    def _elementary(self, index: int, packet: memoryview, track: _Track) -> None:
        if payload_unit_start(packet):
            self._close_pes(track, complete=True)
            track.pes = bytearray(payload(packet))
            track.pes_packet = index
        elif track.pes is not None and (not track.video or len(track.pes) < VIDEO_HEADER_BYTES):
            track.pes += payload(packet)

    def _close_pes(self, track: _Track, *, complete: bool) -> None:
        pes, track.pes = track.pes, None
        if pes is None:
            return
        where = f"packet {track.pes_packet}"
        if len(pes) < 9:
            if complete:
                track.problems.append(f"{where}: PES of {len(pes)} bytes")
            return
        if pes[:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
            track.problems.append(f"{where}: PES without a start code or PTS")
            return
        if len(pes) < 14 or (pes[7] & 0x40 and len(pes) < 19):
            if complete:
                track.problems.append(f"{where}: PES header cut short")
            return
        pts = _timestamp(pes, 9)
        stamp = _timestamp(pes, 14) if pes[7] & 0x40 else pts
        if track.video:
            self.report.video_frames += 1
            if self.report.first_video_pts is None:
                self.report.first_video_pts = pts
            self._step(track, where, stamp, self.frame_ticks)
            return
        assert track.parse is not None
        frames = _count_frames(bytes(pes[9 + pes[8] :]), track.parse)
        if complete and not frames.whole:
            track.problems.append(f"{where}: PES payload is not whole audio frames")
        self.report.audio_frames += frames.count
        if self.report.first_audio_pts is None:
            self.report.first_audio_pts = pts
        if self.report.audio_sample_rate is None:
            self.report.audio_sample_rate = frames.rate
        self._step(track, where, stamp, frames.ticks)

    @staticmethod
    def _step(track: _Track, where: str, raw: int, next_step: float) -> None:
        stamp = _unwrap(raw, track.last, PTS_WRAP)
        if track.last is not None and abs(stamp - track.last - track.step) > 1:
            track.problems.append(
                f"{where}: step {stamp - track.last:+d} ticks, expected {track.step:.0f}"
            )
        track.last, track.step = stamp, next_step
