"""One continuous MPEG-TS timeline out of many producer processes. Pure code.

Every process a channel runs (an item, the rest of an item after a crash, a piece of a
long item) writes its own MPEG-TS: timestamps from its own zero, continuity counters
from 0. The splicer restamps each source onto the channel's one timeline so that a
viewer sees a single stream:

- video PTS/DTS and PCR move by one offset per source, chosen so the source's first
  frame comes exactly one frame after the last one out;
- audio moves by the same offset (the source's own A/V sync is kept), snapped by less
  than an audio frame onto the audio timeline, and audio frames that would overlap
  what is already out (the encoder's priming frame) are dropped;
- continuity counters are carried on per PID; the SDT is the splicer's own (service
  name = channel name, provider `exstream`);
- only whole PES units leave a source: a source cut short (crash, kill) loses its last
  incomplete frame instead of sending half of it;
- a jump inside one source (a looping recording, a broken file) is re-anchored the
  same way, so timestamps never go backwards or jump;
- when the producer has nothing ready, `fill` synthesises frames of a pre-encoded slate
  clip on the same timeline; a source interrupted by a fill resumes at its next
  keyframe.

The output comes in chunks that each end with a PCR and carry it as their release
clock (90 kHz ticks): the pacer sends each when the wall clock reaches it, so a chunk
holds at most one PCR interval (ffmpeg writes one every other frame or so).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from service.mpegts import (
    NULL_PID,
    PACKET_SIZE,
    PAT_PID,
    Aligner,
    av_pids,
    parse_pat,
    parse_pmt,
    random_access,
)

SDT_PID = 0x11
TICKS = 90_000  # PTS ticks per second
AUDIO_FRAME = 1920  # one AAC frame, 1024 samples at 48 kHz, in PTS ticks
PTS_WRAP = 1 << 33
REANCHOR = TICKS  # a step this far from the expected one is a jump to re-anchor
START = 10 * TICKS  # the timeline's first video PTS


def read_ts(data: bytes | bytearray, offset: int) -> int:
    """A 33-bit PTS/DTS from the 5 bytes at `offset`."""
    b = data
    return (
        ((b[offset] >> 1) & 0x07) << 30
        | b[offset + 1] << 22
        | (b[offset + 2] >> 1) << 15
        | b[offset + 3] << 7
        | b[offset + 4] >> 1
    )


def write_ts(data: bytearray, offset: int, value: int) -> None:
    value %= PTS_WRAP
    marker = data[offset] & 0xF0
    data[offset] = marker | ((value >> 29) & 0x0E) | 0x01
    data[offset + 1] = (value >> 22) & 0xFF
    data[offset + 2] = ((value >> 14) & 0xFE) | 0x01
    data[offset + 3] = (value >> 7) & 0xFF
    data[offset + 4] = ((value << 1) & 0xFE) | 0x01


def _payload_start(packet: bytearray) -> int:
    if packet[3] & 0x20:
        return 5 + packet[4]
    return 4


def _pcr_offset(packet: bytearray) -> int | None:
    if packet[3] & 0x20 and packet[4] >= 7 and packet[5] & 0x10:
        return 6
    return None


def read_pcr(packet: bytearray, offset: int) -> int:
    b = packet
    base = b[offset] << 25 | b[offset + 1] << 17 | b[offset + 2] << 9 | b[offset + 3] << 1
    base |= b[offset + 4] >> 7
    ext = (b[offset + 4] & 0x01) << 8 | b[offset + 5]
    return base * 300 + ext


def write_pcr(packet: bytearray, offset: int, value: int) -> None:
    base, ext = divmod(value % (PTS_WRAP * 300), 300)
    packet[offset] = (base >> 25) & 0xFF
    packet[offset + 1] = (base >> 17) & 0xFF
    packet[offset + 2] = (base >> 9) & 0xFF
    packet[offset + 3] = (base >> 1) & 0xFF
    packet[offset + 4] = ((base & 0x01) << 7) | 0x7E | ((ext >> 8) & 0x01)
    packet[offset + 5] = ext & 0xFF


def _clip_utf8(text: str, size: int) -> bytes:
    """At most `size` bytes of UTF-8, never half a character."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def sdt_packet(service_name: str, provider: str, *, service_id: int = 1) -> bytearray:
    """One SDT packet (PID 0x11) naming the service: what players show as the channel."""
    name = _clip_utf8(service_name, 80)
    prov = _clip_utf8(provider, 40)
    # DVB strings in UTF-8 start with the 0x15 selector.
    name, prov = b"\x15" + name, b"\x15" + prov
    descriptor = bytes([0x48, 3 + len(prov) + len(name), 0x01, len(prov)]) + prov
    descriptor += bytes([len(name)]) + name
    service = service_id.to_bytes(2, "big") + b"\xfc"  # no EIT flags
    service += (0x8000 | len(descriptor)).to_bytes(2, "big") + descriptor  # running
    body = b"\x00\x01" + b"\xc1\x00\x00" + b"\x00\x01" + b"\xff" + service
    length = len(body) + 4
    section = bytes([0x42, 0xF0 | (length >> 8), length & 0xFF]) + body
    section += _crc32_mpeg(section).to_bytes(4, "big")
    packet = bytearray(b"\x47\x40\x11\x10\x00") + section
    packet += b"\xff" * (PACKET_SIZE - len(packet))
    return packet


