"""The wire checks and the media library themselves, against streams made with ffmpeg."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from service.mpegts import PACKET_SIZE, packets, payload_unit_start, pid
from tests.e2e.library import KINDS, MediaKind, av_offsets, make_library
from tests.e2e.wire import check_capture, worst_gap

SECONDS = 4
FPS = 25
SERVICE = "Wire Test"
PROVIDER = "exstream tests"
# ffmpeg's mpegts muxer numbers the elementary streams from 0x100.
VIDEO_PID, AUDIO_PID = 0x100, 0x101
# 2**33 ticks of 90 kHz: PTS and PCR wrap a little after this many seconds.
WRAP_SECONDS = 95443.7


def ffmpeg(*args: str) -> None:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-nostdin", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def make_ts(path: Path, *extra: str) -> bytes:
    """H.264 (with B-frames, so PTS and DTS differ) and 48 kHz stereo AAC in MPEG-TS."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}:duration={SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={SECONDS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", str(FPS),
        "-c:a", "aac", "-ac", "2",
        "-metadata", f"service_name={SERVICE}", "-metadata", f"service_provider={PROVIDER}",
        *extra, "-f", "mpegts", str(path),
    )  # fmt: skip
    return path.read_bytes()


def probe(path: Path, *options: str) -> list[dict[str, object]]:
    """ffprobe's streams, with dispositions and tags flattened to `disposition.x` and `tag.x`."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    streams = []
    for stream in json.loads(result.stdout)["streams"]:
        flat = {key: value for key, value in stream.items() if not isinstance(value, dict)}
        flat.update({f"disposition.{k}": v for k, v in stream.get("disposition", {}).items()})
        flat.update({f"tag.{k}": v for k, v in stream.get("tags", {}).items()})
        streams.append(flat)
    return streams


def audio_packets(path: Path) -> int:
    streams = probe(path, "-count_packets", "-select_streams", "a")
    return int(str(streams[0]["nb_read_packets"]))


def find_packet(data: bytes, wanted_pid: int, *, start: int, adaptation: bool) -> int:
    """Index of the first packet from `start` on `wanted_pid` that continues a PES and
    has (or has not) an adaptation field."""
    for index, packet in enumerate(packets(data)):
        if index < start or pid(packet) != wanted_pid or payload_unit_start(packet):
            continue
        has_adaptation = bool(packet[3] & 0x20) and packet[4] > 0
        if has_adaptation == adaptation and packet[3] & 0x10:
            return index
    raise AssertionError(f"no such packet on pid 0x{wanted_pid:x}")


def without(data: bytes, index: int) -> bytes:
    return data[: index * PACKET_SIZE] + data[(index + 1) * PACKET_SIZE :]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same clip muxed with one AAC frame per PES and with several (the default)."""
    root = tmp_path_factory.mktemp("wire")
    paths = {"one frame per PES": root / "single.ts", "several frames per PES": root / "multi.ts"}
    make_ts(paths["one frame per PES"], "-pes_payload_size", "0")
    make_ts(paths["several frames per PES"])
    return paths


@pytest.fixture(scope="module")
def clip(clean: dict[str, Path]) -> bytes:
    return clean["several frames per PES"].read_bytes()


@pytest.mark.parametrize("variant", ["one frame per PES", "several frames per PES"])
def test_a_clean_stream_has_no_problems(clean: dict[str, Path], variant: str) -> None:
    path = clean[variant]
    data = path.read_bytes()
    report = check_capture(data, fps=FPS)
    assert report.problems() == []
    assert report.packets == len(data) // PACKET_SIZE
    assert report.video_frames == SECONDS * FPS
    assert report.audio_frames == audio_packets(path)
    assert (report.service_name, report.provider) == (SERVICE, PROVIDER)
    assert report.first_video_pts is not None and report.first_audio_pts is not None
    assert report.audio_sample_rate == 48000
    audio_pes = sum(1 for p in packets(data) if pid(p) == AUDIO_PID and payload_unit_start(p))
    if variant == "one frame per PES":
        assert audio_pes == report.audio_frames
    else:  # so the frame counting, not one-PES-one-frame, is what passed above
        assert audio_pes < report.audio_frames / 2


