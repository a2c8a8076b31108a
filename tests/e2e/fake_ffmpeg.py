#!/usr/bin/env python3
"""A stand-in for ffmpeg in fault tests: plays a recorded TS file, then misbehaves on cue.

It finds its channel in its argv (`exstream_channel=N`) and reads its
plan from $FAKE_FFMPEG_PLAN, a JSON object of channel -> comma-separated behaviours, one
per spawn (the last repeats): ok, slowterm, stall, exit (code 1: the item failed),
crash (killed by a signal), garbage, stop. Each spawn appends a line
"<channel> <unix time> <pid>" to $FAKE_FFMPEG_LOG.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

CHUNK = 188 * 50
PACE = 0.02  # about 470 kB/s
EXIT_DELAY = 1.0
FOREVER = 3600.0


def channel_of(argv: list[str]) -> str:
    for arg in argv:
        match = re.search(r"^exstream_channel=(\d+)$", arg)
        if match:
            return match.group(1)
    return "slate"


def spawn_index(log: Path, channel: str) -> int:
    with log.open("a+", encoding="utf-8") as f:
        f.seek(0)
        count = sum(1 for line in f if line.split(" ", 1)[0] == channel)
        f.write(f"{channel} {time.time():.6f} {os.getpid()}\n")
    return count


def play(source: bytes, seconds: float) -> None:
    end = time.monotonic() + seconds
    offset = 0
    while time.monotonic() < end:
        chunk = source[offset : offset + CHUNK]
        if not chunk:
            offset = 0
            continue
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        offset += CHUNK
        time.sleep(PACE)


def slow_exit(signum: int, frame: object) -> None:
    time.sleep(EXIT_DELAY)
    sys.exit(0)


def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if "exstream_slate=1" in sys.argv:  # the slate clip: the recording will do
        sys.stdout.buffer.write(Path(os.environ["FAKE_FFMPEG_SOURCE"]).read_bytes())
        return 0
    channel = channel_of(sys.argv)
    plan = json.loads(os.environ.get("FAKE_FFMPEG_PLAN", "{}")).get(channel, "ok").split(",")
    index = spawn_index(Path(os.environ["FAKE_FFMPEG_LOG"]), channel)
    behaviour = plan[min(index, len(plan) - 1)]
    source = Path(os.environ["FAKE_FFMPEG_SOURCE"]).read_bytes()
    if behaviour == "ok":
        play(source, float("inf"))
    elif behaviour == "slowterm":  # takes a second to exit on SIGTERM
        signal.signal(signal.SIGTERM, slow_exit)
        play(source, float("inf"))
    elif behaviour == "stall":
        play(source, 1.0)
        while True:
            time.sleep(FOREVER)
    elif behaviour == "exit":
        play(source, 0.3)
        return 1
    elif behaviour == "crash":
        play(source, 0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    elif behaviour == "garbage":
        while True:
            sys.stdout.buffer.write(os.urandom(CHUNK))
            sys.stdout.buffer.flush()
            time.sleep(PACE)
    elif behaviour == "stop":
        play(source, 1.0)
        os.kill(os.getpid(), signal.SIGSTOP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
