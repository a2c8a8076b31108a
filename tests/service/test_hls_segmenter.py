"""service/hls/segmenter.py on synthetic MPEG-TS: cuts, tables, durations, breaks."""

from __future__ import annotations

import itertools

from service.hls.segmenter import Cut, Segmenter, avc_codec
from service.mpegts import PACKET_SIZE, packets, pid
from service.splice import write_ts

FRAME = 3600  # 25 fps
SECOND = 90_000
PMT_PID, VIDEO, AUDIO, SDT = 0x1000, 0x100, 0x101, 0x11
SPS = b"\x00\x00\x00\x01\x67\x64\x00\x1f\xac"
START = 10 * SECOND


def _packet(packet_pid: int, body: bytes, *, start: bool, keyframe: bool = False) -> bytes:
    header = bytes([0x47, (0x40 if start else 0) | packet_pid >> 8, packet_pid & 0xFF])
    stuffing = PACKET_SIZE - 4 - len(body)
    if stuffing == 0 and not keyframe:
        return header + b"\x10" + body
    # An adaptation field: the random access flag, and stuffing up to 188 bytes.
    length = stuffing - 1
    adaptation = bytes([length]) + (bytes([0x40 if keyframe else 0]) if length else b"")
    adaptation += b"\xff" * (length - 1)
    return header + b"\x30" + adaptation + body


def _section(table: bytes) -> bytes:
    return b"\x00" + table + b"\x00\x00\x00\x00"  # pointer field; the CRC is not checked


def tables() -> bytes:
    pat = _section(bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xE0 | PMT_PID >> 8, 0]))
    streams = bytes([0x1B, 0xE1, 0x00, 0xF0, 0, 0x0F, 0xE1, 0x01, 0xF0, 0])
    pmt = _section(bytes([0x02, 0xB0, 23, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0]) + streams)
    return (
        _packet(0, pat, start=True)
        + _packet(SDT, b"\x00\x42", start=True)
        + _packet(PMT_PID, pmt, start=True)
    )


def frame(pts: int, *, keyframe: bool) -> bytes:
    header = bytearray(b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01")
    write_ts(header, 9, pts)
    es = b"\x00\x00\x00\x01\x09\xf0" + (
        SPS + b"\x00\x00\x01\x65" if keyframe else b"\x00\x00\x01\x41"
    )
    video = _packet(VIDEO, bytes(header) + es, start=True, keyframe=keyframe)
    video += _packet(VIDEO, b"\x00" * 184, start=False)
    audio_header = bytearray(b"\x00\x00\x01\xc0\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01")
    write_ts(audio_header, 9, pts)
    return video + _packet(AUDIO, bytes(audio_header) + b"\xff\xf1", start=True)


def stream(keyframes: list[int], frames: int, *, start: int = START, tabled: bool = True) -> bytes:
    """`frames` frames from PTS `start`; the ones numbered in `keyframes` are keyframes,
    each after the tables (`tabled`) as ffmpeg writes them."""
    out = b""
    for n in range(frames):
        key = n in keyframes
        if key and (tabled or n == 0):
            out += tables()
        out += frame(start + n * FRAME, keyframe=key)
    return out


def cut(data: bytes, *, longest: float = 2.0, gop: float = 1.0) -> tuple[Segmenter, list[Cut]]:
    segmenter = Segmenter(round(longest * SECOND), round(gop * SECOND), FRAME)
    cuts: list[Cut] = []
    for at in range(0, len(data), 7 * PACKET_SIZE):  # any split into whole packets
        cuts += segmenter.feed(data[at : at + 7 * PACKET_SIZE])
    return segmenter, cuts


def test_two_gops_a_segment_each_starting_with_its_tables() -> None:
    data = stream(list(range(0, 250, 25)), 250)  # a keyframe a second, 10 s
    _, cuts = cut(data)
    assert [c.duration for c in cuts] == [2 * SECOND] * 4
    assert [c.pts for c in cuts] == [START + i * 2 * SECOND for i in range(4)]
    for c in cuts:
        assert [pid(p) for p in packets(c.data)][:4] == [0, SDT, PMT_PID, VIDEO]
        assert c.codec == "avc1.64001f" and not c.discontinuity
    # Not a packet lost or sent twice: the segments are the stream, in order.
    joined = b"".join(c.data for c in cuts)
    assert joined == data[: len(joined)]
    assert len(joined) == len(data) - len(stream([0, 25], 50))  # the last is unfinished


def test_the_tables_are_copied_in_front_when_the_keyframe_comes_without_them() -> None:
    _, cuts = cut(stream(list(range(0, 150, 25)), 150, tabled=False))
    assert len(cuts) == 2
    second = [pid(p) for p in packets(cuts[1].data)]
    assert second[:3] == [0, PMT_PID, VIDEO]
    assert second.count(0) == 1


def test_no_segment_outlasts_the_longest_when_keyframes_come_irregularly() -> None:
    # Items of 1.4 s: each starts with a keyframe, then one every second.
    keyframes = sorted({i * 35 + k for i in range(10) for k in (0, 25) if k < 35})
    _, cuts = cut(stream(keyframes, 350))
    assert cuts and all(0 < c.duration <= 2 * SECOND for c in cuts)
    for before, after in itertools.pairwise(cuts):
        assert before.pts + before.duration == after.pts


def test_a_new_timeline_ends_the_segment_at_its_last_frame() -> None:
    old = stream([0, 25, 50], 60)
    new = stream([0, 25, 50, 75], 100, start=START)  # back to the start of a timeline
    _, cuts = cut(old + new)
    assert cuts[0].duration == 2 * SECOND
    broken = cuts[1]
    assert broken.pts == START + 50 * FRAME and broken.duration == 10 * FRAME
    assert not broken.discontinuity
    assert cuts[2].discontinuity and cuts[2].pts == START
    assert not any(c.discontinuity for c in cuts[3:])


def test_restart_drops_the_unfinished_segment_and_marks_the_next() -> None:
    segmenter, cuts = cut(stream([0, 25, 50], 60))
    assert len(cuts) == 1
    segmenter.restart()
    later = segmenter.feed(stream([0, 25, 50], 60, start=START + 100 * FRAME))
    assert [(c.pts, c.discontinuity) for c in later] == [(START + 100 * FRAME, True)]


def test_nothing_before_the_first_keyframe_is_kept() -> None:
    data = stream([10, 35, 60], 70)
    _, cuts = cut(data)
    assert cuts[0].pts == START + 10 * FRAME
    assert pid(cuts[0].data) == 0


def test_codec_string_comes_from_the_sps() -> None:
    assert avc_codec(b"\x00\x00\x00\x01\x09\xf0" + SPS) == "avc1.64001f"
    assert avc_codec(b"\x00\x00\x01\x67\x42\xc0\x0d") == "avc1.42c00d"
    assert avc_codec(b"\x00\x00\x01\x41\x9a") is None
