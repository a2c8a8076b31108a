from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import (
    ChannelConfig,
    HealthSettings,
    PlayoutSettings,
    Settings,
    load_settings,
    parse_settings,
)
from service.errors import ConfigError


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "channels.toml"
    text = data if isinstance(data, str) else tomli_w.dumps(data)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ)
    assert caught.value.path == str(path)
    return caught.value.problems


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    return folder


def test_minimal_channel_gets_the_documented_defaults(tmp_path: Path, media: Path) -> None:
    path = write(tmp_path, {"channels": [{"number": 1, "name": "One", "media": "media"}]})
    settings = load_settings(path, {})
    (channel,) = settings.channels
    assert channel == ChannelConfig(number=1, name="One", media=(str(media),))
    assert channel.mode == "on_demand"
    assert not channel.always_on
    assert settings.server.port == 8410
    assert settings.server.data_dir == tmp_path / "data"
    assert settings.playout == PlayoutSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        channel.name = "Two"  # type: ignore[misc]
    assert settings.channel(1) is channel
    assert settings.channel(2) is None


def test_every_section_and_channel_key_is_read(tmp_path: Path, media: Path) -> None:
    text = f"""
[server]
host = "127.0.0.2"
port = 9000
data_dir = "{tmp_path / "state"}"
public_url = "http://tv.example"
graceful_shutdown = 5
log_level = "debug"
log_format = "text"
max_connections = 500
max_header_bytes = 65536
header_timeout = 5
max_log_tails = 4

[ffmpeg]
width = 640
height = 360
fps = 30
video_bitrate = 1_000_000
gop_seconds = 1.5
preset = "ultrafast"
pass_env = ["LIBVA_*", "CUDA_VISIBLE_DEVICES"]

[playout]
epoch = 2023-05-01T00:00:00Z
min_horizon = 600
rebuild_interval = 30
segment_max = 120

[stream]
buffer_bytes = 1_000_000
send_timeout = 2.5

[health]
check_interval = 1
stall_timeout = 4
max_restarts = 2
backoff_initial = 0.1
backoff_max = 1

[pool]
max_processes = 3
spawn_rate = 0.5

[logs]
retention_days = 1.5
max_rows = 5000

[[channels]]
number = 7
name = "Seven"
media = ["media/a.mp4", "media/*.mkv"]
mode = "always_on"
idle_grace = 0
logo = "logo.png"
group = "News"
shuffle = true
seed = 42
"""
    settings = load_settings(write(tmp_path, text), {})
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 9000
    assert settings.server.data_dir == tmp_path / "state"
    assert settings.server.public_url == "http://tv.example"
    assert settings.server.graceful_shutdown == 5.0
    assert isinstance(settings.server.graceful_shutdown, float)
    assert settings.server.log_level == "DEBUG"
    assert settings.server.log_format == "text"
    assert settings.server.max_connections == 500
    assert (settings.server.max_header_bytes, settings.server.header_timeout) == (65536, 5.0)
    assert settings.server.max_log_tails == 4
    assert (settings.ffmpeg.width, settings.ffmpeg.height, settings.ffmpeg.fps) == (640, 360, 30)
    assert settings.ffmpeg.gop_seconds == 1.5
    assert settings.ffmpeg.preset == "ultrafast"
    assert settings.ffmpeg.pass_env == ("LIBVA_*", "CUDA_VISIBLE_DEVICES")
    assert settings.playout.epoch == datetime(2023, 5, 1, tzinfo=UTC)
    assert (settings.playout.min_horizon, settings.playout.segment_max) == (600.0, 120.0)
    assert settings.stream.buffer_bytes == 1_000_000
    assert settings.health.max_restarts == 2
    assert settings.health.backoff_max == 1.0
    assert settings.pool.max_processes == 3
    assert settings.logs.retention_days == 1.5
    (channel,) = settings.channels
    assert channel.always_on
    assert channel.media == (str(media / "a.mp4"), str(media / "*.mkv"))
    assert (channel.idle_grace, channel.logo, channel.group) == (0.0, "logo.png", "News")
    assert (channel.shuffle, channel.seed) == (True, 42)
    assert settings.warnings == ("channels[0].media[1]: pattern 'media/*.mkv' matches nothing yet",)


