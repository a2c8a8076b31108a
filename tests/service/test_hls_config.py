"""The [hls] section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.config import HlsSettings, parse_settings
from service.errors import ConfigError


def problems(**sections: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(sections, Path("channels.toml"), {})
    return caught.value.problems


def test_defaults_and_values_read() -> None:
    assert parse_settings({}, Path("channels.toml"), {}).hls == HlsSettings(4.0, 6, 10_000)
    data = {"hls": {"segment_seconds": 6, "window": 3, "max_sessions": 5}}
    assert parse_settings(data, Path("channels.toml"), {}).hls == HlsSettings(6.0, 3, 5)


def test_bad_values_are_reported_with_their_key_paths() -> None:
    found = problems(hls={"segment_seconds": 0.5, "window": 2, "max_sessions": 0, "x": 1})
    assert "hls.segment_seconds: must be between 1 and 60 seconds" in found
    assert "hls.window: must be between 3 and 100 segments" in found
    assert "hls.max_sessions: must be at least 1" in found
    assert any(p.startswith("hls.x: unknown key") for p in found)


def test_a_segment_holds_at_least_one_gop() -> None:
    found = problems(hls={"segment_seconds": 2}, ffmpeg={"gop_seconds": 3})
    assert found == ["hls.segment_seconds: must be at least ffmpeg.gop_seconds"]
