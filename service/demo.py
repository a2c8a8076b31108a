"""Demo media made at run time with ffmpeg's lavfi sources (testsrc2, sine): nothing to download."""

from __future__ import annotations

import subprocess
from pathlib import Path

DEMO_CLIPS = (("bars", 20, 440), ("pattern", 25, 660), ("counter", 15, 880))


def make_clip(
    path: Path,
    duration: float,
    *,
    frequency: int = 440,
    size: str = "640x360",
    rate: int = 25,
    audio: bool = True,
    ffmpeg: str = "ffmpeg",
) -> Path:
    """Write an H.264/AAC MP4 test clip (a moving test pattern with a tone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        ffmpeg, "-v", "error", "-y", "-nostdin",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={duration}",
    ]  # fmt: skip
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={duration}"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(rate)]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    argv.append(str(path))
    subprocess.run(argv, check=True, timeout=120)
    return path


DEMO_CONFIG = """\
# exstream demo configuration (written by `exstream demo`).
[server]
host = "{host}"
port = {port}
data_dir = "data"

[ffmpeg]
width = 640
height = 360
video_bitrate = 1000000

[playout]
min_horizon = 3600

[[channels]]
number = 1
name = "Demo One"
media = ["media/one"]
mode = "always_on"
group = "Demo"

[[channels]]
number = 2
name = "Demo Two (on demand, shuffled)"
media = ["media/two/*.mp4"]
shuffle = true
seed = 7
idle_grace = 15
group = "Demo"

[[channels]]
number = 3
name = "Demo Offline (slate)"
media = ["media/empty"]
idle_grace = 15
group = "Demo"
"""


def write_demo(
    directory: Path, *, host: str = "127.0.0.1", port: int = 8410, force: bool = False
) -> tuple[Path, bool]:
    """Media for three channels and a channels.toml beside them: the config's path, and
    whether it was written (an existing one is kept unless `force`)."""
    for name, duration, frequency in DEMO_CLIPS:
        for sub in ("one", "two"):
            clip = directory / "media" / sub / f"{name}.mp4"
            if not clip.exists():
                make_clip(clip, duration, frequency=frequency)
    (directory / "media" / "empty").mkdir(parents=True, exist_ok=True)
    config = directory / "channels.toml"
    text = DEMO_CONFIG.format(host=host, port=port)
    if config.exists() and not force and config.read_text(encoding="utf-8") != text:
        return config, False
    config.write_text(text, encoding="utf-8")
    return config, True