def test_environment_overrides_the_server_table(tmp_path: Path) -> None:
    path = write(tmp_path, {"server": {"host": "127.0.0.1", "port": 8000}})
    environ = {
        "EXSTREAM_HOST": "0.0.0.0",
        "EXSTREAM_PORT": "8123",
        "EXSTREAM_DATA_DIR": str(tmp_path / "elsewhere"),
        "EXSTREAM_LOG_LEVEL": "warning",
        "EXSTREAM_LOG_FORMAT": "TEXT",
        "EXSTREAM_API_TOKEN": "s3cret",
        "EXSTREAM_PUBLIC_URL": "",  # empty means unset
    }
    server = load_settings(path, environ).server
    assert (server.host, server.port) == ("0.0.0.0", 8123)
    assert server.data_dir == tmp_path / "elsewhere"
    assert (server.log_level, server.log_format) == ("WARNING", "text")
    assert server.api_token == "s3cret"
    assert "s3cret" not in repr(server)
    assert server.public_url is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EXSTREAM_PORT", "abc", "EXSTREAM_PORT: expected an integer, got 'abc'"),
        ("EXSTREAM_PORT", "8.5", "EXSTREAM_PORT: expected an integer, got '8.5'"),
        ("EXSTREAM_PORT", "70000", "EXSTREAM_PORT: must be a port number (0-65535)"),
        ("EXSTREAM_PORT", "-1", "EXSTREAM_PORT: must be a port number (0-65535)"),
        ("EXSTREAM_LOG_LEVEL", "loud", "EXSTREAM_LOG_LEVEL: must be one of TRACE"),
        ("EXSTREAM_LOG_FORMAT", "xml", "EXSTREAM_LOG_FORMAT: must be one of json, text"),
        ("EXSTREAM_DATA_DIR", "bad\0dir", "server.data_dir: invalid path"),
    ],
)
def test_bad_environment_values_are_config_problems(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    problems = problems_of(write(tmp_path, {}), {name: value})
    assert len(problems) == 1
    assert problems[0].startswith(message)


def test_toml_syntax_error_is_one_problem(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "[server\nport = 1\n"))
    assert len(problems) == 1
    assert problems[0].startswith("invalid TOML: ")


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.toml") == ["no such file"]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "\xe9"\n')
    (problem,) = problems_of(path)
    assert problem.startswith("cannot read: ")


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"sever": {}}, "sever: unknown section (known: server, ffmpeg,"),
    ({"server": {"prot": 1}}, "server.prot: unknown key (known: access_log, data_dir,"),
    ({"server": {"api_token": "x"}}, "server.api_token: unknown key"),
    ({"server": []}, "server: expected a table, got an array"),
    ({"server": {"port": True}}, "server.port: expected an integer, got a boolean"),
    ({"server": {"port": "80"}}, "server.port: expected an integer, got a string"),
    ({"server": {"port": 8.0}}, "server.port: expected an integer, got float"),
    ({"server": {"port": 65536}}, "server.port: must be a port number (0-65535)"),
    ({"server": {"port": -1}}, "server.port: must be a port number (0-65535)"),
    ({"server": {"host": 1}}, "server.host: expected a string, got int"),
    ({"server": {"log_format": "xml"}}, "server.log_format: must be one of json, text"),
    ({"server": {"graceful_shutdown": "3"}}, "server.graceful_shutdown: expected a number, got"),
    ({"server": {"graceful_shutdown": False}}, "server.graceful_shutdown: expected a number, got"),
    ({"server": {"max_connections": -1}}, "server.max_connections: must be 0 (derived from"),
    ({"server": {"max_header_bytes": 100}}, "server.max_header_bytes: must be at least 1024"),
    ({"server": {"header_timeout": 0}}, "server.header_timeout: must be greater than 0"),
    ({"server": {"max_log_tails": 0}}, "server.max_log_tails: must be at least 1"),
    ({"health": {"stall_timeout": -1}}, "health.stall_timeout: must be greater than 0"),
    ({"health": {"stall_timeout": 0}}, "health.stall_timeout: must be greater than 0"),
    ({"health": {"stall_timeout": float("inf")}}, "health.stall_timeout: must be a finite number"),
    ({"health": {"stall_timeout": float("nan")}}, "health.stall_timeout: must be a finite number"),
    ({"health": {"stall_timeout": 10**400}}, "health.stall_timeout: must be a finite number"),
    ({"health": {"max_restarts": 0}}, "health.max_restarts: must be at least 1"),
    (
        {"health": {"backoff_initial": 5, "backoff_max": 1}},
        "health.backoff_initial: must not exceed health.backoff_max",
    ),
    ({"ffmpeg": {"width": 641}}, "ffmpeg.width: must be an even number of pixels"),
    ({"ffmpeg": {"fps": 0}}, "ffmpeg.fps: must be between 1 and 120"),
    ({"ffmpeg": {"pass_env": "PATH"}}, "ffmpeg.pass_env: expected an array of strings, got a"),
    ({"ffmpeg": {"pass_env": ["A", 1]}}, "ffmpeg.pass_env: every entry must be a non-empty"),
    ({"ffmpeg": {"pass_env": ["EXSTREAM_*"]}}, "ffmpeg.pass_env: EXSTREAM_* variables are never"),
    ({"playout": {"min_horizon": 10}}, "playout.min_horizon: must be at least 60 seconds"),
    ({"playout": {"epoch": "yesterday"}}, "playout.epoch: not an RFC 3339 date-time: 'yesterday'"),
    ({"playout": {"epoch": 5}}, "playout.epoch: expected a date-time, got int"),
    ({"stream": {"buffer_bytes": 1000}}, "stream.buffer_bytes: must be at least 192512"),
    ({"pool": {"spawn_rate": -0.5}}, "pool.spawn_rate: must be greater than 0"),
    ({"logs": {"max_rows": 10}}, "logs.max_rows: must be at least 1000"),
    ({"channels": {"number": 1}}, "channels: expected an array of tables ([[channels]]), got a"),
    ({"channels": [1]}, "channels[0]: expected a table, got int"),
    ({"channels": [{"name": "x"}]}, "channels[0].number: missing"),
    ({"channels": [{"number": 1}]}, "channels[0].name: missing"),
    ({"channels": [{"number": 1, "name": " "}]}, "channels[0].name: must not be empty"),
    ({"channels": [{"number": 0, "name": "x"}]}, "channels[0].number: must be between 1 and 99999"),
    ({"channels": [{"number": "1", "name": "x"}]}, "channels[0].number: expected an integer, got"),
    ({"channels": [{"number": True, "name": "x"}]}, "channels[0].number: expected an integer, got"),
    ({"channels": [{"number": 1, "name": "x", "nmae": 1}]}, "channels[0].nmae: unknown key"),
    ({"channels": [{"number": 1, "name": "x", "mode": "live"}]}, "channels[0].mode: must be one"),
    ({"channels": [{"number": 1, "name": "x", "idle_grace": -1}]}, "channels[0].idle_grace: must"),
    (
        {"channels": [{"number": 1, "name": "x", "idle_grace": 10**400}]},
        "channels[0].idle_grace: must be a finite number",
    ),
    ({"channels": [{"number": 1, "name": "x", "shuffle": 1}]}, "channels[0].shuffle: expected a"),
    ({"channels": [{"number": 1, "name": "x", "seed": 1.5}]}, "channels[0].seed: expected an"),
    ({"channels": [{"number": 1, "name": "x", "logo": 3}]}, "channels[0].logo: expected a string"),
    ({"channels": [{"number": 1, "name": "x", "media": 3}]}, "channels[0].media: expected a path"),
    ({"channels": [{"number": 1, "name": "x", "media": [""]}]}, "channels[0].media[0]: expected"),
    (
        {"channels": [{"number": 1, "name": "x", "media": ["x"]}]},
        "channels[0].media[0]: no such directory 'x'",
    ),
    (
        {"channels": [{"number": 1, "name": "x", "media": ["gone.mp4"]}]},
        "channels[0].media[0]: no such file 'gone.mp4'",
    ),
    (
        {"channels": [{"number": 1, "name": "x", "media": ["~no-such-user-here/tv"]}]},
        "channels[0].media[0]: invalid path: ",
    ),
    (
        {"channels": [{"number": 1, "name": "x", "media": ["a" * 5000]}]},
        "channels[0].media[0]: invalid path: File name too long",
    ),
    (
        {"channels": [{"number": 1, "name": "x"}, {"number": 1, "name": "y"}]},
        "channels[1].number: duplicate channel number 1 (also channels[0])",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_each_bad_value_is_reported_with_its_key_path(
    tmp_path: Path, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, tmp_path / "channels.toml", {})
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(message), caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
unknown = 1
[server]
port = "eighty"
[health]
stall_timeout = -3
[[channels]]
number = 1
name = "One"
media = ["missing-dir", "also-missing.mp4"]
[[channels]]
number = 1
name = "Dup"
[[channels]]
number = 2
name = "Bad mode"
mode = "sometimes"
"""
    path = write(tmp_path, text)
    problems = problems_of(path, {"EXSTREAM_PORT": "x"})
    assert problems == [
        "unknown: unknown section (known: server, ffmpeg, playout, stream, health, pool, logs,"
        " guide, hdhomerun, cluster, hls, channels)",
        "server.port: expected an integer, got a string",
        "health.stall_timeout: must be greater than 0",
        "EXSTREAM_PORT: expected an integer, got 'x'",
        "channels[0].media[0]: no such directory 'missing-dir'",
        "channels[0].media[1]: no such file 'also-missing.mp4'",
        "channels[1].number: duplicate channel number 1 (also channels[0])",
        "channels[2].mode: must be one of on_demand, always_on",
    ]


def test_duplicate_numbers_name_the_first_channel(tmp_path: Path) -> None:
    data = {
        "channels": [
            {"number": 4, "name": "a"},
            {"number": 5, "name": "b"},
            {"number": 4, "name": "c"},
        ]
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, tmp_path / "c.toml", {})
    assert caught.value.problems == [
        "channels[2].number: duplicate channel number 4 (also channels[0])"
    ]


def test_config_error_text_lists_every_problem() -> None:
    error = ConfigError("c.toml", ["a: one", "b: two"])
    assert str(error) == "c.toml: 2 problem(s)\n  a: one\n  b: two"
    assert error.code == "invalid_config"


# --- fuzzing -----------------------------------------------------------------------------

SECTION_KEYS = {
    name: [f.name for f in dataclasses.fields(cls)]
    for name, cls in {
        "server": type(Settings(path=Path()).server),
        "ffmpeg": type(Settings(path=Path()).ffmpeg),
        "playout": PlayoutSettings,
        "stream": type(Settings(path=Path()).stream),
        "health": HealthSettings,
        "pool": type(Settings(path=Path()).pool),
        "logs": type(Settings(path=Path()).logs),
    }.items()
}
CHANNEL_KEYS = [f.name for f in dataclasses.fields(ChannelConfig)]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["", "~nobody-xyz/a", "media", "*.mp4", "a\0b", "x" * 300, "[", "on_demand"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def toml_like(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section, keys in SECTION_KEYS.items():
        if draw(st.booleans()):
            names = st.sampled_from([*keys, "bogus"])
            data[section] = draw(st.dictionaries(names, values, max_size=4) | values)
    if draw(st.booleans()):
        channel = st.dictionaries(st.sampled_from([*CHANNEL_KEYS, "bogus"]), values, max_size=6)
        data["channels"] = draw(st.lists(channel | values, max_size=3) | values)
    if draw(st.booleans()):
        data[draw(st.text(max_size=5))] = draw(values)
    return data


ENV_NAMES = ("HOST", "PORT", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT", "PUBLIC_URL", "API_TOKEN")
environs = st.dictionaries(
    st.sampled_from([f"EXSTREAM_{name}" for name in ENV_NAMES]),
    st.text(max_size=8) | st.sampled_from(["80", "99999", "\0", "x" * 5000]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=toml_like(), environ=environs)
def test_arbitrary_input_raises_nothing_but_config_error(
    data: dict[str, Any], environ: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.getbasetemp() / "fuzz"
    base.mkdir(exist_ok=True)
    (base / "media").mkdir(exist_ok=True)
    try:
        result = parse_settings(data, base / "channels.toml", environ)
    except ConfigError as exc:
        assert exc.problems
        assert all(": " in p for p in exc.problems)
    else:
        assert isinstance(result, Settings)
        assert all(isinstance(c, ChannelConfig) for c in result.channels)
