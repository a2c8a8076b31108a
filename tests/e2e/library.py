"""A mixed media library made with lavfi at run time, and an A/V sync meter.

Every kind exercises something the channel producer must normalise: codecs, containers,
frame rates, interlacing, aspect ratios, audio-only files with and without cover art,
several audio tracks. Files marked `synced` flash white and beep at the same instants
(t = 0, 1, 2, ... s), so `av_offsets` can measure A/V sync after any transcode.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MARK_SECONDS = 0.1
BEEP_HZ = 1000
# Frames whose centre (a quarter of each side: inside any letter- or pillarbox) is
# brighter than this (8-bit luma, black 16, white 235) are a flash.
FLASH_LUMA = 128.0
# A beep starts where at least this much quieter-than-threshold audio ends.
SILENCE_DB = -30
MIN_SILENCE = 0.05
# Flashes and beeps further apart than this are not the same mark.
PAIR_WINDOW = 0.5
# The subtitle track of the two-audio-track file.
SUBTITLES = "1\n00:00:00,500 --> 00:00:01,500\nexstream test subtitle\n\n"


@dataclass(frozen=True)
class MediaKind:
    name: str
    filename: str
    has_video: bool
    has_audio: bool
    synced: bool  # carries the flash/beep marks


# As decoded by ffmpeg 5.1 the synced files measure within 1 ms of zero, except MP3 in
# AVI at -15 ms (LAME's encoder delay is not compensated there; the video moves a frame).
# The mkv files start their video 21 ms late (the AAC priming shifts every stream), which
# a conversion to 25 fps rounds into a further -19 ms.


KINDS: tuple[MediaKind, ...] = (
    MediaKind("h264_aac", "h264_aac.mp4", True, True, True),
    MediaKind("mpeg4_mp3", "mpeg4_mp3.avi", True, True, True),
    MediaKind("h264_video_only", "h264_video_only.mkv", True, False, False),
    MediaKind("mpeg2_interlaced_ac3", "mpeg2_interlaced_ac3.ts", True, True, True),
    MediaKind("mp3_audio_only", "mp3_audio_only.mp3", False, True, False),
    MediaKind("aac_cover_art", "aac_cover_art.m4a", False, True, False),
    MediaKind("hevc_portrait", "hevc_portrait.mkv", True, True, True),
    MediaKind("vp9_flac", "vp9_flac.mkv", True, True, True),
    MediaKind("two_audio_subtitles", "two_audio_subtitles.mkv", True, True, True),
    MediaKind("h264_opus_ntsc", "h264_opus_ntsc.mkv", True, True, True),
)


def flashes(size: str, rate: str, seconds: float) -> list[str]:
    """Input options for a dark picture that turns white for the first 0.1 s of each second."""
    source = (
        f"color=c=black:s={size}:r={rate}:d={seconds},"
        f"drawbox=x=0:y=0:w=iw:h=ih:t=fill:c=white:enable='lt(mod(t,1),{MARK_SECONDS})'"
    )
    return ["-f", "lavfi", "-i", source]


def beeps(sample_rate: int, layout: str, seconds: float) -> list[str]:
    """Input options for silence with a 1 kHz beep in the first 0.1 s of each second."""
    expression = f"if(lt(mod(t,1),{MARK_SECONDS}),0.5*sin(2*PI*{BEEP_HZ}*t),0)"
    source = f"aevalsrc='{expression}':s={sample_rate}:c={layout}:d={seconds}"
    return ["-f", "lavfi", "-i", source]


def tone(frequency: int, sample_rate: int, seconds: float) -> list[str]:
    source = f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={seconds}"
    return ["-f", "lavfi", "-i", source]


X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _h264_aac(seconds: float) -> list[str]:
    return [
        *flashes("320x180", "30", seconds), *beeps(48000, "stereo", seconds),
        *X264, "-g", "30", "-c:a", "aac", "-b:a", "96k",
    ]  # fmt: skip


def _mpeg4_mp3(seconds: float) -> list[str]:
    return [
        *flashes("320x240", "25", seconds), *beeps(44100, "mono", seconds),
        "-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", "-b:a", "64k",
    ]  # fmt: skip


def _h264_video_only(seconds: float) -> list[str]:
    return [
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=24000/1001:duration={seconds}",
        *X264,
    ]  # fmt: skip


def _mpeg2_interlaced_ac3(seconds: float) -> list[str]:
    return [
        *flashes("352x288", "25", seconds), *beeps(48000, "5.1", seconds),
        "-c:v", "mpeg2video", "-b:v", "1M", "-aspect", "4:3", "-flags", "+ilme+ildct", "-top", "1",
        "-c:a", "ac3", "-b:a", "384k",
    ]  # fmt: skip


def _mp3_audio_only(seconds: float) -> list[str]:
    return [*tone(440, 32000, seconds), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "96k"]


def _aac_cover_art(seconds: float) -> list[str]:
    return [
        *tone(660, 48000, seconds),
        "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=1",
        "-map", "0:a", "-map", "1:v", "-frames:v", "1",
        "-c:a", "aac", "-ac", "2", "-c:v", "png", "-disposition:v", "attached_pic",
    ]  # fmt: skip


def _hevc_portrait(seconds: float) -> list[str]:
    return [
        *flashes("180x320", "50", seconds), *beeps(48000, "stereo", seconds),
        "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
        "-pix_fmt", "yuv420p", "-c:a", "aac",
    ]  # fmt: skip


def _vp9_flac(seconds: float) -> list[str]:
    return [
        *flashes("320x180", "60", seconds), *beeps(48000, "stereo", seconds),
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k",
        "-c:a", "flac",
    ]  # fmt: skip


def _two_audio_subtitles(seconds: float) -> list[str]:
    """The beeps are on the second audio track, the default one; the first is a steady
    tone with as many channels, so a producer that takes the first track (or goes by
    channel count) yields no marks at all."""
    return [
        *flashes("320x180", "25", seconds), *tone(300, 48000, seconds),
        *beeps(48000, "stereo", seconds), "-f", "srt", "-i", "pipe:0",
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
        *X264, "-c:a", "aac", "-ac", "2", "-c:s", "srt",
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=steady tone",
        "-metadata:s:a:1", "language=fra", "-metadata:s:a:1", "title=beeps",
        "-disposition:a:0", "0", "-disposition:a:1", "default",
    ]  # fmt: skip


def _h264_opus_ntsc(seconds: float) -> list[str]:
    return [
        *flashes("424x240", "30000/1001", seconds), *beeps(48000, "stereo", seconds),
        *X264, "-c:a", "libopus", "-b:a", "64k",
    ]  # fmt: skip


_RECIPES: dict[str, Callable[[float], list[str]]] = {
    "h264_aac": _h264_aac,
    "mpeg4_mp3": _mpeg4_mp3,
    "h264_video_only": _h264_video_only,
    "mpeg2_interlaced_ac3": _mpeg2_interlaced_ac3,
    "mp3_audio_only": _mp3_audio_only,
    "aac_cover_art": _aac_cover_art,
    "hevc_portrait": _hevc_portrait,
    "vp9_flac": _vp9_flac,
    "two_audio_subtitles": _two_audio_subtitles,
    "h264_opus_ntsc": _h264_opus_ntsc,
}


def make_media(kind: MediaKind, directory: Path, seconds: float = 3.0) -> Path:
    path = directory / kind.filename
    argv = ["ffmpeg", "-v", "error", "-y", "-nostdin", *_RECIPES[kind.name](seconds), str(path)]
    # Only the recipe that reads "pipe:0" takes the subtitles; -nostdin keeps the others
    # (and ffmpeg's keyboard commands) from reading them.
    result = subprocess.run(argv, input=SUBTITLES, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not make {kind.filename}: {result.stderr.strip()}")
    return path


def make_library(directory: Path, seconds: float = 3.0) -> list[Path]:
    """Every kind of KINDS under `directory`, in that order."""
    directory.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda kind: make_media(kind, directory, seconds), KINDS))


def av_offsets(path: Path) -> list[float]:
    """Audio minus video time, in seconds, of each flash that has a beep within 0.5 s.

    Measured on the first video stream that is not cover art and on the default audio
    stream (else the first). Only onsets count, a flash after a dark frame and a beep
    after 50 ms of silence, so a capture that starts inside a mark yields no false one.
    """
    flash_times, beep_times = _marks(path)
    offsets = []
    for flash in flash_times:
        beep = min(beep_times, key=lambda beep: abs(beep - flash), default=None)
        if beep is None or abs(beep - flash) > PAIR_WINDOW:
            continue
        # Mutual nearest only: at a change of item, the next item's first flash may come
        # a few frames after the last mark of the one before, and is not that beep's pair.
        if min(flash_times, key=lambda other: abs(beep - other)) == flash:
            offsets.append(beep - flash)
    return offsets


def _marks(path: Path) -> tuple[list[float], list[float]]:
    """(flash start times, beep start times) in the streams a player would pick."""
    video, audio = _mark_streams(path)
    graph = (
        f"[0:{video}]crop=iw/4:ih/4,signalstats,"
        "metadata=mode=print:key=lavfi.signalstats.YAVG:file=video.txt;"
        f"[0:{audio}]silencedetect=noise={SILENCE_DB}dB:duration={MIN_SILENCE},"
        "ametadata=mode=print:key=lavfi.silence_end:file=audio.txt"
    )
    with tempfile.TemporaryDirectory() as scratch:
        argv = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path.resolve())]
        argv += ["-filter_complex", graph, "-f", "null", "-"]
        result = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not measure {path}: {result.stderr.strip()}")
        video_rows = _printed(Path(scratch) / "video.txt", "lavfi.signalstats.YAVG")
        audio_rows = _printed(Path(scratch) / "audio.txt", "lavfi.silence_end")
    flash_times = [
        at
        for (_, before), (at, luma) in itertools.pairwise(video_rows)
        if luma > FLASH_LUMA >= before
    ]
    return flash_times, [end for _, end in audio_rows]


def _mark_streams(path: Path) -> tuple[int, int]:
    """Indexes of the first video stream that is not cover art and of the default audio
    stream (the first one when none is marked default)."""
    argv = ["ffprobe", "-v", "error", "-of", "json", "-show_entries"]
    argv += ["stream=index,codec_type:stream_disposition=default,attached_pic", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    streams = json.loads(result.stdout)["streams"]
    video = [
        s for s in streams if s["codec_type"] == "video" and not s["disposition"]["attached_pic"]
    ]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    audio.sort(key=lambda stream: not stream["disposition"]["default"])
    if not video or not audio:
        raise ValueError(f"{path} has no video or no audio to measure A/V sync on")
    return int(video[0]["index"]), int(audio[0]["index"])


def _printed(path: Path, key: str) -> list[tuple[float, float]]:
    """(pts_time, value) of each frame the metadata filter printed `key` for."""
    rows = []
    at: float | None = None
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.startswith("frame:"):
            field = line.rpartition("pts_time:")[2].strip()
            at = float(field) if field and field != "NOPTS" else None
        elif line.startswith(f"{key}=") and at is not None:
            rows.append((at, float(line.partition("=")[2])))
    return rows
