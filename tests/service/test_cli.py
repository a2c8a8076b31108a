from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.network import free_port
from tests.harness.server import run_cli

Clips = Callable[[int, float], list[Path]]
ENV_VARS = (
    "EXSTREAM_HOST", "EXSTREAM_PORT", "EXSTREAM_DATA_DIR", "EXSTREAM_PUBLIC_URL",
    "EXSTREAM_LOG_LEVEL", "EXSTREAM_LOG_FORMAT", "EXSTREAM_API_TOKEN", "EXSTREAM_CONFIG",
)  # fmt: skip


@pytest.fixture
def good_config(tmp_path: Path, clips: Clips) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    for clip in clips(2, 1.5):
        shutil.copy(clip, media / clip.name)
    config = tmp_path / "channels.toml"
    config.write_text(
        '[[channels]]\nnumber = 1\nname = "One"\nmedia = ["media"]\n'
        '[[channels]]\nnumber = 2\nname = "Two"\nmedia = "media/*.mp4"\nmode = "always_on"\n'
    )
    return config


@pytest.mark.parametrize("command", [[], ["serve"], ["check"]])
def test_help_explains_commands_and_environment(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    for name in ENV_VARS:
        assert name in result.stdout, name
    assert "OTEL_" in result.stdout
    if not command:
        for sub in ("serve", "check", "demo"):
            assert f"exstream {sub}" in result.stdout
    else:
        assert "exit status 2" in result.stdout
        assert "<file>: <key path>: <message>" in result.stdout


def test_check_good_config(good_config: Path) -> None:
    result = run_cli("check", str(good_config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{good_config}: ok, 2 channel(s)\n"
    assert result.stderr == ""


def test_check_reads_exstream_config(good_config: Path) -> None:
    result = run_cli("check", env={"EXSTREAM_CONFIG": str(good_config)})
    assert result.returncode == 0, result.stderr
    assert "ok, 2 channel(s)" in result.stdout


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        "[server]\nport = 99999\nprot = 1\n"
        '[[channels]]\nnumber = 1\nname = "a"\nmedia = ["x"]\n'
        '[[channels]]\nnumber = 1\nname = "b"\nmode = 3\n'
    )
    result = run_cli("check", str(config), env={"EXSTREAM_PORT": "abc"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{config}: server.port: must be a port number (0-65535)",
        f"{config}: server.prot: unknown key (known: access_log, data_dir, graceful_shutdown,"
        " header_timeout, host, log_format, log_level, max_connections, max_header_bytes,"
        " max_log_tails, port, public_url, trusted_proxies)",
        f"{config}: EXSTREAM_PORT: expected an integer, got 'abc'",
        f"{config}: channels[0].media[0]: no such directory 'x'",
        f"{config}: channels[1].mode: expected a string, got int",
        f"{config}: channels[1].number: duplicate channel number 1 (also channels[0])",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\n", "invalid TOML: "),
        ("[server]\nport = true\n", "server.port: expected an integer, got a boolean"),
        ("[health]\nstall_timeout = -1\n", "health.stall_timeout: must be greater than 0"),
    ],
)
def test_check_bad_input_is_one_line_no_traceback(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = run_cli("check", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{config}: {message}")


def test_check_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr == f"{tmp_path / 'nope.toml'}: no such file\n"


def test_check_warns_about_corrupt_media_and_empty_channels(tmp_path: Path, clips: Clips) -> None:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(clips(1, 1.5)[0], media / "good.mp4")
    (media / "corrupt.mp4").write_bytes(random.Random(3).randbytes(4096))
    (tmp_path / "empty").mkdir()
    config = tmp_path / "channels.toml"
    config.write_text(
        '[[channels]]\nnumber = 1\nname = "a"\nmedia = ["media"]\n'
        '[[channels]]\nnumber = 2\nname = "b"\nmedia = ["empty", "later/*.mp4"]\n'
    )
    result = run_cli("check", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{config}: warning: channels[1].media[1]: pattern 'later/*.mp4' matches nothing yet"
    )
    assert lines[1].startswith(
        f"{config}: warning: channels[0].media: skipping {media / 'corrupt.mp4'} (unreadable: "
    )
    assert lines[2] == (
        f"{config}: warning: channels[1]: no playable media, the channel will show the"
        " offline slate"
    )
    assert len(lines) == 3
    assert result.stdout == f"{config}: ok, 2 channel(s)\n"
    # --no-scan validates without probing.
    quick = run_cli("check", "--no-scan", str(config))
    assert quick.returncode == 0
    assert "skipping" not in quick.stderr


def test_serve_with_bad_config_exits_2_without_listening(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[server]\nport = {port}\n[[channels]]\nnumber = 1\nname = "a"\nmedia = ["missing"]\n'
    )
    result = run_cli("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"{config}: channels[0].media[0]: no such directory 'missing'\n"
    assert result.stdout == ""
    # Nothing was bound: the port is still free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_demo_writes_media_and_a_config_that_checks(tmp_path: Path) -> None:
    result = run_cli("demo", str(tmp_path / "demo"), "--port", "8999", timeout=300)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "demo" / "channels.toml"
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {config}"
    assert "http://127.0.0.1:8999/iptv/channels.m3u" in lines[1]
    assert lines[-1].endswith("http://127.0.0.1:8999/stream/3.ts")
    checked = run_cli("check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{config}: ok, 3 channel(s)\n"
    # The third demo channel is the offline slate on purpose.
    assert checked.stderr.splitlines() == [
        f"{config}: warning: channels[2]: no playable media, the channel will show the"
        " offline slate"
    ]
    assert "port = 8999" in config.read_text()


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "channels.toml"
        config.write_text(f'[server]\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n')
        result = run_cli("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"exstream: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing started


def test_demo_keeps_an_edited_config_unless_forced(tmp_path: Path) -> None:
    from service.demo import DEMO_CLIPS, write_demo

    for name, _, _ in DEMO_CLIPS:  # existing clips are not made again
        for sub in ("one", "two"):
            (tmp_path / "media" / sub).mkdir(parents=True, exist_ok=True)
            (tmp_path / "media" / sub / f"{name}.mp4").touch()
    config, written = write_demo(tmp_path)
    assert written
    assert write_demo(tmp_path) == (config, True)  # unchanged: same text again
    config.write_text(config.read_text() + "# mine\n")
    assert write_demo(tmp_path, port=9000) == (config, False)
    assert config.read_text().endswith("# mine\n")
    assert write_demo(tmp_path, port=9000, force=True) == (config, True)
    assert "port = 9000" in config.read_text() and "# mine" not in config.read_text()


@pytest.mark.parametrize(
    ("host", "base"),
    [("0.0.0.0", "http://127.0.0.1:8410"), ("::", "http://127.0.0.1:8410"),
     ("192.0.2.7", "http://192.0.2.7:8410"), ("::1", "http://[::1]:8410")],
)  # fmt: skip
def test_printed_urls_are_ones_a_client_can_open(host: str, base: str) -> None:
    from dataclasses import replace

    from service.__main__ import playable_urls
    from service.config import ServerSettings, Settings

    settings = Settings(path=Path("channels.toml"), server=replace(ServerSettings(), host=host))
    text = playable_urls(settings)
    assert f"{base}/iptv/channels.m3u" in text
    assert "0.0.0.0" not in text.replace("(0.0.0.0)", "")
    assert ("all interfaces" in text) == (host in ("0.0.0.0", "::"))


@pytest.mark.parametrize(
    ("ffmpeg", "expected"),
    [
        ({"ffmpeg": "/nonexistent/ffmpeg"},
         "ffmpeg.ffmpeg: cannot run '/nonexistent/ffmpeg': No such file or directory"),
        ({"ffmpeg": "/bin/false"}, "ffmpeg.ffmpeg: '/bin/false' is not a working ffmpeg (exit 1"),
        ({"ffprobe": "/bin/true"}, "ffmpeg.ffprobe: '/bin/true' is not a working ffprobe (exit 0"),
        ({"preset": "ludicrous"}, "ffmpeg.preset: libx264 has no preset 'ludicrous' (exit 1"),
    ],
)  # fmt: skip
def test_check_tries_the_configured_tools_and_names_the_key(
    tmp_path: Path, ffmpeg: dict[str, str], expected: str
) -> None:
    config = tmp_path / "channels.toml"
    lines = [f'{key} = "{value}"' for key, value in ffmpeg.items()]
    config.write_text("[ffmpeg]\n" + "\n".join(lines) + "\n")
    result = run_cli("check", "--no-scan", str(config), timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{config}: {expected}"), line
    assert result.stdout == ""
