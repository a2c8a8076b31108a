from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from service.config import FfmpegSettings
from service.tools import check_tools


async def test_a_tool_that_hangs_is_reported_as_hanging_not_as_missing(tmp_path: Path) -> None:
    hangs = tmp_path / "ffprobe"
    hangs.write_text("#!/bin/sh\nexec sleep 30\n")
    hangs.chmod(0o755)
    settings = replace(FfmpegSettings(), ffprobe=str(hangs))
    problems = await check_tools(settings, os.environ, timeout=0.5)
    assert [str(p) for p in problems] == [
        f"ffmpeg.ffprobe: {str(hangs)!r} -version did not answer within 0.5s"
    ]
