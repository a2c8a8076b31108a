from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

import service.ffmpeg
from service.config import FfmpegSettings
from service.ffmpeg import code_class, item_argv, slate_argv
from service.grid import grid_frames
from service.media import MediaItem, item_from_probe
from service.playout import ItemPlan
from service.process import ManagedProcess
from tests.e2e.tsutil import decode_errors, ffprobe
from tests.harness.processes import run_python
from tests.polling import wait_until

SETTINGS = FfmpegSettings(width=320, height=240, fps=25, video_bitrate=500_000, gop_seconds=1.0)


def option(argv: list[str], name: str, after: str | None = None) -> str:
    start = argv.index(after) if after else 0
    return argv[argv.index(name, start) + 1]


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def av_item(path: str = "/m/a.mp4", **changes: object) -> MediaItem:
    fields: dict[str, object] = {
        "path": path,
        "duration": 60.0,
        "title": "a",
        "video_codec": "h264",
        "audio_codec": "aac",
        "width": 640,
        "height": 360,
        "video_index": 0,
        "audio_index": 1,
    }
    fields.update(changes)
    return MediaItem(**fields)  # type: ignore[arg-type]


def plan_of(item: MediaItem, seek: float = 0.0, frames: int = 200) -> ItemPlan:
    return ItemPlan(item, seek, frames, 1000.0, 1000.0 + frames / SETTINGS.fps)


# --- grid_frames ---------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "frames"), [(25, 8), (30, 16), (24, 64), (60, 32), (50, 16)])
def test_grid_frames_of_common_rates(fps: int, frames: int) -> None:
    assert grid_frames(fps) == frames


@given(st.integers(min_value=1, max_value=240))
def test_grid_is_the_shortest_whole_number_of_aac_frames(fps: int) -> None:
    # k video frames are k * 48000 / fps samples: whole AAC frames when fps * 1024
    # divides k * 48000; the smallest such k, worked out another way.
    expected = fps * 1024 // math.gcd(48_000, fps * 1024)
    grid = grid_frames(fps)
    assert grid == expected
    assert (grid * 48_000) % (fps * 1024) == 0


def test_item_plan_seconds() -> None:
    assert plan_of(av_item(), frames=200).seconds(25) == 8.0
    assert plan_of(av_item(), frames=48).seconds(24) == 2.0


# --- item_argv and slate_argv (pure) -----------------------------------------------


def test_item_argv_seeks_normalises_and_encodes_exactly_the_planned_frames() -> None:
    argv = item_argv(SETTINGS, plan_of(av_item(), seek=12.3456, frames=200), "7")
    assert argv[0] == "ffmpeg"
    assert "-re" not in argv  # as fast as the pipe takes it: the pacer keeps time
    assert argv.index("-ss") < argv.index("-i")
    assert option(argv, "-ss") == "12.346"
    assert options(argv, "-i") == ["/m/a.mp4"]
    graph = option(argv, "-filter_complex")
    video, audio = graph.split(";")
    assert video.startswith("[0:0]")
    for step in (
        "scale=320:240:force_original_aspect_ratio=decrease",
        "pad=320:240:(ow-iw)/2:(oh-ih)/2",
        "setsar=1",
        "fps=25",
        "format=yuv420p",
        "trim=end_frame=200",
    ):
        assert step in video
    assert "yadif" not in video
    assert video.endswith("[v]")
    assert audio.startswith("[0:1]aresample=48000")
    assert "channel_layouts=stereo" in audio
    assert "atrim=end_sample=384000" in audio  # 200 frames at 25 fps: 8 s at 48 kHz
    assert audio.endswith("[a]")
    assert options(argv, "-map") == ["[v]", "[a]"]
    assert option(argv, "-metadata") == "exstream_channel=7"
    assert option(argv, "-c:v") == "libx264"
    assert option(argv, "-bf") == "0"
    assert option(argv, "-tune") == "zerolatency"
    assert option(argv, "-g") == "25"  # gop_seconds * fps
    assert option(argv, "-keyint_min") == "25"
    assert option(argv, "-b:v") == "500000"
    assert option(argv, "-c:a") == "aac"
    assert option(argv, "-ar") == "48000"
    assert option(argv, "-ac") == "2"
    assert option(argv, "-f", after="-c:a") == "mpegts"
    assert option(argv, "-pes_payload_size") == "0"
    assert argv[-1] == "pipe:1"