def test_a_viewer_may_join_and_leave_anywhere(clip: bytes) -> None:
    """Mid-stream start (before any PAT/PMT) and an end inside a packet and a PES."""
    start, end = 777, 1500
    capture = clip[start * PACKET_SIZE : end * PACKET_SIZE + 77]
    report = check_capture(capture, fps=FPS)
    assert report.problems() == []
    assert report.packets == end - start
    assert 0 < report.video_frames < SECONDS * FPS
    assert report.audio_frames > 0


def test_a_lost_packet_breaks_continuity(clip: bytes) -> None:
    video = VIDEO_PID
    lost = find_packet(clip, video, start=1000, adaptation=False)
    damaged = without(clip, lost)
    following = find_packet(damaged, video, start=lost, adaptation=False)
    assert following == lost  # the next video packet: its counter is one too far
    expected = clip[lost * PACKET_SIZE + 3] & 0x0F
    report = check_capture(damaged, fps=FPS)
    assert report.problems() == [
        f"continuity: pid 0x{video:x} packet {lost}: expected {expected}, got {(expected + 1) % 16}"
    ]


def test_a_repeated_packet_is_an_error(clip: bytes) -> None:
    video = VIDEO_PID
    index = find_packet(clip, video, start=1000, adaptation=False)
    packet = clip[index * PACKET_SIZE : (index + 1) * PACKET_SIZE]
    doubled = clip[: (index + 1) * PACKET_SIZE] + packet + clip[(index + 1) * PACKET_SIZE :]
    report = check_capture(doubled, fps=FPS)
    counter = packet[3] & 0x0F
    assert report.cc_errors == [
        f"pid 0x{video:x} packet {index + 1}: duplicate packet (cc {counter})"
    ]


def test_a_flagged_discontinuity_is_an_error(clip: bytes) -> None:
    video = VIDEO_PID
    index = find_packet(clip, video, start=1000, adaptation=True)
    flipped = bytearray(clip)
    flipped[index * PACKET_SIZE + 5] |= 0x80
    report = check_capture(bytes(flipped), fps=FPS)
    assert report.problems() == [
        f"continuity: pid 0x{video:x} packet {index}: discontinuity flagged"
    ]


def test_a_second_file_not_restamped_jumps_back(clip: bytes) -> None:
    report = check_capture(clip + clip, fps=FPS)
    seam = len(clip) // PACKET_SIZE
    assert report.video_jumps and report.audio_jumps, report
    assert all(int(text.split()[1].rstrip(":")) >= seam for text in report.video_jumps)
    assert " step -" in report.video_jumps[0] and " step -" in report.audio_jumps[0]
    assert any(": PCR went back " in text for text in report.pcr_problems), report.pcr_problems
    assert report.video_frames == 2 * SECONDS * FPS


def test_pcr_further_apart_than_allowed(clip: bytes) -> None:
    report = check_capture(clip, fps=FPS, max_pcr_gap=0.01)
    assert report.pcr_problems and all(": PCR gap of " in text for text in report.pcr_problems)
    assert check_capture(clip, fps=FPS, max_pcr_gap=0.1).pcr_problems == []


def test_a_wrong_frame_rate_shows_as_video_jumps(clip: bytes) -> None:
    report = check_capture(clip, fps=30)
    assert len(report.video_jumps) == SECONDS * FPS - 1
    assert report.video_jumps[0].endswith("step +3600 ticks, expected 3000")


def test_timestamps_and_pcr_unwrap_at_33_bits(tmp_path: Path) -> None:
    data = make_ts(tmp_path / "wrap.ts", "-output_ts_offset", str(int(WRAP_SECONDS) - 2))
    report = check_capture(data, fps=FPS)
    assert report.problems() == []
    assert report.video_frames == SECONDS * FPS
    assert report.first_video_pts is not None
    assert report.first_video_pts + SECONDS * 90_000 > 2**33  # it did wrap inside the clip


def ts_packet(packet_pid: int, counter: int, *, body: bool = True, flags: int = 0) -> bytes:
    """A synthetic packet: an adaptation field (with `flags`) when `flags` or no body."""
    header = bytes([0x47, packet_pid >> 8, packet_pid & 0xFF])
    if body and not flags:
        return header + bytes([0x10 | counter]) + b"\xff" * 184
    control = 0x30 if body else 0x20
    adaptation = bytes([1, flags]) if body else bytes([183, flags]) + b"\xff" * 182
    return header + bytes([control | counter]) + adaptation + b"\xff" * (184 - len(adaptation))


