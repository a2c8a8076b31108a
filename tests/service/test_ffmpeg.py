from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from service.config import FfmpegSettings
from service.ffmpeg import (
    ManagedProcess,
    Part,
    Segment,
    code_class,
    concat_list,
    segment_argv,
    slate_argv,
)
from tests.polling import wait_until

Clips = Callable[[int, float], list[Path]]
SETTINGS = FfmpegSettings(width=320, height=240, fps=25, video_bitrate=500_000, gop_seconds=1.0)


def option(argv: list[str], name: str, after: str | None = None) -> str:
    start = argv.index(after) if after else 0
    return argv[argv.index(name, start) + 1]


def test_segment_argv_plays_the_concat_list_in_real_time() -> None:
    segment = Segment((Part("/m/a.mp4", 0.0, 10.0), Part("/m/b.mp4", 2.0, 5.0)), seek=3.25)
    argv = segment_argv(SETTINGS, segment, Path("/tmp/list.ffconcat"), ts_offset=12.5)
    assert argv[0] == "ffmpeg"
    assert "-re" in argv
    assert argv.index("-ss") < argv.index("-i")
    assert option(argv, "-ss") == "3.250"
    assert option(argv, "-f") == "concat"
    assert option(argv, "-i") == "/tmp/list.ffconcat"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:v:0", "0:a:0"]
    assert "anullsrc" not in " ".join(argv)
    assert option(argv, "-c:v") == "libx264"
    assert "scale=320:240" in option(argv, "-vf")
    assert "fps=25" in option(argv, "-vf")
    assert option(argv, "-b:v") == "500000"
    assert option(argv, "-g") == "25"  # gop_seconds * fps
    assert option(argv, "-keyint_min") == "25"
    assert option(argv, "-c:a") == "aac"
    assert option(argv, "-ar") == "48000"
    assert option(argv, "-ac") == "2"
    assert option(argv, "-output_ts_offset") == "12.500"
    assert argv[-1] == "pipe:1"
    assert option(argv, "-f", after="-c:a") == "mpegts"


def test_segment_argv_without_seek_or_audio() -> None:
    segment = Segment((Part("/m/a.mp4", 0.0, 10.0, has_audio=False),))
    argv = segment_argv(SETTINGS, segment, Path("/tmp/l"))
    assert "-ss" not in argv
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == ["/tmp/l", "anullsrc=r=48000:cl=stereo"]
    assert option(argv, "-f", after="/tmp/l") == "lavfi"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:v:0", "1:a:0"]
    assert "-shortest" in argv


