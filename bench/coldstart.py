"""Cold start: an on-demand channel, from the request to its first decodable frame.

    python -m bench.coldstart [--runs 20] [--channels 4] [--source ffmpeg|standin]

Runs `exstream serve` with `--channels` on-demand channels (idle_grace `--idle-grace` s)
playing one 640x360 H.264/AAC clip made with ffmpeg's lavfi sources. Each run takes
the next channel, waits until it is stopped (no process), then opens its stream and
parses the bytes as they come: the time to the first byte, and the time until the
first keyframe after PAT/PMT is complete (the next video packet that starts a PES).
With --verify (default on) the bytes up to then are decoded with
`ffmpeg -frames:v 1`, to check that the frame really decodes.

--source ffmpeg (default) is the real thing: exstream spawns ffmpeg, which re-encodes
the clip (libx264, zerolatency) at [ffmpeg] video_bitrate. --source standin replaces
ffmpeg by a process that loops a pre-encoded TS file, which measures exstream's own
part of the start-up (pool, spawn, hub) without the encoder's.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench._common import bench_parser, make_ts_clip, percentile, wait_for
from service.demo import make_clip
from service.mpegts import PACKET_SIZE, Aligner, StartPoint, packets
from tests.harness.config import write_config
from tests.harness.server import run_server
from tests.harness.standin import write_stand_in

SOURCES = {"ffmpeg": "real ffmpeg re-encoding", "standin": "a stand-in looping a TS file of"}


@dataclass
class ColdStart:
    channel: int
    first_byte: float
    frame: float  # first keyframe complete
    decodes: bool | None


def first_frame(base_url: str, channel: int, timeout: float) -> tuple[float, float, bytes]:
    """Seconds to the first byte and to the first complete keyframe; the bytes read."""
    aligner, start = Aligner(), StartPoint()
    data = bytearray()
    keyframe_seen = False
    first_byte = 0.0
    started = time.monotonic()
    with (
        httpx.Client(base_url=base_url, timeout=timeout) as client,
        client.stream("GET", f"/stream/{channel}.ts") as response,
    ):
        if response.status_code != 200:
            raise SystemExit(f"channel {channel}: HTTP {response.status_code} {response.read()!r}")
        for chunk in response.iter_raw():
            if not first_byte:
                first_byte = time.monotonic() - started
            aligned = aligner.feed(chunk)
            data += aligned
            if not keyframe_seen:
                offset = start.scan(aligned)
                if offset is None:
                    continue
                keyframe_seen = True
                rest = aligned[offset + PACKET_SIZE :]
            else:
                rest = aligned
            for packet in packets(rest):
                if ((packet[1] & 0x1F) << 8 | packet[2]) == start.video_pid and packet[1] & 0x40:
                    return first_byte, time.monotonic() - started, bytes(data)
            if time.monotonic() - started > timeout:
                break
    raise SystemExit(f"channel {channel}: no complete keyframe within {timeout:g}s")


def decodes(data: bytes, directory: Path) -> bool:
    path = directory / "capture.ts"
    path.write_bytes(data)
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-frames:v", "1", "-f", "framemd5",
         "-"],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    frames = [line for line in result.stdout.splitlines() if line and not line.startswith(b"#")]
    return result.returncode == 0 and len(frames) >= 1


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--idle-grace", type=float, default=0.5)
    parser.add_argument("--source", choices=("ffmpeg", "standin"), default="ffmpeg")
    parser.add_argument("--mbits", type=float, default=4.0, help="channel bit rate")
    parser.add_argument("--timeout", type=float, default=15.0, help="per cold start")
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_clip(root / "media" / "clip.mp4", 30, size="640x360")
        ffmpeg: dict[str, object] = {
            "width": 640,
            "height": 360,
            "video_bitrate": int(args.mbits * 1e6 * 0.95),
        }
        if args.source == "standin":
            ts = make_ts_clip(root / "clip.ts", seconds=10, mbits=args.mbits)
            standin = write_stand_in(root / "ffmpeg-standin", rate=args.mbits * 1e6 / 8, source=ts)
            ffmpeg["ffmpeg"] = str(standin)
        config = write_config(
            root,
            [
                {
                    "number": n,
                    "name": f"Cold {n}",
                    "media": [str(clip)],
                    "idle_grace": args.idle_grace,
                }
                for n in range(1, args.channels + 1)
            ],
            encoding={},
            ffmpeg=ffmpeg,
            playout={"min_horizon": 3600},
        )
        results: list[ColdStart] = []
        print(
            f"source: {args.source} ({SOURCES[args.source]}"
            f" a 640x360 clip at ~{args.mbits:g} Mbit/s); {args.channels} on-demand channels,"
            f" idle_grace {args.idle_grace:g} s",
            flush=True,
        )
        with run_server(config, log_level="INFO", stop_timeout=30) as server:
            base = server.base_url

            def stopped(number: int) -> bool:
                status = httpx.get(f"{base}/api/channels/{number}", timeout=10).json()
                return status["state"] == "stopped" and status["pid"] is None

            for run in range(args.runs):
                number = run % args.channels + 1
                wait_for(functools.partial(stopped, number), 60, f"channel {number} to stop")
                first_byte, frame, data = first_frame(base, number, args.timeout)
                ok = decodes(data, root) if args.verify else None
                results.append(ColdStart(number, first_byte, frame, ok))
                print(
                    f"run {run + 1:>3} channel {number}: first byte {first_byte * 1000:6.0f} ms,"
                    f" first keyframe complete {frame * 1000:6.0f} ms"
                    f"{'' if ok is None else ', decodes' if ok else ', DOES NOT DECODE'}",
                    flush=True,
                )
    frames = [r.frame for r in results]
    firsts = [r.first_byte for r in results]
    print(
        f"{len(results)} cold starts ({args.source}): first decodable frame"
        f" p50 {percentile(frames, 50) * 1000:.0f} ms, p99 {percentile(frames, 99) * 1000:.0f} ms,"
        f" max {max(frames) * 1000:.0f} ms (goal < 1000 ms); first byte"
        f" p50 {percentile(firsts, 50) * 1000:.0f} ms, p99 {percentile(firsts, 99) * 1000:.0f} ms;"
        f" {sum(r.decodes is True for r in results)}/{len(results)} verified by decoding"
    )
    return 0 if all(r.decodes is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
