from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    SYNC_BYTE,
    VIDEO_STREAM_TYPES,
    Aligner,
    StartPoint,
    packets,
    parse_pat,
    parse_pmt,
    payload,
    payload_unit_start,
    pid,
    random_access,
)
from tests.e2e.tsutil import ffprobe

SECONDS = 4
FPS = 25
GOP = 25  # one keyframe a second


def make_ts(path: Path, seconds: int = SECONDS) -> Path:
    """A small H.264/AAC MPEG-TS file with a fixed GOP, made with lavfi."""
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-nostdin",
            "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS}:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=500:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", str(GOP),
            "-keyint_min", str(GOP), "-sc_threshold", "0",
            "-c:a", "aac", "-shortest", "-f", "mpegts", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


def ffprobe_json(path: Path, *args: str) -> dict[str, list[dict[str, object]]]:
    return ffprobe(path, *args)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ts(tmp_path_factory.mktemp("ts") / "gop.ts")


@pytest.fixture(scope="module")
def ts_bytes(ts_file: Path) -> bytes:
    data = ts_file.read_bytes()
    assert len(data) % PACKET_SIZE == 0
    return data


def packet(
    packet_pid: int,
    *,
    start: bool = False,
    adaptation: bytes | None = None,
    body: bytes = b"",
) -> bytes:
    control = 0x30 if adaptation is not None else 0x10
    header = bytes([SYNC_BYTE, (0x40 if start else 0) | (packet_pid >> 8), packet_pid & 0xFF])
    header += bytes([control])
    if adaptation is not None:
        header += bytes([len(adaptation)]) + adaptation
    return (header + body).ljust(PACKET_SIZE, b"\xff")


def test_header_fields_of_built_packets() -> None:
    keyframe = packet(0x100, start=True, adaptation=b"\x40", body=b"\x00\x00\x01")
    assert pid(keyframe) == 0x100
    assert payload_unit_start(keyframe)
    assert random_access(keyframe)
    assert payload(keyframe)[:3] == b"\x00\x00\x01"
    plain = packet(0x1FFE, body=b"abc")
    assert pid(plain) == 0x1FFE
    assert not payload_unit_start(plain)
    assert not random_access(plain)
    assert payload(plain)[:3] == b"abc"
    assert not random_access(packet(0x100, adaptation=b""))  # zero-length adaptation field
    adaptation_only = bytearray(packet(0x100, adaptation=b"\x40"))
    adaptation_only[3] = 0x20
    assert payload(bytes(adaptation_only)) == b""


def test_pat_and_pmt_of_real_ffmpeg_output(ts_file: Path, ts_bytes: bytes) -> None:
    probe = ffprobe_json(ts_file, "-show_entries", "program=pmt_pid:stream=id,codec_type")
    expected_pmt = {int(str(p["pmt_pid"])) for p in probe["programs"]}
    expected_streams = {int(str(s["id"]), 16): s["codec_type"] for s in probe["streams"]}
    pat = next(p for p in packets(ts_bytes) if pid(p) == PAT_PID)
    assert set(parse_pat(pat)) == expected_pmt
    pmt = next(p for p in packets(ts_bytes) if pid(p) in expected_pmt)
    streams = parse_pmt(pmt)
    assert set(streams) == set(expected_streams)
    for es_pid, stream_type in streams.items():
        is_video = stream_type in VIDEO_STREAM_TYPES
        assert is_video == (expected_streams[es_pid] == "video")
    # Either parser rejects the other's table.
    assert parse_pmt(pat) == {}
    assert parse_pat(pmt) == []


def test_start_point_finds_every_keyframe(ts_file: Path, ts_bytes: bytes) -> None:
    probe = ffprobe_json(ts_file, "-select_streams", "v", "-show_entries", "packet=flags,pos")
    keyframe_positions = [int(str(p["pos"])) for p in probe["packets"] if "K" in str(p["flags"])]
    assert len(keyframe_positions) == SECONDS * FPS // GOP
    start = StartPoint()
    found = []
    for offset in range(0, len(ts_bytes), PACKET_SIZE):
        if start.scan(ts_bytes[offset : offset + PACKET_SIZE]) == 0:
            found.append(offset)
    # ffprobe's pos is the packet carrying the PES start: where the keyframe begins.
    assert found == keyframe_positions
    assert start.video_pid is not None
    # It keeps the latest PAT and PMT seen.
    pats = [bytes(p) for p in packets(ts_bytes) if pid(p) == PAT_PID]
    assert start.pat == pats[-1]
    assert parse_pmt(start.pmt)
    # One call over everything: the offset of the last keyframe.
    assert StartPoint().scan(ts_bytes) == keyframe_positions[-1]