def test_item_argv_maps_the_probed_stream_indexes() -> None:
    item = av_item(video_index=2, audio_index=5, interlaced=True)
    argv = item_argv(SETTINGS, plan_of(item, frames=16), "1")
    assert "-ss" not in argv  # from the start: no seek at all
    video, audio = option(argv, "-filter_complex").split(";")
    assert video.startswith("[0:2]yadif=")
    assert audio.startswith("[0:5]")


def test_item_argv_for_video_only_adds_silence() -> None:
    item = av_item(audio_codec=None, audio_index=None)
    argv = item_argv(SETTINGS, plan_of(item, frames=16), "1")
    assert options(argv, "-i") == ["/m/a.mp4", "anullsrc=r=48000:cl=stereo"]
    assert option(argv, "-f", after="/m/a.mp4") == "lavfi"
    _, audio = option(argv, "-filter_complex").split(";")
    assert audio.startswith("[1:a]atrim=end_sample=30720")


def test_item_argv_for_audio_with_cover_loops_the_unseeked_picture() -> None:
    item = av_item(video_codec="none", video_index=None, audio_index=0, cover_index=1)
    argv = item_argv(SETTINGS, plan_of(item, seek=5.0, frames=16), "1")
    # The audio from the seek on, the picture from the file's start: its only frame.
    assert options(argv, "-i") == ["/m/a.mp4", "/m/a.mp4"]
    first, second = [i for i, a in enumerate(argv) if a == "-i"]
    assert argv.index("-ss") < first
    assert "-ss" not in argv[first:second]
    video, audio = option(argv, "-filter_complex").split(";")
    # The looped picture is stamped at the frame rate before anything else runs on it.
    assert video.startswith("[1:1]loop=loop=-1:size=1,setpts=N/(25*TB),scale=320:240")
    assert "trim=end_frame=16" in video
    assert audio.startswith("[0:0]")


