"""Configuration files for servers under test, written from plain dicts."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from service.config import Settings, parse_settings
from tests.harness.network import free_port

# Faults are seen within seconds and restarts follow at once, inside a test's patience.
FAST_HEALTH: dict[str, Any] = {
    "check_interval": 0.5,
    "stall_timeout": 2.0,
    "backoff_initial": 0.1,
    "backoff_max": 0.5,
    "restart_window": 60.0,
    "cooldown": 600.0,
}

# Small, quick encodes: tests watch behaviour, not pictures.
SMALL_ENCODES: dict[str, Any] = {
    "width": 320,
    "height": 240,
    "video_bitrate": 400_000,
    "preset": "ultrafast",
}
# Channel 1 as most tests want it: streaming from the start, watched or not.
ALWAYS_ON: dict[str, Any] = {"number": 1, "name": "A", "mode": "always_on"}


def write_config(
    directory: Path,
    channels: list[dict[str, Any]],
    *,
    encoding: dict[str, Any] = SMALL_ENCODES,
    **sections: dict[str, Any],
) -> Path:
    """`directory`/channels.toml: a loopback server on a free port with its data in
    `directory`/data, [ffmpeg] `encoding`, then the given sections (a key given wins)."""
    server = {"host": "127.0.0.1", "port": free_port(), "data_dir": str(directory / "data")}
    server.update(sections.pop("server", {}))
    # The stand-in ffmpeg reads its plan, spawn log and source from FAKE_FFMPEG_*.
    ffmpeg = {**encoding, "pass_env": ["FAKE_FFMPEG_*"], **sections.pop("ffmpeg", {})}
    # UDP 65001 is one per machine: only the tests of discovery ask for it.
    hdhomerun = {"discovery": False, **sections.pop("hdhomerun", {})}
    document = {
        "server": server,
        "ffmpeg": ffmpeg,
        "hdhomerun": hdhomerun,
        **sections,
        "channels": channels,
    }
    path = directory / "channels.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def one_channel(directory: Path, media: list[Path], **sections: dict[str, Any]) -> Path:
    """write_config for channel ALWAYS_ON playing `media`."""
    return write_config(directory, [{**ALWAYS_ON, "media": [str(p) for p in media]}], **sections)


def port_of(config: Path) -> int:
    port: int = tomllib.loads(config.read_text(encoding="utf-8"))["server"]["port"]
    return port


def app_settings(
    data: Mapping[str, Any], path: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings for an app run in the test's own process, from a plain dict: as
    `parse_settings`, with HDHomeRun discovery off unless `data` turns it on (UDP 65001
    is one per machine: only the tests of discovery ask for it)."""
    hdhomerun = {"discovery": False, **data.get("hdhomerun", {})}
    return parse_settings({**data, "hdhomerun": hdhomerun}, path, environ or {})