def test_start_point_sees_no_keyframe_before_the_pmt(ts_bytes: bytes) -> None:
    video = [bytes(p) for p in packets(ts_bytes) if random_access(p) and payload_unit_start(p)]
    assert video
    assert StartPoint().scan(b"".join(video)) is None


def split_points(data: st.DataObject, size: int) -> list[int]:
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=size), max_size=30))
    return sorted({0, size, *cuts})


def feed_all(aligner: Aligner, data: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    for a, b in itertools.pairwise(cuts):
        chunk = aligner.feed(data[a:b])
        assert len(chunk) % PACKET_SIZE == 0
        assert all(chunk[i] == SYNC_BYTE for i in range(0, len(chunk), PACKET_SIZE))
        out += chunk
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_split_gives_back_the_same_packets(ts_bytes: bytes, data: st.DataObject) -> None:
    # A lone first packet waits for the next one to confirm it; from two packets on,
    # everything comes out.
    count = data.draw(st.integers(min_value=2, max_value=120))
    first = data.draw(st.integers(min_value=0, max_value=200))
    stream = ts_bytes[first * PACKET_SIZE : (first + count) * PACKET_SIZE]
    cuts = split_points(data, len(stream))
    aligner = Aligner()
    assert feed_all(aligner, stream, cuts) == stream
    assert aligner.skipped == 0


garbage = st.binary(min_size=1, max_size=500).map(lambda b: b.replace(b"G", b"g"))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_garbage_is_skipped_and_counted_the_same_for_any_split(
    ts_bytes: bytes, data: st.DataObject
) -> None:
    count = data.draw(st.integers(min_value=1, max_value=40))
    # No sync byte inside these packets: a real payload can, rarely, line up with a later
    # sync byte and be (rightly) taken for a packet start, which a model cannot predict.
    originals = [
        ts_bytes[i * PACKET_SIZE : i * PACKET_SIZE + 1]
        + ts_bytes[i * PACKET_SIZE + 1 : (i + 1) * PACKET_SIZE].replace(b"G", b"g")
        for i in range(count)
    ]
    junk = data.draw(st.dictionaries(st.integers(min_value=0, max_value=count - 1), garbage))
    stream = b"".join(junk.get(i, b"") + p for i, p in enumerate(originals))
    # In sync, a packet is taken when it follows a taken packet directly; out of sync
    # (at the start, after garbage) only when the next packet directly follows it.
    taken: list[bool] = []
    for i in range(count):
        in_sync = i > 0 and i not in junk and taken[i - 1]
        confirmed = i + 1 < count and i + 1 not in junk
        taken.append(in_sync or confirmed)
    expected = b"".join(p for p, keep in zip(originals, taken, strict=True) if keep)
    aligner = Aligner()
    assert feed_all(aligner, stream, split_points(data, len(stream))) == expected
    waiting = 0 if taken[-1] else PACKET_SIZE  # an unconfirmed last packet waits
    assert aligner.skipped == len(stream) - len(expected) - waiting


@settings(max_examples=100, deadline=None)
@given(data=st.data(), junk=garbage)
def test_garbage_before_the_stream_loses_nothing(
    ts_bytes: bytes, data: st.DataObject, junk: bytes
) -> None:
    stream = ts_bytes[: 30 * PACKET_SIZE]
    aligner = Aligner()
    out = feed_all(aligner, junk + stream, split_points(data, len(junk) + len(stream)))
    assert out == stream
    assert aligner.skipped == len(junk)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), noise=st.binary(max_size=3000))
def test_arbitrary_bytes_give_split_independent_whole_packets(
    data: st.DataObject, noise: bytes
) -> None:
    whole = Aligner()
    expected = whole.feed(noise)
    chunked = Aligner()
    assert feed_all(chunked, noise, split_points(data, len(noise))) == expected
    assert chunked.skipped == whole.skipped
    assert whole.skipped + len(expected) <= len(noise)


def test_trailing_partial_packet_is_held_back() -> None:
    aligner = Aligner()
    one = packet(0x100, body=b"x")
    assert aligner.feed(one + one[:100]) == one
    assert aligner.feed(one[100:]) == one
    assert aligner.feed(b"\x00" * 1000) == b""
    # Out of sync now: a packet waits until the next one confirms it.
    assert aligner.feed(one) == b""
    assert aligner.feed(one[:1]) == one
    assert aligner.feed(one[1:] + one) == one + one
    assert aligner.skipped == 1000
    aligner.feed(one[:50])
    aligner.reset()
    assert aligner.feed(one + one) == one + one  # the partial packet is forgotten