@pytest.mark.parametrize(
    ("title", "shown"),
    [
        ("Morning News", "Morning News"),
        # Quotes, colons, backslashes and percent signs would end or escape the filter
        # option: they never reach the filter graph.
        ("It's 10:30 \\ 100% 'live'; [x]", "It s 10 30 100 live x"),
        ("x" * 80, "x" * 60),
        ("'''", "exstream"),
    ],
)
def test_audio_only_card_shows_a_safe_title(
    title: str, shown: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    font = tmp_path / "font.ttf"
    font.write_bytes(b"")
    monkeypatch.setattr(service.ffmpeg, "FONT", font)
    item = av_item(title=title, video_codec="none", video_index=None, audio_index=0)
    argv = item_argv(SETTINGS, plan_of(item, frames=16), "1")
    inputs = options(argv, "-i")
    assert inputs[0] == "/m/a.mp4"
    assert inputs[1].startswith("color=") and ":s=320x240:r=25" in inputs[1]
    video, _ = option(argv, "-filter_complex").split(";")
    assert video.startswith("[1:v]")
    assert f"drawtext=fontfile={font}:text='{shown}':" in video
    assert "trim=end_frame=16" in video


def test_audio_only_card_without_a_font_has_no_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(service.ffmpeg, "FONT", tmp_path / "missing.ttf")
    item = av_item(video_codec="none", video_index=None, audio_index=0)
    video, _ = option(item_argv(SETTINGS, plan_of(item), "1"), "-filter_complex").split(";")
    assert "drawtext" not in video
    assert video.startswith("[1:v]format=yuv420p,trim=end_frame=200")


def test_slate_argv_is_bars_and_silence_for_the_requested_time() -> None:
    argv = slate_argv(SETTINGS, 1.5)
    assert options(argv, "-i") == ["smptehdbars=size=320x240:rate=25", "anullsrc=r=48000:cl=stereo"]
    assert options(argv, "-f")[:2] == ["lavfi", "lavfi"]
    assert option(argv, "-t") == "1.500"
    assert options(argv, "-map") == ["0:v:0", "1:a:0"]
    assert option(argv, "-f", after="-c:a") == "mpegts"
    assert argv[-1] == "pipe:1"


def test_code_class() -> None:
    assert [code_class(c) for c in (0, 1, 255, -9)] == ["ok", "error", "error", "signal"]


# --- real runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A file made with lavfi, and how an item of it is played."""

    name: str
    filename: str
    make: tuple[str, ...]  # ffmpeg arguments between the inputs and the output name
    seek: float
    fps: int  # the channel's rate for this run: the kinds check several grids
    frames: int


KINDS = (
    Kind(
        "h264-aac-mp4",
        "a.mp4",
        ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"),
        seek=0.6,
        fps=25,
        frames=16,
    ),
    Kind(
        # Seeking into a video-only file used to fail with "could not seek".
        "video-only-mkv",
        "b.mkv",
        ("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=2",
         "-c:v", "libx264", "-preset", "ultrafast"),
        seek=0.283,
        fps=30,
        frames=32,
    ),
    Kind(
        "audio-only-mp3",
        "c.mp3",
        ("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "libmp3lame"),
        seek=0.0,
        fps=25,
        frames=16,
    ),
    Kind(
        "m4a-with-cover",
        "d.m4a",
        ("-f", "lavfi", "-i", "sine=frequency=550:duration=2",
         "-f", "lavfi", "-i", "color=c=red:s=64x48:d=1",
         "-map", "0:a", "-map", "1:v", "-frames:v", "1",
         "-c:a", "aac", "-c:v", "png", "-disposition:v:0", "attached_pic"),
        seek=0.5,  # the cover has one frame, at 0: the seek must not drop it
        fps=25,
        frames=8,  # see test_real_cover_art_item_keeps_up_with_real_time
    ),
    Kind(
        "mono-44k-mp3-in-avi",
        "e.avi",
        ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=24:duration=3",
         "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100:duration=3",
         "-c:v", "mpeg4", "-c:a", "libmp3lame", "-ac", "1", "-ar", "44100"),
        seek=0.5,
        fps=24,
        frames=64,
    ),
    Kind(
        "interlaced-h264-ac3-5.1-mkv",
        "f.mkv",
        ("-f", "lavfi", "-i", "testsrc2=size=352x288:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=770:duration=2,aformat=channel_layouts=5.1",
         "-vf", "setfield=tff", "-flags", "+ilme+ildct",
         "-c:v", "libx264", "-preset", "ultrafast", "-x264opts", "tff=1",
         "-c:a", "ac3", "-shortest"),
        seek=0.2,
        fps=60,
        frames=64,
    ),
)  # fmt: skip

REAL = FfmpegSettings(width=192, height=144, video_bitrate=200_000, preset="ultrafast")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MediaItem]:
    """Every kind, made and probed once for the module."""
    root = tmp_path_factory.mktemp("kinds")
    items: dict[str, MediaItem] = {}
    for kind in KINDS:
        path = root / kind.filename
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-nostdin", *kind.make, str(path)],
            check=True,
            timeout=60,
        )
        item = item_from_probe(str(path), ffprobe(path, "-show_format", "-show_streams"))
        assert isinstance(item, MediaItem), item
        items[kind.name] = item
    return items


