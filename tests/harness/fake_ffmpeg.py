#!/usr/bin/env python3
"""A stand-in for ffmpeg: plays a recorded TS file at a steady rate, then misbehaves on cue.

It answers the service's start-up checks as a working ffmpeg does (`-version`, a test
encode to `-f null -`), without counting them as spawns. It finds its channel in its
argv (`exstream_channel=N`); asked for the slate clip (`exstream_slate=1`) it writes the
recording once. The environment sets the rest:

- FAKE_FFMPEG_PLAN: a JSON object of channel -> comma-separated behaviours, one per
  spawn (the last repeats; "ok" for a channel not named): ok, slowterm (takes a second
  to exit on SIGTERM), stall, exit (code 1 after some output: the item failed), fail
  (code 1 at once, nothing written), crash (killed by a signal), garbage, stop (SIGSTOP);
- FAKE_FFMPEG_LOG: each spawn appends "<channel> <unix time> <pid>" there (the plan
  counts spawns in it);
- FAKE_FFMPEG_SOURCE: the recording (default: a PAT and null packets);
- FAKE_FFMPEG_RATE: bytes a second (default 470 000, faster than any recording here),
  in FAKE_FFMPEG_WRITES writes a second (default 50).
"""

from __future__ import annotations

import os
import signal
import sys
import time

# Spawn latency is part of what benches measure: only modules that start fast (not
# pathlib or json) at the top.

PACKET = 188
RATE = 470_000.0
WRITES = 50
EXIT_DELAY = 1.0
FOREVER = 3600.0
# A PAT (program 1, PMT on PID 0x100), then null packets: MPEG-TS that carries nothing.
# The service drops null packets: the PATs are what a viewer gets.
PAT = bytes.fromhex("474000100000b00d0001c100000001e100e8f95e7d").ljust(PACKET, b"\xff")
NULL = bytes.fromhex("471fff10").ljust(PACKET, b"\xff")
EMPTY_TS = PAT + NULL * 20


def channel_of(argv: list[str]) -> str:
    for arg in argv:
        number = arg.removeprefix("exstream_channel=")
        if number != arg and number.isdigit():
            return number
    return "slate"


def behaviours(channel: str) -> list[str]:
    plan = os.environ.get("FAKE_FFMPEG_PLAN")
    if not plan:
        return ["ok"]
    import json  # only with a plan (see the imports)

    return str(json.loads(plan).get(channel, "ok")).split(",")


def spawn_index(log: str | None, channel: str) -> int:
    """How many spawns of `channel` the log holds before this one (0 without a log)."""
    if not log:
        return 0
    with open(log, "a+", encoding="utf-8") as f:  # noqa: PTH123 (see the imports)
        f.seek(0)
        count = sum(1 for line in f if line.split(" ", 1)[0] == channel)
        f.write(f"{channel} {time.time():.6f} {os.getpid()}\n")
    return count


def play(source: bytes, seconds: float, rate: float) -> None:
    """`source` over and over to stdout at `rate` bytes a second, for `seconds`."""
    writes = float(os.environ.get("FAKE_FFMPEG_WRITES", WRITES))
    step = PACKET * max(1, int(rate / PACKET / writes))
    started = time.monotonic()
    sent = offset = 0
    while time.monotonic() < started + seconds:
        chunk = source[offset : offset + step]
        offset = offset + step if offset + step < len(source) else 0
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        sent += len(chunk)
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))


def slow_exit(signum: int, frame: object) -> None:
    time.sleep(EXIT_DELAY)
    sys.exit(0)


def read_source() -> bytes:
    path = os.environ.get("FAKE_FFMPEG_SOURCE")
    if not path:
        return EMPTY_TS
    with open(path, "rb") as f:  # noqa: PTH123 (see the imports)
        return f.read()


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if "-version" in sys.argv:
        print("ffmpeg version stand-in (tests/harness/fake_ffmpeg.py)")
        return 0
    if sys.argv[-3:] == ["-f", "null", "-"]:  # a test encode: nothing to write
        return 0
    source = read_source()
    if "exstream_slate=1" in sys.argv:  # the slate clip: the recording will do
        sys.stdout.buffer.write(source)
        return 0
    channel = channel_of(sys.argv)
    plan = behaviours(channel)
    index = spawn_index(os.environ.get("FAKE_FFMPEG_LOG"), channel)
    behaviour = plan[min(index, len(plan) - 1)]
    rate = float(os.environ.get("FAKE_FFMPEG_RATE", RATE))
    if behaviour == "ok":
        play(source, float("inf"), rate)
    elif behaviour == "slowterm":
        signal.signal(signal.SIGTERM, slow_exit)
        play(source, float("inf"), rate)
    elif behaviour == "stall":
        play(source, 1.0, rate)
        while True:
            time.sleep(FOREVER)
    elif behaviour == "exit":
        play(source, 0.3, rate)
        return 1
    elif behaviour == "fail":
        return 1
    elif behaviour == "crash":
        play(source, 0.3, rate)
        os.kill(os.getpid(), signal.SIGKILL)
    elif behaviour == "garbage":
        play(os.urandom(1 << 20), float("inf"), rate)
    elif behaviour == "stop":
        play(source, 1.0, rate)
        os.kill(os.getpid(), signal.SIGSTOP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
