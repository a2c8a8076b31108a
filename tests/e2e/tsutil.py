"""Reading captured MPEG-TS in tests: cut at a clean point, decode, DTS order."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from service.mpegts import PACKET_SIZE, packets, payload_unit_start


def cut_clean(data: bytes) -> bytes:
    """Whole packets up to (not including) the last packet that starts a PES or section.

    A capture stopped at an arbitrary byte ends inside a frame; cutting before the last
    unit start leaves only complete units, so a decoder sees no truncation.
    """
    data = data[: len(data) - len(data) % PACKET_SIZE]
    last = 0
    for index, packet in enumerate(packets(data)):
        if payload_unit_start(packet):
            last = index
    return data[: last * PACKET_SIZE]


def decode_errors(path: Path) -> str:
    """What `ffmpeg -v error` says decoding `path` (nothing for a clean stream)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip()


def ffprobe(path: Path, *args: str) -> dict[str, object]:
    """ffprobe's JSON for `path` with `args` (e.g. -show_streams)."""
    return ffprobe_url(str(path), *args)


def ffprobe_url(url: str, *args: str) -> dict[str, object]:
    """ffprobe's JSON for a file or URL (a stream: it reads what probing needs)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, url],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def probe_streams(path: Path) -> dict[str, object]:
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


def backwards_dts(path: Path) -> list[tuple[int, int, int]]:
    """(stream, previous dts, dts) for every packet whose DTS goes back within its stream."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    last: dict[int, int] = {}
    bad = []
    for line in result.stdout.splitlines():
        fields = line.strip().strip(",").split(",")
        if len(fields) < 2 or not fields[1] or fields[1] == "N/A":
            continue
        stream, dts = int(fields[0]), int(fields[1])
        if stream in last and dts < last[stream]:
            bad.append((stream, last[stream], dts))
        last[stream] = dts
    return bad


def packet_count(path: Path) -> int:
    return path.stat().st_size // PACKET_SIZE
