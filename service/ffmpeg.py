"""ffmpeg command lines (pure): an item's, normalised to the channel's format, and the slate's.

A channel runs one process per item (or piece of an item): it decodes any file ffprobe
can read, normalises it to the channel's one format (size with letterbox or pillarbox,
square pixels, frame rate, 48 kHz stereo) and encodes exactly the planned number of
frames to MPEG-TS as fast as the pipe takes it. The splicer (service/splice.py) joins
the processes' outputs into one timeline; the pacer sends it in real time.
"""

from __future__ import annotations

from pathlib import Path

from service.config import FfmpegSettings
from service.grid import AAC_FRAME, AUDIO_RATE
from service.playout import ItemPlan

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CARD_COLOUR = "0x1d2733"
PAD_SECONDS = 1  # a file this much shorter than probed still fills its item; more ends it early


def _card_text(title: str) -> str:
    safe = "".join(c if c.isalnum() or c in " -_.,!?()" else " " for c in title)
    return " ".join(safe.split())[:60] or "exstream"


def _encode_args(s: FfmpegSettings) -> list[str]:
    gop = max(1, round(s.gop_seconds * s.fps))
    return [
        "-c:v", "libx264",
        "-preset", s.preset,
        "-tune", "zerolatency",
        "-profile:v", "high",
        "-bf", "0",
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",
        "-b:v", str(s.video_bitrate),
        "-maxrate", str(s.video_bitrate),
        "-bufsize", str(s.video_bitrate),
        "-c:a", "aac",
        "-b:a", str(s.audio_bitrate),
        "-ar", str(AUDIO_RATE),
        "-ac", "2",
        "-f", "mpegts",
        # Short PES (one AAC frame, or a few when they are tiny): the splicer places,
        # trims and drops audio frame by frame.
        "-pes_payload_size", "0",
        "-flush_packets", "1",
        "pipe:1",
    ]  # fmt: skip


def _picture_chain(s: FfmpegSettings) -> str:
    return (
        f"scale={s.width}:{s.height}:force_original_aspect_ratio=decrease,"
        f"pad={s.width}:{s.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,"
        # From 0, where the seek puts audio too: a first frame that comes late is
        # repeated back to 0 instead of pulling the picture ahead of the sound.
        f"fps={s.fps}:start_time=0,format=yuv420p"
    )


def item_argv(s: FfmpegSettings, plan: ItemPlan, channel: str) -> list[str]:
    """Decode one item, normalise it to the channel's format and encode exactly
    `plan.frames` frames (and the same span of audio), as fast as the pipe takes it."""
    item = plan.item
    frames = plan.frames
    samples = frames * AUDIO_RATE // s.fps
    argv = [s.ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "error"]
    if plan.seek > 0:
        argv += ["-ss", f"{plan.seek:.3f}"]
    argv += ["-i", item.path]
    inputs = 1
    # A second of padding covers a container that is a little shorter than probed; a
    # file that ends earlier than that ends its item early (the runner sees it).
    pad = f"tpad=stop_mode=clone:stop_duration={PAD_SECONDS},trim=end_frame={frames}"
    if item.video_index is not None:
        deinterlace = "yadif=deint=interlaced," if item.interlaced else ""
        video = f"[0:{item.video_index}]{deinterlace}{_picture_chain(s)},{pad}"
    elif item.cover_index is not None:
        # The picture again, unseeked: a seek past its one frame would drop it.
        argv += ["-i", item.path]
        # Looped frames are 1/90000 s apart: stamp them at the frame rate first, or the
        # fps filter goes through thousands of pictures per frame.
        still = f"loop=loop=-1:size=1,setpts=N/({s.fps}*TB)"
        video = f"[{inputs}:{item.cover_index}]{still},{_picture_chain(s)},{pad}"
        inputs += 1
    else:
        argv += ["-f", "lavfi", "-i", f"color=c={CARD_COLOUR}:s={s.width}x{s.height}:r={s.fps}"]
        card = ""
        if FONT.is_file():
            size = max(12, s.height // 12)
            card = (
                f",drawtext=fontfile={FONT}:text='{_card_text(item.title)}':fontcolor=white"
                f":fontsize={size}:x=(w-text_w)/2:y=(h-text_h)/2"
            )
        video = f"[{inputs}:v]format=yuv420p{card},trim=end_frame={frames}"
        inputs += 1
    if item.audio_index is not None:
        audio = (
            f"[0:{item.audio_index}]aresample={AUDIO_RATE}:async=1:first_pts=0,"
            "aformat=sample_fmts=fltp:channel_layouts=stereo,"
            f"apad=pad_dur={PAD_SECONDS},atrim=end_sample={samples}"
        )
    else:
        argv += ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"]
        audio = f"[{inputs}:a]atrim=end_sample={samples}"
    # At most one AAC frame of samples per frame: after an early end of the input,
    # padding can hand the encoder a larger frame, which it refuses (ffmpeg exits 1).
    graph = f"{video}[v];{audio},asetnsamples=n={AAC_FRAME}:p=0[a]"
    argv += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]"]
    argv += ["-metadata", f"exstream_channel={channel}"]
    return argv + _encode_args(s)


def slate_argv(s: FfmpegSettings, seconds: float | None, channel: str | None = None) -> list[str]:
    """The offline picture (bars and silence): a short clip the splicer loops as filler,
    or, for `channel` when there is no clip, a process that plays it for `seconds` (None:
    until stopped)."""
    marker = f"exstream_channel={channel}" if channel is not None else "exstream_slate=1"
    length = ["-t", f"{seconds:.3f}"] if seconds is not None else []
    return [
        s.ffmpeg, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"smptehdbars=size={s.width}x{s.height}:rate={s.fps}",
        "-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo",
        "-map", "0:v:0", "-map", "1:a:0", *length,
        "-metadata", marker,
        *_encode_args(s),
    ]  # fmt: skip


def code_class(returncode: int) -> str:
    if returncode == 0:
        return "ok"
    return "signal" if returncode < 0 else "error"
