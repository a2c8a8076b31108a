"""The stand-in for ffmpeg (fake_ffmpeg.py): channels that play a recording through it,
executables that start it with settings of their own, and what its spawn log says."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tests.harness.config import ALWAYS_ON, write_config

FAKE_FFMPEG = Path(__file__).with_name("fake_ffmpeg.py")
# Its "ok" as a shell script, for hundreds of channels at once.
FAKE_FFMPEG_STORM = Path(__file__).with_name("fake_ffmpeg_storm.sh")


class StandIn(NamedTuple):
    config: Path
    env: dict[str, str]  # for the server: the stand-in's plan, spawn log and recording
    spawns: Path  # the stand-in's spawn log


def stand_in_channels(
    directory: Path,
    recording: Path,
    channels: list[dict[str, Any]] | None = None,
    plan: dict[str, str] | None = None,
    **sections: dict[str, Any],
) -> StandIn:
    """Channels (default: ALWAYS_ON) whose ffmpeg is the stand-in playing `recording`,
    from `directory`/media unless a channel names its own media; `plan` maps channel ->
    behaviours (see fake_ffmpeg.py); `sections` go to write_config ([ffmpeg] ffmpeg may
    name another stand-in)."""
    media = directory / "media"
    media.mkdir(exist_ok=True)
    (media / "item.ts").write_bytes(recording.read_bytes())
    ffmpeg = {"ffmpeg": str(FAKE_FFMPEG), **sections.pop("ffmpeg", {})}
    config = write_config(
        directory,
        [{"media": [str(media)], **channel} for channel in channels or [ALWAYS_ON]],
        ffmpeg=ffmpeg,
        **sections,
    )
    log = directory / "spawns.log"
    env = {
        "FAKE_FFMPEG_PLAN": json.dumps(plan or {}),
        "FAKE_FFMPEG_LOG": str(log),
        "FAKE_FFMPEG_SOURCE": str(recording),
    }
    return StandIn(config, env, log)


StandInFactory = Callable[..., StandIn]  # stand_in_channels with its directory and recording


def write_stand_in(
    path: Path,
    *,
    plan: dict[str, str] | None = None,
    rate: float | None = None,
    writes: int = 20,
    source: Path | None = None,
    log: Path | None = None,
) -> Path:
    """An executable for [ffmpeg] ffmpeg: the stand-in with these settings (see
    fake_ffmpeg.py), whatever environment the service gives its children. Its `rate` comes
    in `writes` a second, chunks as large as a source's first keyframe."""
    settings = {
        "FAKE_FFMPEG_PLAN": json.dumps(plan) if plan else None,
        "FAKE_FFMPEG_RATE": str(rate) if rate else None,
        "FAKE_FFMPEG_WRITES": str(writes),
        "FAKE_FFMPEG_SOURCE": str(source) if source else None,
        "FAKE_FFMPEG_LOG": str(log) if log else None,
    }
    exports = [f"export {k}={shlex.quote(v)}\n" for k, v in settings.items() if v is not None]
    # -S: no site-packages to scan; the stand-in needs the standard library only.
    command = shlex.join([sys.executable, "-S", str(FAKE_FFMPEG)])
    path.write_text(f'#!/bin/sh\n{"".join(exports)}exec {command} "$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def spawns(log: Path, channel: str | None = None) -> list[float]:
    """When the stand-in started, for `channel` or every channel, in the log's order."""
    if not log.exists():
        return []
    fields = [line.split() for line in log.read_text(encoding="utf-8").splitlines() if line]
    return [float(f[1]) for f in fields if channel is None or f[0] == channel]