def run_item(kind: Kind, item: MediaItem, frames: int, out: Path, seek: float) -> None:
    settings = replace(REAL, fps=kind.fps)
    plan = ItemPlan(item, seek, frames, 0.0, frames / kind.fps)
    result = subprocess.run(item_argv(settings, plan, "3"), capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    out.write_bytes(result.stdout)


def assert_normalised(out: Path, fps: int, frames: int) -> None:
    """Exactly `frames` video packets and the audio of the same span (plus the AAC
    encoder's priming frame), in the channel's format, decoding silently."""
    probe = ffprobe(out, "-show_entries", "packet=stream_index:stream")
    streams = probe["streams"]
    packets = probe["packets"]
    assert isinstance(streams, list) and isinstance(packets, list)
    kinds = {int(s["index"]): s["codec_type"] for s in streams}
    counts = Counter(kinds[int(p["stream_index"])] for p in packets)
    audio_frames = frames * 48_000 // fps // 1024
    assert counts == {"video": frames, "audio": audio_frames + 1}
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 192, 144)
    assert video["r_frame_rate"] == f"{fps}/1"
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert decode_errors(out) == ""


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_real_item_gives_exactly_the_planned_frames(
    kind: Kind, media: dict[str, MediaItem], tmp_path: Path
) -> None:
    assert kind.frames % grid_frames(kind.fps) == 0
    out = tmp_path / "out.ts"
    run_item(kind, media[kind.name], kind.frames, out, kind.seek)
    assert_normalised(out, kind.fps, kind.frames)


def test_the_kinds_cover_what_item_argv_tells_apart(media: dict[str, MediaItem]) -> None:
    assert not media["video-only-mkv"].has_audio
    assert not media["audio-only-mp3"].has_video
    assert media["audio-only-mp3"].cover_index is None
    assert media["m4a-with-cover"].cover_index is not None
    assert media["mono-44k-mp3-in-avi"].audio_codec == "mp3"
    assert media["interlaced-h264-ac3-5.1-mkv"].interlaced
    assert media["interlaced-h264-ac3-5.1-mkv"].audio_codec == "ac3"


def test_real_item_beyond_the_end_of_its_file_is_padded(
    media: dict[str, MediaItem], tmp_path: Path
) -> None:
    """The planned frames come out even when the file is a little shorter than probed."""
    kind = KINDS[0]
    out = tmp_path / "out.ts"
    run_item(kind, media[kind.name], 16, out, seek=1.8)  # 0.2 s left, 0.64 s planned
    assert_normalised(out, kind.fps, 16)


def test_real_cover_art_item_keeps_up_with_real_time(
    media: dict[str, MediaItem], tmp_path: Path
) -> None:
    kind = next(k for k in KINDS if k.name == "m4a-with-cover")
    plan = ItemPlan(media[kind.name], 0.0, 48, 0.0, 1.92)
    settings = replace(REAL, fps=kind.fps)
    # A channel plays items back to back: an encode slower than real time starves it.
    # Any normal encode of 1.92 s of a still picture at this size takes a fraction of that.
    try:
        subprocess.run(item_argv(settings, plan, "3"), capture_output=True, timeout=1.92)
    except subprocess.TimeoutExpired:
        pytest.fail("1.92 s of a cover-art item took longer than 1.92 s to encode")


def test_real_slate_decodes_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "slate.ts"
    result = subprocess.run(slate_argv(REAL, 0.64), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    out.write_bytes(result.stdout)
    assert_normalised(out, REAL.fps, 16)


# --- ManagedProcess ------------------------------------------------------------------


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


CANCELLED_START = """
import asyncio, sys
import psutil
from service.process import ManagedProcess

async def main() -> None:
    task = asyncio.create_task(ManagedProcess(sys.argv[1:]).start())
    await asyncio.sleep(0)  # the task now waits for the spawning thread
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("cancelled")
    # Every start on a worker thread has returned: a child left behind exists by now.
    await asyncio.get_running_loop().shutdown_default_executor()
    left = [c for c in psutil.Process().children(recursive=True) if c.status() != "zombie"]
    print(len(left))

asyncio.run(main())
"""


def test_a_start_cancelled_while_spawning_leaves_no_process() -> None:
    # In an interpreter of its own: a lost Popen and its pipes would leak into this
    # one's later tests.
    result = run_python(CANCELLED_START, "sleep", "100", flags=["-W", "error"], timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "cancelled\n0\n", "")


async def test_stderr_tail_and_exit_code() -> None:
    argv = ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i >&2; done; exit 3"]
    async with ManagedProcess(argv, stderr_lines=2) as proc:
        assert await proc.wait() == 3
    assert list(proc.stderr_tail) == ["line4", "line5"]
    assert code_class(proc.returncode or 0) == "error"
