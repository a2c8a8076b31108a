"""The splicer: many processes' MPEG-TS in, one continuous timeline out.

Sources are real ffmpeg output of `item_argv` (and a slate of `slate_argv`), tiny and
made once for the module. The output is read back here with a parser of its own, so a
mistake in the splicer's helpers cannot hide itself.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import FfmpegSettings
from service.ffmpeg import item_argv, slate_argv
from service.media import MediaItem, item_from_probe
from service.mpegts import PACKET_SIZE, PAT_PID, VIDEO_STREAM_TYPES, parse_pat, parse_pmt
from service.playout import ItemPlan
from service.splice import (
    START,
    TICKS,
    Chunk,
    Splicer,
    pes_packets,
    read_pcr,
    read_ts,
    sdt_packet,
    write_pcr,
    write_ts,
)
from tests.e2e.tsutil import decode_errors, ffprobe

# A keyframe every 8 frames (0.32 s), so sources of a second have several GOPs.
SETTINGS = FfmpegSettings(
    width=160, height=120, fps=25, video_bitrate=150_000, preset="ultrafast", gop_seconds=0.32
)
FRAME = 3600  # one video frame at 25 fps, in 90 kHz ticks
AAC = 1920  # one AAC frame (1024 samples at 48 kHz), in 90 kHz ticks
NAME = "Kanal Ünø"


# --- reading MPEG-TS back -------------------------------------------------------------


def pts_at(data: bytes, offset: int) -> int:
    b = data[offset : offset + 5]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


@dataclass
class Pes:
    offset: int  # of its first packet in the stream
    pid: int
    pts: int
    keyframe: bool
    declared: int  # PES_packet_length (0: unbounded, as for video)
    data: bytearray  # the whole PES, header included

    @property
    def payload(self) -> bytes:
        return bytes(self.data[9 + self.data[8] :])


@dataclass
class Ts:
    video_pid: int = -1
    audio_pid: int = -1
    pmt_pids: set[int] = field(default_factory=set)
    pes: list[Pes] = field(default_factory=list)
    pcrs: list[tuple[int, int]] = field(default_factory=list)  # (offset, 27 MHz value)
    breaks: list[tuple[int, int, int]] = field(default_factory=list)  # pid, before, after
    discontinuities: int = 0
    sdt: int = 0  # SDT packets

    @property
    def video(self) -> list[Pes]:
        return [p for p in self.pes if p.pid == self.video_pid]

    @property
    def audio(self) -> list[Pes]:
        return [p for p in self.pes if p.pid == self.audio_pid]


def parse(data: bytes) -> Ts:
    assert len(data) % PACKET_SIZE == 0
    ts = Ts()
    counters: dict[int, int] = {}
    current: dict[int, Pes] = {}
    for offset in range(0, len(data), PACKET_SIZE):
        packet = data[offset : offset + PACKET_SIZE]
        assert packet[0] == 0x47
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        start = bool(packet[1] & 0x40)
        control = packet[3] >> 4 & 3
        body_at, keyframe = 4, False
        if control & 2:
            length = packet[4]
            if length:
                flags = packet[5]
                ts.discontinuities += bool(flags & 0x80)
                keyframe = bool(flags & 0x40)
                if flags & 0x10:
                    b = packet[6:12]
                    base = b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7
                    ts.pcrs.append((offset, base * 300 + ((b[4] & 1) << 8 | b[5])))
            body_at = 5 + length
        if control & 1:
            counter = packet[3] & 0x0F
            if pid in counters and counter != (counters[pid] + 1) % 16:
                ts.breaks.append((pid, counters[pid], counter))
            counters[pid] = counter
        body = packet[body_at:] if control & 1 else b""
        if pid == PAT_PID and start:
            ts.pmt_pids = set(parse_pat(packet))
        elif pid in ts.pmt_pids and start:
            streams = parse_pmt(packet)
            ts.video_pid = next(p for p, t in streams.items() if t in VIDEO_STREAM_TYPES)
            ts.audio_pid = next(p for p, t in streams.items() if t not in VIDEO_STREAM_TYPES)
        elif pid == 0x11:
            ts.sdt += 1
        elif pid in (ts.video_pid, ts.audio_pid):
            if start:
                assert body[:3] == b"\x00\x00\x01", "a PES that does not start with a header"
                length = body[4] << 8 | body[5]
                unit = Pes(offset, pid, pts_at(body, 9), keyframe, length, bytearray(body))
                ts.pes.append(unit)
                current[pid] = unit
            elif pid in current:
                current[pid].data += body
    return ts


def pids(data: bytes) -> Iterator[int]:
    for offset in range(0, len(data), PACKET_SIZE):
        yield (data[offset + 1] & 0x1F) << 8 | data[offset + 2]


def adts_frames(payload: bytes) -> int:
    count = pos = 0
    while pos < len(payload):
        assert payload[pos] == 0xFF and payload[pos + 1] & 0xF0 == 0xF0, "not ADTS"
        pos += (payload[pos + 3] & 3) << 11 | payload[pos + 4] << 3 | payload[pos + 5] >> 5
        count += 1
    assert pos == len(payload), "a partial ADTS frame"
    return count


def assert_clean(ts: Ts, *, frame: int = FRAME, audio_gaps: bool = False) -> None:
    """One continuous timeline: video PTS a frame apart, audio PTS one AAC frame per
    frame it carries (with `audio_gaps`, only never overlapping), whole PES units,
    continuity counters unbroken, PCR never backwards, no discontinuity flags."""
    video = [p.pts for p in ts.video]
    assert video, "no video"
    steps = {b - a for a, b in itertools.pairwise(video)}
    assert steps <= {frame}, f"video PTS steps {sorted(steps)}"
    for before, after in itertools.pairwise(ts.audio):
        end = before.pts + adts_frames(before.payload) * AAC
        if audio_gaps:
            assert after.pts >= end, ("audio overlaps", before.pts, after.pts)
        else:
            assert after.pts == end, ("audio gap", before.pts, after.pts)
    for unit in ts.pes:
        if unit.declared:
            assert len(unit.data) == 6 + unit.declared, "an incomplete PES"
    assert ts.breaks == []
    assert ts.discontinuities == 0
    pcrs = [value for _, value in ts.pcrs]
    assert pcrs == sorted(pcrs), "PCR went backwards"


def audio_frames(ts: Ts) -> int:
    return sum(adts_frames(p.payload) for p in ts.audio)


def ffmpeg_errors(data: bytes, path: Path) -> str:
    path.write_bytes(data)
    return decode_errors(path)


def encode(
    settings: FfmpegSettings,
    item: MediaItem,
    frames: int,
    seek: float = 0.0,
    muxer: tuple[str, ...] = (),
) -> bytes:
    plan = ItemPlan(item, seek, frames, 0.0, frames / settings.fps)
    argv = item_argv(settings, plan, "9")
    argv[-1:-1] = muxer  # options of the MPEG-TS muxer, before the output
    result = subprocess.run(argv, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def make_slate(settings: FfmpegSettings) -> bytes:
    result = subprocess.run(slate_argv(settings, 0.64), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def media_item(path: Path, *make: str) -> MediaItem:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-nostdin", *make, str(path)], check=True, timeout=60
    )
    item = item_from_probe(str(path), ffprobe(path, "-show_format", "-show_streams"))
    assert isinstance(item, MediaItem)
    return item


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MediaItem]:
    root = tmp_path_factory.mktemp("splice")
    picture = ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2")
    tone = ("-f", "lavfi", "-i", "sine=frequency=440:duration=2")
    h264 = ("-c:v", "libx264", "-preset", "ultrafast")
    return {
        "av": media_item(root / "av.mp4", *picture, *tone, *h264, "-c:a", "aac", "-shortest"),
        "video": media_item(root / "video.mkv", *picture, *h264),
        "audio": media_item(root / "audio.mp3", *tone, "-c:a", "libmp3lame"),
    }


@dataclass(frozen=True)
class Sources:
    av: bytes  # 24 frames of H.264/AAC
    video: bytes  # 16 frames of a video-only file (silence), from 0.283 s in
    audio: bytes  # 16 frames of an audio-only file (a title card)
    long: bytes  # 40 frames of H.264/AAC (1.6 s)
    slate: bytes

    @property
    def three(self) -> list[tuple[bytes, int]]:
        return [(self.av, 24), (self.video, 16), (self.audio, 16)]


@pytest.fixture(scope="module")
def sources(items: dict[str, MediaItem]) -> Sources:
    return Sources(
        av=encode(SETTINGS, items["av"], 24),
        video=encode(SETTINGS, items["video"], 16, seek=0.283),
        audio=encode(SETTINGS, items["audio"], 16),
        long=encode(SETTINGS, items["av"], 40, seek=0.2),
        slate=make_slate(SETTINGS),
    )


class Run:
    """Drives a splicer the way the runner does, and keeps what comes out."""

    def __init__(self, slate: bytes | None = None, *, fps: int = 25) -> None:
        self.splicer = Splicer(fps, NAME)
        if slate is not None:
            assert self.splicer.load_slate(slate)
        self.out = bytearray()
        self.chunks: list[Chunk] = []
        self.skews: list[int] = []  # after each source ended, and after each fill

    def take(self, chunks: list[Chunk]) -> None:
        self.chunks += chunks
        for chunk in chunks:
            self.out += chunk.data

    def feed(self, data: bytes, size: int = 4096) -> None:
        for offset in range(0, len(data), size):
            self.take(self.splicer.feed(data[offset : offset + size]))

    def source(self, data: bytes, size: int = 4096) -> None:
        self.splicer.begin()
        self.feed(data, size)
        self.take(self.splicer.end())
        self.skews.append(self.splicer.skew)

    def cut(self, data: bytes, upto: int) -> None:
        self.splicer.begin()
        self.feed(data[:upto])
        self.splicer.cut()

    def fill(self, seconds: float) -> None:
        self.take(self.splicer.fill(seconds))
        self.skews.append(self.splicer.skew)

    def parsed(self) -> Ts:
        return parse(bytes(self.out))


# --- sources joined -------------------------------------------------------------------


@pytest.fixture(scope="module")
def joined(sources: Sources) -> Run:
    """Three sources one after the other: the output every joining test reads."""
    run = Run()
    for data, frames in sources.three:
        before = run.splicer.frames
        run.source(data)
        assert run.splicer.frames - before == frames
    return run


def test_sources_make_one_timeline(joined: Run) -> None:
    ts = joined.parsed()
    assert_clean(ts)
    frames = 24 + 16 + 16
    assert [p.pts for p in ts.video] == [START + i * FRAME for i in range(frames)]
    assert ts.audio[0].pts == START
    splicer = joined.splicer
    assert (splicer.frames, splicer.v_next) == (frames, START + frames * FRAME)
    assert splicer.a_next == splicer.v_next  # each source is whole grids: in step again


def test_each_sources_priming_frame_is_dropped(joined: Run, sources: Sources) -> None:
    for data, frames in sources.three:
        raw = parse(data)
        # The encoder's priming frame comes before the first picture ...
        assert raw.audio[0].pts == raw.video[0].pts - AAC
        assert audio_frames(raw) == frames * FRAME // AAC + 1
    ts = joined.parsed()
    # ... and none of them is sent: exactly the audio of the pictures, each source's
    # first audio frame with its first picture.
    assert audio_frames(ts) == (24 + 16 + 16) * FRAME // AAC
    audio_starts = {p.pts for p in ts.audio}
    for first_frame in (0, 24, 40):
        assert START + first_frame * FRAME in audio_starts


def test_skew_stays_within_an_audio_frame(joined: Run) -> None:
    assert joined.skews
    assert all(abs(skew) <= AAC for skew in joined.skews), joined.skews


def test_each_chunk_ends_at_a_pcr_and_is_due_then(joined: Run) -> None:
    clock = START - TICKS  # before any PCR: a second before the first picture
    ending = 0
    for chunk in joined.chunks:
        pcrs = parse(chunk.data).pcrs
        # A PCR only as the last packet: a chunk holds at most one PCR interval.
        assert [offset for offset, _ in pcrs] in ([], [len(chunk.data) - PACKET_SIZE])
        if pcrs:
            clock = pcrs[0][1] // 300
            ending += 1
        assert chunk.clock == clock  # what follows the last PCR goes with its time
    assert ending == len(joined.parsed().pcrs) > 20
    assert joined.splicer.clock == joined.chunks[-1].clock


def test_joined_output_decodes_silently(joined: Run, tmp_path: Path) -> None:
    assert ffmpeg_errors(bytes(joined.out), tmp_path / "joined.ts") == ""


def test_sdt_names_the_channel_and_replaces_the_sources(joined: Run, tmp_path: Path) -> None:
    path = tmp_path / "joined.ts"
    path.write_bytes(joined.out)
    programs = ffprobe(path, "-show_programs")["programs"]
    assert isinstance(programs, list)
    (program,) = programs
    tags = program["tags"]
    assert (tags["service_name"], tags["service_provider"]) == (NAME, "exstream")
    # The splicer's SDT after each PAT, and none of the sources' own.
    assert joined.parsed().sdt == list(pids(bytes(joined.out))).count(PAT_PID)


@pytest.mark.parametrize("size", [1000, 188, 189, 7, 1 << 20])
def test_any_chunk_size_gives_the_same_bytes(joined: Run, sources: Sources, size: int) -> None:
    run = Run()
    for data, _ in sources.three:
        run.source(data, size)
    assert run.out == joined.out


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_any_split_gives_the_same_bytes(joined: Run, sources: Sources, data: st.DataObject) -> None:
    splicer = Splicer(25, NAME)
    out = bytearray()
    for source, _ in sources.three:
        cuts = data.draw(st.lists(st.integers(0, len(source)), max_size=20))
        splicer.begin()
        for a, b in itertools.pairwise(sorted({0, len(source), *cuts})):
            out += b"".join(c.data for c in splicer.feed(source[a:b]))
        out += b"".join(c.data for c in splicer.end())
    assert out == joined.out


def test_discontinuity_flags_of_a_source_are_cleared(sources: Sources, tmp_path: Path) -> None:
    """A process may mark its first packets as a discontinuity: on the channel's one
    timeline there is none."""
    marked = bytearray(sources.av)
    for offset in range(0, len(marked), PACKET_SIZE):
        if marked[offset + 3] & 0x20 and marked[offset + 4] > 0:
            marked[offset + 5] |= 0x80
    assert parse(bytes(marked)).discontinuities > 24
    run = Run()
    run.source(sources.video)
    run.source(bytes(marked))
    ts = run.parsed()
    assert_clean(ts)  # no discontinuity_indicator left
    assert ffmpeg_errors(bytes(run.out), tmp_path / "marked.ts") == ""


def test_a_source_with_a_longer_mux_delay_never_takes_the_pcr_back(
    items: dict[str, MediaItem], sources: Sources, tmp_path: Path
) -> None:
    late = encode(SETTINGS, items["av"], 16, muxer=("-muxdelay", "2"))
    raw = parse(late)
    assert raw.video[0].pts - raw.pcrs[0][1] // 300 > 2 * TICKS - FRAME  # 2 s, not 0.7 s
    run = Run()
    run.source(sources.av)
    run.source(late)
    ts = run.parsed()
    assert_clean(ts)  # the PCR waits rather than go back
    assert len(ts.video) == 24 + 16
    assert ffmpeg_errors(bytes(run.out), tmp_path / "late.ts") == ""


def test_thirty_fps_sources(items: dict[str, MediaItem], tmp_path: Path) -> None:
    fast = replace(SETTINGS, fps=30, gop_seconds=0.5)
    run = Run(fps=30)
    for name in ("av", "video"):
        run.source(encode(fast, items[name], 16))
    ts = run.parsed()
    assert_clean(ts, frame=3000)
    assert len(ts.video) == 32
    assert audio_frames(ts) == 32 * 3000 // AAC
    assert run.skews == [0, 0]
    assert ffmpeg_errors(bytes(run.out), tmp_path / "30.ts") == ""


# --- a source that jumps, a source cut short --------------------------------------


def test_a_jump_back_inside_a_source_is_reanchored(sources: Sources, tmp_path: Path) -> None:
    raw = parse(sources.long + sources.long)
    assert min(b - a for a, b in itertools.pairwise(p.pts for p in raw.video)) < 0
    run = Run()
    run.source(sources.long + sources.long)  # two encodes in one output
    run.source(sources.av)
    ts = run.parsed()
    assert_clean(ts)
    assert len(ts.video) == 40 + 40 + 24
    assert audio_frames(ts) == 104 * FRAME // AAC  # the second priming frame dropped too
    assert run.skews == [0, 0]
    assert ffmpeg_errors(bytes(run.out), tmp_path / "jump.ts") == ""


def test_a_short_jump_back_inside_a_source_is_reanchored(sources: Sources) -> None:
    run = Run()
    run.source(sources.av + sources.long)
    assert_clean(run.parsed())


@pytest.mark.parametrize("with_slate", [True, False], ids=["slate", "no-slate"])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.55, 0.8])
@pytest.mark.parametrize("kind", ["av", "video"])
def test_cut_mid_source_then_a_new_source(
    sources: Sources, tmp_path: Path, kind: str, fraction: float, with_slate: bool
) -> None:
    first: bytes = getattr(sources, kind)
    run = Run(sources.slate if with_slate else None)
    run.cut(first, int(len(first) * fraction))
    cut_frames = run.splicer.frames  # none yet at 5 %: killed before its first frame
    assert (cut_frames > 0) == (fraction > 0.05)
    assert cut_frames < len(parse(first).video)
    run.source(sources.av)
    ts = run.parsed()
    # Only whole frames of the cut source went out. Its audio may stop before its
    # pictures do (ffmpeg packs quiet audio into PES of up to 0.3 s); the next source's
    # audio starts with its pictures, in sync, and the gap before it is silence when
    # there is a slate to take silence from.
    assert_clean(ts, audio_gaps=not with_slate)
    assert len(ts.video) == cut_frames + 24
    assert ts.video[cut_frames].keyframe
    assert abs(run.skews[-1]) <= AAC
    assert ffmpeg_errors(bytes(run.out), tmp_path / "cut.ts") == ""


def test_a_source_joined_mid_gop_starts_at_its_next_keyframe(
    sources: Sources, tmp_path: Path
) -> None:
    data = sources.long
    middle = len(data) // 2 // PACKET_SIZE * PACKET_SIZE
    run = Run()
    run.source(sources.av)
    run.source(data[middle:])  # as if the process's first bytes were lost
    ts = run.parsed()
    assert_clean(ts)
    assert ts.video[24].keyframe
    assert 24 < len(ts.video) < 24 + 20
    assert ffmpeg_errors(bytes(run.out), tmp_path / "mid.ts") == ""


def test_without_an_open_source_nothing_is_taken(sources: Sources) -> None:
    splicer = Splicer(25, NAME)
    assert splicer.feed(sources.av) == []
    assert splicer.end() == []
    splicer.cut()  # nothing to abandon
    state = (splicer.frames, splicer.source_frames, splicer.v_next, splicer.a_next)
    assert state == (0, 0, START, None)


def test_source_frames_count_the_open_source(sources: Sources) -> None:
    splicer = Splicer(25, NAME)
    splicer.begin()
    seen = []
    for offset in range(0, len(sources.av), 2048):
        splicer.feed(sources.av[offset : offset + 2048])
        seen.append(splicer.source_frames)
    assert seen == sorted(seen)
    assert 0 < seen[-1] <= 24
    splicer.end()
    assert (splicer.source_frames, splicer.frames) == (0, 24)


# --- filler -----------------------------------------------------------------------------


def test_slate_only_stream(sources: Sources, tmp_path: Path) -> None:
    run = Run(sources.slate)
    run.fill(1.0)
    run.fill(0.5)
    ts = run.parsed()
    assert_clean(ts)
    assert len(ts.video) == 25 + 12  # 12.5 frames rounds to 12
    assert ts.video[0].pts == START
    assert ts.video[0].keyframe
    assert all(abs(skew) <= AAC for skew in run.skews), run.skews
    assert ffmpeg_errors(bytes(run.out), tmp_path / "slate.ts") == ""


def test_fill_before_the_first_source(sources: Sources, tmp_path: Path) -> None:
    run = Run(sources.slate)
    run.fill(0.4)
    run.source(sources.av)
    ts = run.parsed()
    assert_clean(ts)
    assert len(ts.video) == 10 + 24
    assert ts.video[10].keyframe
    assert all(abs(skew) <= AAC for skew in run.skews), run.skews
    assert ffmpeg_errors(bytes(run.out), tmp_path / "first.ts") == ""


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_fill_while_a_source_is_open_resumes_at_its_next_keyframe(
    sources: Sources, tmp_path: Path, fraction: float
) -> None:
    data = sources.long
    raw = parse(data)
    run = Run(sources.slate)
    run.splicer.begin()
    split = int(len(data) * fraction)
    run.feed(data[:split])
    before = run.splicer.frames
    run.fill(0.32)  # 8 frames of slate
    run.feed(data[split:])
    run.take(run.splicer.end())
    run.source(sources.av)
    ts = run.parsed()
    assert_clean(ts)
    resumed = ts.video[before + 8 :]
    assert ts.video[before].keyframe  # the slate starts on its keyframe
    assert resumed[0].keyframe  # and the source resumes on one of its own
    # What it left out is the rest of the GOP it was in when the slate came.
    raw_keyframes = [i for i, p in enumerate(raw.video) if p.keyframe]
    # The picture being received when the slate came is not whole: never sent.
    resumed_at = next(i for i in raw_keyframes if i > before)
    assert len(resumed) == (40 - resumed_at) + 24
    assert all(abs(skew) <= AAC for skew in run.skews), run.skews
    assert ffmpeg_errors(bytes(run.out), tmp_path / "fill.ts") == ""


def test_no_fill_without_a_usable_slate(sources: Sources) -> None:
    splicer = Splicer(25, NAME)
    assert not splicer.can_fill
    assert splicer.fill(1.0) == []
    assert not splicer.load_slate(b"")
    assert not splicer.load_slate(b"\x47" + bytes(PACKET_SIZE * 20))
    assert not splicer.load_slate(sources.av[: 3 * PACKET_SIZE])  # tables, no pictures
    # A clip that does not start on a keyframe cannot be looped.
    ts = parse(sources.slate)
    first_key = next(i for i, p in enumerate(ts.video) if p.keyframe)
    after_key = drop_first_picture(sources.slate)
    assert first_key == 0
    assert not splicer.load_slate(after_key)
    assert not splicer.can_fill
    assert splicer.load_slate(sources.slate)
    assert splicer.can_fill


def drop_first_picture(clip: bytes) -> bytes:
    """The clip without the packets of its first video PES."""
    ts = parse(clip)
    kept = bytearray()
    starts = 0
    for offset in range(0, len(clip), PACKET_SIZE):
        packet = clip[offset : offset + PACKET_SIZE]
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        if pid == ts.video_pid:
            starts += bool(packet[1] & 0x40)
            if starts <= 1:
                continue
        kept += packet
    return bytes(kept)


# --- the helpers -----------------------------------------------------------------------


@given(
    value=st.integers(min_value=0, max_value=(1 << 34)),
    prefix=st.sampled_from([0x20, 0x30, 0x10]),
)
def test_timestamps_round_trip(value: int, prefix: int) -> None:
    data = bytearray([prefix, 0, 0, 0, 0, 0xAA])
    write_ts(data, 0, value)
    assert read_ts(data, 0) == value % (1 << 33)
    assert pts_at(bytes(data), 0) == value % (1 << 33)
    assert data[0] & 0xF0 == prefix
    assert data[0] & 1 and data[2] & 1 and data[4] & 1  # the marker bits
    assert data[5] == 0xAA  # nothing beyond the 5 bytes


@given(value=st.integers(min_value=0, max_value=(1 << 33) * 300 * 2))
def test_pcr_round_trips(value: int) -> None:
    packet = bytearray(12)
    write_pcr(packet, 6, value)
    assert read_pcr(packet, 6) == value % ((1 << 33) * 300)
    assert packet[10] & 0x7E == 0x7E  # reserved bits set
    assert packet[:6] == bytes(6)


@given(
    payload=st.binary(min_size=0, max_size=700),
    pts=st.integers(min_value=0, max_value=(1 << 33) - 1),
)
def test_pes_packets_carry_one_whole_pes(payload: bytes, pts: int) -> None:
    packets = pes_packets(0x101, pts, payload)
    assert all(len(p) == PACKET_SIZE for p in packets)
    assert [bool(p[1] & 0x40) for p in packets] == [True] + [False] * (len(packets) - 1)
    assert all((p[1] & 0x1F) << 8 | p[2] == 0x101 for p in packets)
    pes = bytearray()
    for packet in packets:
        start = 5 + packet[4] if packet[3] & 0x20 else 4
        pes += packet[start:]
    assert pes[:4] == b"\x00\x00\x01\xc0"
    assert pes[4] << 8 | pes[5] == len(pes) - 6
    assert pts_at(bytes(pes), 9) == pts
    assert pes[9 + 5 :] == payload  # header of 9 bytes and a 5-byte PTS
    assert len(packets) == -(-(len(payload) + 14) // 184)  # as few packets as it takes


def test_sdt_packet() -> None:
    packet = sdt_packet("Ch ✓", "exstream")
    assert len(packet) == PACKET_SIZE
    assert packet[:4] == b"\x47\x40\x11\x10"
    assert b"\x15exstream" in packet  # DVB strings in UTF-8 start with 0x15
    assert "\x15Ch ✓".encode() in packet
    long = sdt_packet("n" * 200, "exstream")
    assert len(long) == PACKET_SIZE
    assert b"\x15" + b"n" * 80 in long
    assert b"n" * 81 not in long  # cut at 80 bytes


def test_sdt_packet_with_a_long_provider_is_one_packet() -> None:
    assert len(sdt_packet("n" * 200, "p" * 200)) == PACKET_SIZE
