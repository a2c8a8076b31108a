from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def recorded_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of real MPEG-TS for the stand-in process to play."""
    path = tmp_path_factory.mktemp("ts") / "source.ts"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=500:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-shortest",
            "-f",
            "mpegts",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path
