"""README.md's configuration reference is checked against the code: keys and defaults."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from service import config

README = Path(__file__).parents[1] / "README.md"
SECTIONS: dict[str, type[Any]] = {
    "server": config.ServerSettings,
    "ffmpeg": config.FfmpegSettings,
    "playout": config.PlayoutSettings,
    "stream": config.StreamSettings,
    "health": config.HealthSettings,
    "pool": config.PoolSettings,
    "guide": config.GuideSettings,
    "hdhomerun": config.HdhomerunSettings,
    "hls": config.HlsSettings,
}


def table(heading: str) -> dict[str, str]:
    """`key -> default` of the table under a `### heading` of the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"### {heading}\n")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"\| `(\w+)` \| (.+?) \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, datetime):
        return "`" + value.isoformat().replace("+00:00", "Z") + "`"
    return f"`{value}`"


@pytest.mark.parametrize("section", SECTIONS)
def test_section_tables_match_the_settings(section: str) -> None:
    cls = SECTIONS[section]
    documented = table(f"`[{section}]`")
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "api_token"}
    assert set(documented) == set(fields)
    for name, default in fields.items():
        assert documented[name] == shown(default), name


def test_channel_table_matches_the_channel_config() -> None:
    documented = table("`[[channels]]`")
    fields = {f.name: f.default for f in dataclasses.fields(config.ChannelConfig)}
    assert set(documented) == set(fields)
    assert documented["number"] == documented["name"] == "required"
    assert documented["media"] == "`[]`"
    for name in ("mode", "idle_grace", "shuffle"):
        assert documented[name] == shown(fields[name])


def test_logs_example_names_every_logs_setting() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```toml\n(\[logs\]\n.*?)```", text, re.S)
    assert block is not None
    documented = tomllib.loads(block.group(1))["logs"]
    defaults = {f.name: f.default for f in dataclasses.fields(config.LogSettings)}
    assert documented == defaults


def test_example_configuration_is_valid(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    example = re.search(r"## Configuration\n.*?```toml\n(.*?)```", text, re.S)
    assert example is not None
    data = tomllib.loads(example.group(1))
    for channel in data["channels"]:
        channel["media"] = []
    settings = config.parse_settings(data, tmp_path / "channels.toml", {})
    assert [c.number for c in settings.channels] == [1, 2]
