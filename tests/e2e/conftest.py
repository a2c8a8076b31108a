from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

from tests.harness.standin import StandInFactory, stand_in_channels


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


@pytest.fixture
def stand_in(tmp_path: Path, recorded_ts: Path) -> StandInFactory:
    """`stand_in(channels, plan, **sections)`: channels on the stand-in ffmpeg playing
    `recorded_ts` (see tests.harness.standin.stand_in_channels)."""
    return functools.partial(stand_in_channels, tmp_path, recorded_ts)