@dataclass
class _Unit:
    """The packets of one PES (video or audio frame) or of one table, in arrival order."""

    pid: int
    packets: list[bytearray]
    pts: int | None = None  # on the timeline, once restamped
    complete: bool = False
    keyframe: bool = False
    frames: int = 1  # audio frames in the PES


@dataclass
class _Source:
    aligner: Aligner = field(default_factory=Aligner)
    video_pid: int | None = None
    audio_pid: int | None = None
    pmt_pids: set[int] = field(default_factory=set)
    v_off: int | None = None  # None: waiting for a keyframe to anchor on
    a_off: int | None = None
    v_expect: int | None = None  # source-side next video PTS, to see jumps
    a_expect: int | None = None
    pending: list[_Unit] = field(default_factory=list)
    open: dict[int, _Unit] = field(default_factory=dict)  # pid -> the PES being received
    dropping: set[int] = field(default_factory=set)  # pids whose current PES is dropped
    frames: int = 0  # video frames sent from this source
    v_end: int | None = None  # timeline PTS after the last frame taken from this source
    a_end: int | None = None
    first_pts: int | None = None  # timeline PTS of this source's first frame


@dataclass(frozen=True)
class Chunk:
    data: bytes
    clock: int  # 90 kHz: send when the channel's clock reaches this