def test_slate_argv_uses_lavfi() -> None:
    argv = slate_argv(SETTINGS)
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == ["smptehdbars=size=320x240:rate=25", "anullsrc=r=48000:cl=stereo"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-f"][:2] == ["lavfi", "lavfi"]
    assert argv[-1] == "pipe:1"


def test_first_part_inpoint_becomes_the_seek() -> None:
    segment = Segment((Part("/m/a.mp4", 20.0, 10.0), Part("/m/b.mp4", 0.0, 5.0)), seek=2.5)
    assert concat_list(segment) == (
        "ffconcat version 1.0\n"
        "file '/m/a.mp4'\n"
        "duration 30.000000\n"
        "file '/m/b.mp4'\n"
        "duration 5.000000\n"
    )
    assert option(segment_argv(SETTINGS, segment, Path("/l")), "-ss") == "22.500"


def test_concat_list_quotes_paths_and_writes_points() -> None:
    segment = Segment((Part("/m/it's here.mp4", 0.0, 10.0), Part("/m/b.mp4", 1.5, 2.25)))
    assert concat_list(segment) == (
        "ffconcat version 1.0\n"
        "file '/m/it'\\''s here.mp4'\n"
        "duration 10.000000\n"
        "file '/m/b.mp4'\n"
        "inpoint 1.500000\n"
        "duration 2.250000\n"
    )


def test_segment_duration_and_audio() -> None:
    segment = Segment((Part("a", 0.0, 10.0), Part("b", 1.0, 5.0, has_audio=False)), seek=4.0)
    assert segment.duration == 11.0
    assert segment.has_audio
    assert not Segment(()).has_audio


def test_code_class() -> None:
    assert [code_class(c) for c in (0, 1, 255, -9)] == ["ok", "error", "error", "signal"]


def to_file(argv: list[str], out: Path) -> list[str]:
    """The same command writing to a file as fast as it can: only -re and pipe:1 change."""
    assert argv.count("-re") >= 1
    assert argv.count("pipe:1") == 1
    changed = [out.as_posix() if a == "pipe:1" else a for a in argv if a != "-re"]
    assert len(changed) == len(argv) - argv.count("-re")
    return changed


def probe_packets(path: Path) -> list[tuple[int, int]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries",
         "packet=stream_index,dts", str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return [
        (int(p["stream_index"]), int(p["dts"])) for p in json.loads(out)["packets"] if "dts" in p
    ]


def decode_errors(path: Path) -> str:
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr


def output_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries", "format=duration", str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return float(json.loads(out)["format"]["duration"])


def assert_dts_forward(packets: list[tuple[int, int]]) -> None:
    last: dict[int, int] = {}
    for stream, dts in packets:
        assert dts > last.get(stream, -(2**63)), (stream, dts, last.get(stream))
        last[stream] = dts
    assert set(last) == {0, 1}  # video and audio


@pytest.mark.parametrize("audio", [True, False], ids=["with-audio", "silent"])
def test_real_two_item_segment_decodes_cleanly(tmp_path: Path, clips: Clips, audio: bool) -> None:
    first, second = clips(2, 2.0)
    quoted = tmp_path / "it's a clip.mp4"  # exercises concat_list quoting for real
    shutil.copy(second, quoted)
    if not audio:
        silent = tmp_path / "silent"
        silent.mkdir()
        for source in (first, quoted):
            target = silent / source.name
            subprocess.run(
                ["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), "-an",
                 "-c", "copy", str(target)],
                check=True, timeout=60,
            )  # fmt: skip
        first, quoted = silent / first.name, silent / quoted.name
    segment = Segment(
        (Part(str(first), 0.5, 1.5, audio), Part(str(quoted), 0.0, 2.0, audio)), seek=0.25
    )
    listing = tmp_path / "list.ffconcat"
    listing.write_text(concat_list(segment), encoding="utf-8")
    out = tmp_path / "out.ts"
    argv = to_file(segment_argv(SETTINGS, segment, listing), out)
    subprocess.run(argv, check=True, timeout=120)
    assert decode_errors(out) == ""
    assert_dts_forward(probe_packets(out))
    assert output_duration(out) == pytest.approx(segment.duration, abs=0.3)


def test_real_slate_decodes_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "slate.ts"
    argv = to_file(slate_argv(SETTINGS), out)
    argv[-1:-1] = ["-t", "1"]
    subprocess.run(argv, check=True, timeout=120)
    assert decode_errors(out) == ""
    assert_dts_forward(probe_packets(out))


def group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return alive


async def wait_group_gone(pgid: int) -> None:
    await wait_until(lambda: not group_alive(pgid), 10.0, f"process group {pgid} to end")


async def wait_group_size(pgid: int, size: int) -> None:
    await wait_until(lambda: len(group_alive(pgid)) >= size, 10.0, "the children to start")


async def test_leaving_the_context_ends_the_whole_group() -> None:
    async with ManagedProcess(["sh", "-c", "sleep 100 & sleep 100"]) as proc:
        assert proc.pid is not None
        pgid = os.getpgid(proc.pid)
        assert pgid == proc.pid  # its own session and group
        await wait_group_size(pgid, 3)
    await wait_group_gone(pgid)
    assert proc.returncode == -signal.SIGTERM


async def test_a_child_ignoring_sigterm_is_killed() -> None:
    argv = ["sh", "-c", "trap '' TERM; sleep 100 & sleep 100; sleep 100"]
    proc = ManagedProcess(argv, term_timeout=0.2)
    await proc.start()
    assert proc.pid is not None
    pgid = proc.pid
    await wait_group_size(pgid, 2)
    assert await proc.terminate() == -signal.SIGKILL
    await wait_group_gone(pgid)


async def test_cancelled_task_still_ends_the_group() -> None:
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        async with ManagedProcess(["sh", "-c", "sleep 100 & sleep 100"]) as proc:
            assert proc.pid is not None
            started.set_result(proc.pid)
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(run())
    pgid = await asyncio.wait_for(started, 10.0)
    await wait_group_size(pgid, 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_group_gone(pgid)


async def test_stderr_tail_and_exit_code() -> None:
    argv = ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i >&2; done; exit 3"]
    async with ManagedProcess(argv, stderr_lines=2) as proc:
        assert await proc.wait() == 3
    assert list(proc.stderr_tail) == ["line4", "line5"]
    assert code_class(proc.returncode or 0) == "error"