def test_continuity_rules_of_iso_13818_1() -> None:
    fine = [
        ts_packet(0x200, 14),
        ts_packet(0x200, 14, body=False),  # adaptation only: the counter stays
        ts_packet(0x200, 15),
        ts_packet(0x1FFF, 3),  # null packets are not counted
        ts_packet(0x200, 0),  # wraps
        ts_packet(0x300, 9),  # another PID starts anywhere
        ts_packet(0x200, 1, flags=0x10),
    ]
    assert check_capture(b"".join(fine), fps=FPS).cc_errors == []
    bad = [ts_packet(0x200, 4), ts_packet(0x200, 5, body=False), ts_packet(0x200, 6)]
    assert check_capture(b"".join(bad), fps=FPS).cc_errors == [
        "pid 0x200 packet 1: expected 4, got 5",
    ]
    flagged = [ts_packet(0x200, 4), ts_packet(0x200, 9, flags=0x80), ts_packet(0x200, 10)]
    assert check_capture(b"".join(flagged), fps=FPS).cc_errors == [
        "pid 0x200 packet 1: discontinuity flagged",
    ]


def test_a_lost_sync_byte_is_reported() -> None:
    data = bytearray(ts_packet(0x200, 0) + ts_packet(0x200, 1))
    data[PACKET_SIZE] = 0x00
    assert check_capture(bytes(data), fps=FPS).cc_errors == ["packet 1: no sync byte (0x00)"]


def test_worst_gap() -> None:
    assert worst_gap([]) == 0.0
    assert worst_gap([(5.0, 100)]) == 0.0
    arrivals = [(10.0, 1316), (10.2, 1316), (10.3, 0), (11.5, 188), (11.6, 188)]
    assert worst_gap(arrivals) == pytest.approx(1.3)  # the empty read does not count


# --- the media library ---------------------------------------------------------------

Stream = dict[str, object]

EXPECTED: dict[str, list[Stream]] = {
    "h264_aac": [
        {"codec_name": "h264", "width": 320, "height": 180, "r_frame_rate": "30/1"},
        {"codec_name": "aac", "sample_rate": "48000", "channels": 2},
    ],
    "mpeg4_mp3": [
        {"codec_name": "mpeg4", "width": 320, "height": 240, "r_frame_rate": "25/1"},
        {"codec_name": "mp3", "sample_rate": "44100", "channels": 1},
    ],
    "h264_video_only": [
        {"codec_name": "h264", "r_frame_rate": "24000/1001", "field_order": "progressive"},
    ],
    "mpeg2_interlaced_ac3": [
        {
            "codec_name": "mpeg2video",
            "r_frame_rate": "25/1",
            "field_order": "tt",
            "display_aspect_ratio": "4:3",
        },
        {"codec_name": "ac3", "sample_rate": "48000", "channels": 6},
    ],
    "mp3_audio_only": [
        {"codec_name": "mp3", "sample_rate": "32000", "channels": 2},
    ],
    "aac_cover_art": [
        {"codec_name": "aac", "channels": 2},
        {"codec_name": "png", "disposition.attached_pic": 1},
    ],
    "hevc_portrait": [
        {"codec_name": "hevc", "width": 180, "height": 320, "r_frame_rate": "50/1"},
        {"codec_name": "aac", "sample_rate": "48000"},
    ],
    "vp9_flac": [
        {"codec_name": "vp9", "r_frame_rate": "60/1"},
        {"codec_name": "flac", "sample_rate": "48000"},
    ],
    "two_audio_subtitles": [
        {"codec_name": "h264"},
        {"codec_name": "aac", "channels": 2, "disposition.default": 0, "tag.language": "eng"},
        {"codec_name": "aac", "channels": 2, "disposition.default": 1, "tag.language": "fra"},
        {"codec_name": "subrip"},
    ],
    "h264_opus_ntsc": [
        {"codec_name": "h264", "width": 424, "height": 240, "r_frame_rate": "30000/1001"},
        {"codec_name": "opus", "sample_rate": "48000", "channels": 2},
    ],
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = make_library(tmp_path_factory.mktemp("library"), seconds=3.0)
    return {kind.name: path for kind, path in zip(KINDS, paths, strict=True)}


def test_the_library_is_every_kind_in_a_stable_order(library: dict[str, Path]) -> None:
    assert list(library) == list(EXPECTED)
    assert [path.name for path in library.values()] == [kind.filename for kind in KINDS]
    assert len({path.parent for path in library.values()}) == 1
    assert sorted(p.name for p in next(iter(library.values())).parent.iterdir()) == sorted(
        kind.filename for kind in KINDS
    )  # nothing else (no subtitle or picture files) left beside the media


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_each_kind_probes_as_intended(library: dict[str, Path], kind: MediaKind) -> None:
    streams = probe(library[kind.name])
    expected = EXPECTED[kind.name]
    assert len(streams) == len(expected), streams
    for actual, wanted in zip(streams, expected, strict=True):
        assert {key: actual.get(key) for key in wanted} == wanted
    moving = [
        s for s in streams if s["codec_type"] == "video" and not s["disposition.attached_pic"]
    ]
    assert bool(moving) == kind.has_video
    assert any(s["codec_type"] == "audio" for s in streams) == kind.has_audio
    assert kind.synced == (kind.has_video and kind.has_audio)


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k.synced], ids=[k.name for k in KINDS if k.synced]
)
def test_synced_kinds_flash_and_beep_together(library: dict[str, Path], kind: MediaKind) -> None:
    offsets = av_offsets(library[kind.name])
    # Marks at 1 s and 2 s; the one at 0 s has no dark frame or silence before it.
    # MP3 in AVI is the worst: its encoder delay is not compensated (-15 ms).
    assert len(offsets) == 2, offsets
    assert all(abs(offset) <= 0.02 for offset in offsets), offsets