class Splicer:
    def __init__(self, fps: int, service_name: str, provider: str = "exstream") -> None:
        self.frame = round(TICKS / fps)
        self.sdt = sdt_packet(service_name, provider)
        self.v_next = START  # timeline PTS of the next video frame
        self.a_next: int | None = None  # ... of the next audio frame
        self.pcr = (START - TICKS) * 300  # last PCR out, 27 MHz
        self.cc: dict[int, int] = {}
        self.frames = 0  # video frames out, in all
        self._source: _Source | None = None
        self._slate: _Slate | None = None
        self._out = bytearray()  # emitted since the last PCR
        self._chunks: list[Chunk] = []

    # --- the timeline ------------------------------------------------------------------

    @property
    def clock(self) -> int:
        return self.pcr // 300

    def seconds(self, pts: int) -> float:
        """Seconds of the timeline from its start to `pts`."""
        return (pts - START) / TICKS

    @property
    def skew(self) -> int:
        """Audio minus video at the timeline's end, in ticks (0 when in step)."""
        return 0 if self.a_next is None else self.a_next - self.v_next

    # --- sources -----------------------------------------------------------------------

    def begin(self) -> None:
        """A new source (a new process's output) follows; the last one must have ended."""
        self._source = _Source()

    def feed(self, data: bytes) -> list[Chunk]:
        """Restamp a source's bytes; returns the whole units now ready to go out."""
        source = self._source
        if source is None:
            return []
        for packet in _split(source.aligner.feed(data)):
            self._take(source, packet)
        return self._flush(source)

    def end(self) -> list[Chunk]:
        """The source's output ended (EOF): its last units are whole; send them."""
        source, self._source = self._source, None
        if source is None:
            return []
        for pid in list(source.open):
            self._complete(source, pid)
        return self._flush(source)

    def cut(self) -> None:
        """The source is abandoned (killed, stalled): drop what is not whole."""
        source, self._source = self._source, None
        if source is not None:
            source.open.clear()

    @property
    def source_frames(self) -> int:
        source = self._source
        return source.frames if source is not None else 0

    def _take(self, source: _Source, packet: bytearray) -> None:
        packet_pid = ((packet[1] & 0x1F) << 8) | packet[2]
        pusi = bool(packet[1] & 0x40)
        if packet_pid in (NULL_PID, SDT_PID):
            return
        if packet_pid == PAT_PID:
            if pusi and (pmt := parse_pat(packet)):
                source.pmt_pids = set(pmt)
                source.pending.append(_Unit(PAT_PID, [packet], complete=True))
            return
        if packet_pid in source.pmt_pids:
            if pusi and (streams := parse_pmt(packet)):
                source.video_pid, source.audio_pid = av_pids(streams)
                source.pending.append(_Unit(packet_pid, [packet], complete=True))
            return
        if packet_pid == source.video_pid:
            self._video(source, packet, pusi)
        elif packet_pid == source.audio_pid:
            self._audio(source, packet, pusi)

    def _start_unit(self, source: _Source, pid: int, packet: bytearray) -> _Unit:
        self._complete(source, pid)
        unit = _Unit(pid, [packet])
        source.open[pid] = unit
        source.pending.append(unit)
        source.dropping.discard(pid)
        return unit

    def _complete(self, source: _Source, pid: int) -> None:
        unit = source.open.pop(pid, None)
        if unit is None:
            return
        if pid == source.audio_pid:
            self._finish_audio(source, unit)
        unit.complete = True

    def _video(self, source: _Source, packet: bytearray, pusi: bool) -> None:
        pid = source.video_pid
        assert pid is not None
        if not pusi:
            if pid not in source.dropping and pid in source.open:
                self._restamp_pcr(source, packet)
                source.open[pid].packets.append(packet)
            return
        header = _payload_start(packet)
        pts = _pes_pts(packet, header)
        if pts is None:
            self._complete(source, pid)
            source.dropping.add(pid)
            return
        keyframe = random_access(packet)
        expected = source.v_expect
        jumped = expected is not None and _jumped(pts - expected, self.frame)
        if source.v_off is None or jumped:
            if not keyframe:
                # Nothing to anchor on yet: wait for a frame a decoder can start from.
                self._complete(source, pid)
                source.dropping.add(pid)
                return
            target = source.v_end if source.v_end is not None else self.v_next
            source.v_off = target - pts
        source.v_expect = pts + self.frame
        unit = self._start_unit(source, pid, packet)
        unit.keyframe = keyframe
        unit.pts = pts + source.v_off
        source.v_end = unit.pts + self.frame
        _shift_pes(packet, header, source.v_off)
        self._restamp_pcr(source, packet)
        if source.first_pts is None:
            source.first_pts = unit.pts

    def _audio(self, source: _Source, packet: bytearray, pusi: bool) -> None:
        pid = source.audio_pid
        assert pid is not None
        if not pusi:
            if pid not in source.dropping and pid in source.open:
                source.open[pid].packets.append(packet)
            return
        if source.v_off is None:
            self._complete(source, pid)
            source.dropping.add(pid)  # no video anchor yet: nothing to be in step with
            return
        self._start_unit(source, pid, packet)

    def _finish_audio(self, source: _Source, unit: _Unit) -> None:
        """Place a whole audio PES on the timeline: snap, trim or drop it (see the top)."""
        first = unit.packets[0]
        header = _payload_start(first)
        raw = _pes_pts(first, header)
        frames = _adts_frames(unit.packets, header)
        if raw is None or not frames or source.v_off is None:
            unit.packets = []
            return
        expect = source.a_expect
        if source.a_off is not None and expect is not None and _jumped(raw - expect, AUDIO_FRAME):
            source.a_off = None  # a jump inside the source: place it afresh
        skip = 0
        if source.a_off is None:
            if source.a_end is not None:
                target = source.a_end
            elif self.a_next is not None:
                target = self.a_next
            else:
                target = source.first_pts if source.first_pts is not None else self.v_next
            candidate = raw + source.v_off
            if candidate > target + AUDIO_FRAME:
                # Audio starts later than what is out (after a cut): silence up to it.
                target = self._silence_before(source, unit, target, candidate)
            if candidate > target + AUDIO_FRAME:
                source.a_off = source.v_off  # a real gap in the source: keep its sync
            else:
                # Frames that would overlap what is out already (the priming frame).
                while (
                    skip < len(frames)
                    and candidate + skip * AUDIO_FRAME < target - AUDIO_FRAME // 2
                ):
                    skip += 1
                if skip == len(frames):
                    unit.packets = []
                    return
                source.a_off = source.v_off + target - (candidate + skip * AUDIO_FRAME)
        source.a_expect = raw + len(frames) * AUDIO_FRAME
        pts = raw + skip * AUDIO_FRAME + source.a_off
        unit.pts = pts
        unit.frames = len(frames) - skip
        source.a_end = pts + unit.frames * AUDIO_FRAME
        if skip:
            unit.packets = pes_packets(unit.pid, pts, b"".join(frames[skip:]))
        else:
            _shift_pes(first, header, source.a_off)

    def _silence_before(self, source: _Source, unit: _Unit, target: int, until: int) -> int:
        """Silent frames from `target` to within a frame of `until`, sent before `unit`;
        returns where the audio then continues."""
        slate = self._slate
        if slate is None:
            return target
        index = source.pending.index(unit)
        silent = []
        while target + AUDIO_FRAME // 2 < until:
            packets = pes_packets(unit.pid, target, slate.silence)
            silent.append(_Unit(unit.pid, packets, pts=target, complete=True))
            target += AUDIO_FRAME
        source.pending[index:index] = silent
        return target

    def _restamp_pcr(self, source: _Source, packet: bytearray) -> None:
        offset = _pcr_offset(packet)
        if offset is None or source.v_off is None:
            return
        value = read_pcr(packet, offset) + source.v_off * 300
        write_pcr(packet, offset, value)

    def _flush(self, source: _Source) -> list[Chunk]:
        pending = source.pending
        ready = 0
        while ready < len(pending) and pending[ready].complete:
            ready += 1
        units, source.pending = pending[:ready], pending[ready:]
        for unit in units:
            self._emit(unit, source.video_pid, source)
        return self._chunks_out()

    def _chunks_out(self) -> list[Chunk]:
        """The chunks made since the last call; what follows the last PCR goes too."""
        if self._out:
            self._chunks.append(Chunk(bytes(self._out), self.clock))
            self._out.clear()
        chunks, self._chunks = self._chunks, []
        return chunks

    def _emit(self, unit: _Unit, video_pid: int | None, source: _Source | None = None) -> None:
        """Send a unit: its timestamps move the timeline's end, counters and PCR are set;
        `source`, if given, is where it came from (its frames are counted)."""
        out = self._out
        if unit.pid == video_pid and unit.pts is not None:
            self.v_next = unit.pts + self.frame
            self.frames += 1
            if source is not None:
                source.frames += 1
        elif unit.pts is not None:
            self.a_next = unit.pts + unit.frames * AUDIO_FRAME
        for packet in unit.packets:
            offset = _pcr_offset(packet)
            if offset is not None:
                self.pcr = max(read_pcr(packet, offset), self.pcr)
                write_pcr(packet, offset, self.pcr)
            self._count(packet)
            out += packet
            if unit.pid == PAT_PID:
                sdt = bytearray(self.sdt)
                self._count(sdt)
                out += sdt
            if offset is not None:
                # A chunk ends at each PCR: the pacer sends it when that time comes.
                self._chunks.append(Chunk(bytes(out), self.clock))
                out.clear()

    def _count(self, packet: bytearray) -> None:
        packet_pid = ((packet[1] & 0x1F) << 8) | packet[2]
        has_payload = packet[3] & 0x10
        cc = self.cc.get(packet_pid, 15)
        if has_payload:
            cc = (cc + 1) & 0x0F
            self.cc[packet_pid] = cc
        packet[3] = (packet[3] & 0xF0) | cc
        if packet[3] & 0x20 and packet[4] > 0:
            packet[5] &= 0x7F  # never a discontinuity: this is one timeline

    # --- filler ------------------------------------------------------------------------

    def load_slate(self, clip: bytes) -> bool:
        """Take a pre-encoded slate clip (MPEG-TS starting on a keyframe); False if unusable."""
        slate = _Slate.parse(clip)
        if slate is None:
            return False
        self._slate = slate
        return True

    @property
    def can_fill(self) -> bool:
        return self._slate is not None

    def fill(self, seconds: float) -> list[Chunk]:
        """Slate frames for `seconds` on the timeline, audio kept in step (silence).

        A source that is still open resumes at its next keyframe afterwards.
        """
        slate = self._slate
        if slate is None:
            return []
        source = self._source
        flushed: list[Chunk] = []
        if source is not None:
            source.open.clear()
            source.pending = [u for u in source.pending if u.complete]
            flushed = self._flush(source)
            # It resumes on its next keyframe, after the slate.
            source.v_off = source.a_off = source.v_expect = source.a_expect = None
            source.v_end = source.a_end = None
        frames = max(1, round(seconds * TICKS / self.frame))
        for index in range(frames):
            if index % len(slate.video) == 0:
                for table in slate.tables:
                    self._emit(_Unit(table.pid, [bytearray(p) for p in table.packets]), None)
            self._slate_video(slate.video[index % len(slate.video)], slate)
            end = self.v_next
            while self.a_next is None or self.a_next < end - AUDIO_FRAME // 2:
                self._slate_audio(slate)
        return flushed + self._chunks_out()

    def _slate_video(self, unit: _Unit, slate: _Slate) -> None:
        assert unit.pts is not None
        shift = self.v_next - unit.pts
        packets = [bytearray(p) for p in unit.packets]
        _shift_pes(packets[0], _payload_start(packets[0]), shift)
        for packet in packets:
            offset = _pcr_offset(packet)
            if offset is not None:
                write_pcr(packet, offset, read_pcr(packet, offset) + shift * 300)
        self._emit(_Unit(slate.video_pid, packets, pts=self.v_next), slate.video_pid)

    def _slate_audio(self, slate: _Slate) -> None:
        target = self.a_next if self.a_next is not None else self.v_next
        packets = pes_packets(slate.audio_pid, target, slate.silence)
        self._emit(_Unit(slate.audio_pid, packets, pts=target), slate.video_pid)