@pytest.mark.parametrize(
    "delay",
    [
        ("-i", "{src}", "-af", "adelay=200:all=1", "-c:v", "copy", "-c:a", "aac"),
        (
            "-i",
            "{src}",
            "-itsoffset",
            "0.2",
            "-i",
            "{src}",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c",
            "copy",
        ),
    ],
    ids=["adelay", "itsoffset"],
)
def test_av_offsets_measures_late_audio(
    library: dict[str, Path], tmp_path: Path, delay: tuple[str, ...]
) -> None:
    late = tmp_path / "late.mp4"
    ffmpeg(*(arg.format(src=library["h264_aac"]) for arg in delay), str(late))
    offsets = av_offsets(late)
    assert len(offsets) == 2, offsets
    assert all(abs(offset - 0.2) <= 0.02 for offset in offsets), offsets


def test_ac3_and_mp3_frames_are_counted_on_the_wire(
    library: dict[str, Path], tmp_path: Path
) -> None:
    """MPEG-2 video with AC-3, and MPEG-4 Part 2 with MP3, read by check_capture."""
    ac3 = library["mpeg2_interlaced_ac3"]
    report = check_capture(ac3.read_bytes(), fps=25)
    assert report.problems() == []
    assert report.video_frames == 75
    assert (report.audio_frames, report.audio_sample_rate) == (audio_packets(ac3), 48000)
    mp3 = tmp_path / "mp3.ts"
    ffmpeg("-i", str(library["mpeg4_mp3"]), "-c", "copy", "-f", "mpegts", str(mp3))
    report = check_capture(mp3.read_bytes(), fps=25)
    assert report.audio_jumps == []
    assert (report.audio_frames, report.audio_sample_rate) == (audio_packets(mp3), 44100)


def test_av_offsets_sees_flashes_inside_a_pillarbox(
    library: dict[str, Path], tmp_path: Path
) -> None:
    """A portrait picture boxed into 16:9 is less than a third of the frame: a flash must
    still count, and the boxing must not move it."""
    boxed = tmp_path / "boxed.ts"
    ffmpeg(
        "-i", str(library["hevc_portrait"]),
        "-vf", "scale=320:180:force_original_aspect_ratio=decrease,pad=320:180:-1:-1",
        *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ac", "2", str(boxed)),
    )  # fmt: skip
    offsets = av_offsets(boxed)
    assert len(offsets) == 2, offsets
    assert all(abs(offset) <= 0.02 for offset in offsets), offsets