@dataclass
class _Slate:
    tables: list[_Unit]
    video: list[_Unit]  # starting with a keyframe
    silence: bytes  # one silent ADTS frame
    video_pid: int
    audio_pid: int

    @classmethod
    def parse(cls, clip: bytes) -> _Slate | None:
        source = _Source(v_off=0, a_off=0)
        tables: list[_Unit] = []
        video: list[_Unit] = []
        audio: list[_Unit] = []
        for packet in _split(Aligner().feed(clip)):
            packet_pid = ((packet[1] & 0x1F) << 8) | packet[2]
            pusi = bool(packet[1] & 0x40)
            if packet_pid == PAT_PID and pusi and (pmt := parse_pat(packet)):
                source.pmt_pids = set(pmt)
                if len(tables) < 2:
                    tables.append(_Unit(PAT_PID, [packet], complete=True))
            elif packet_pid in source.pmt_pids and pusi and (streams := parse_pmt(packet)):
                source.video_pid, source.audio_pid = av_pids(streams)
                if len(tables) < 2:
                    tables.append(_Unit(packet_pid, [packet], complete=True))
            elif packet_pid in (source.video_pid, source.audio_pid):
                target = video if packet_pid == source.video_pid else audio
                if pusi:
                    pts = _pes_pts(packet, _payload_start(packet))
                    target.append(
                        _Unit(packet_pid, [packet], pts=pts, keyframe=random_access(packet))
                    )
                elif target:
                    target[-1].packets.append(packet)
        if not video or not audio or not video[0].keyframe or len(tables) < 2:
            return None
        if source.video_pid is None or source.audio_pid is None:
            return None
        if any(u.pts is None for u in video):
            return None
        middle = audio[len(audio) // 2]
        frames = _adts_frames(middle.packets, _payload_start(middle.packets[0]))
        if not frames:
            return None
        # Up to the last whole frame: the clip's end may be cut mid-frame.
        video = video[:-1] or video
        return cls(tables, video, frames[0], source.video_pid, source.audio_pid)


def _adts_frames(packets: list[bytearray], header: int) -> list[bytes]:
    """The ADTS frames of a PES whose first packet's PES header starts at `header`."""
    first = packets[0]
    start = header + 9 + first[header + 8]
    payload = bytes(first[start:]) + b"".join(bytes(p[_payload_start(p) :]) for p in packets[1:])
    frames = []
    pos = 0
    while pos + 7 <= len(payload) and payload[pos] == 0xFF and payload[pos + 1] & 0xF0 == 0xF0:
        length = (payload[pos + 3] & 0x03) << 11 | payload[pos + 4] << 3 | payload[pos + 5] >> 5
        if length < 7 or pos + length > len(payload):
            break
        frames.append(payload[pos : pos + length])
        pos += length
    return frames


def pes_packets(pid: int, pts: int, payload: bytes, stream_id: int = 0xC0) -> list[bytearray]:
    """TS packets carrying one PES with a PTS (continuity counters set when sent)."""
    pes = bytearray(b"\x00\x00\x01" + bytes([stream_id]))
    pes += (8 + len(payload)).to_bytes(2, "big") + b"\x80\x80\x05" + bytes(5)
    write_ts(pes, 9, pts)
    pes[9] = (pes[9] & 0x0F) | 0x20
    pes += payload
    packets = []
    pos = 0
    while pos < len(pes):
        room = PACKET_SIZE - 4
        piece = pes[pos : pos + room]
        head = bytearray([0x47, (0x40 if pos == 0 else 0) | (pid >> 8), pid & 0xFF, 0x10])
        if len(piece) < room:
            stuffing = room - len(piece)
            head[3] = 0x30
            adaptation = bytearray([stuffing - 1])
            if stuffing > 1:
                adaptation += b"\x00" + b"\xff" * (stuffing - 2)
            head += adaptation
        packets.append(head + piece)
        pos += len(piece)
    return packets


def _split(data: bytes) -> Iterator[bytearray]:
    for offset in range(0, len(data) - PACKET_SIZE + 1, PACKET_SIZE):
        yield bytearray(data[offset : offset + PACKET_SIZE])


def _jumped(delta: int, step: int) -> bool:
    """A step away from the expected timestamp that is no encoder's jitter: back by half
    a frame or more (never allowed out), or forward by more than REANCHOR."""
    delta = _wrap(delta)
    return delta <= -(step // 2) or delta > REANCHOR


def _wrap(delta: int) -> int:
    """A PTS difference folded into -2**32..2**32 (the clock wraps at 2**33)."""
    return (delta + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2


def _pes_pts(packet: bytearray, start: int) -> int | None:
    if start + 14 > PACKET_SIZE or packet[start : start + 3] != b"\x00\x00\x01":
        return None
    if not packet[start + 7] & 0x80:
        return None
    return read_ts(packet, start + 9)


def _shift_pes(packet: bytearray, start: int, shift: int) -> None:
    flags = packet[start + 7] >> 6
    if flags & 0x2:
        write_ts(packet, start + 9, read_ts(packet, start + 9) + shift)
    if flags == 0x3:
        write_ts(packet, start + 14, read_ts(packet, start + 14) + shift)
